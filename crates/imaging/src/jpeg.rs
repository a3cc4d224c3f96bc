//! JPEG decoding with libjpeg-turbo's algorithms, matching Pillow 13 bit for bit.
//!
//! Pillow decodes JPEG with libjpeg-turbo: the ISLOW integer IDCT, fancy (triangular)
//! chroma upsampling and libjpeg's fixed-point YCbCr to RGB conversion. The `mozjpeg` crate
//! builds mozjpeg, a libjpeg-turbo fork with the same decoder, from vendored C sources.
//! Other decoders round differently: zune-jpeg differed by a mean of 0.033 and up to 4
//! levels, enough to change the top-1 class of INT8 models on about 1.5% of photos.
//!
//! libjpeg reports fatal errors through `error_exit`, which the crate turns into a Rust
//! unwind; [`decode_jpeg`] catches it so corrupt data becomes [`ImageError::Invalid`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::RgbImage;
use image::metadata::Orientation;
use mozjpeg::{ColorSpace, DctMethod, Decompress, Marker};

use crate::{ImageError, ImageFormat, Limits, decode::DecodeClock};

/// Prefix of an APP1 segment that contains EXIF data, before the TIFF header.
const EXIF_PREFIX: &[u8] = b"Exif\0\0";

/// Prefix of the APP14 segment that Adobe applications write; CMYK data is then inverted.
const ADOBE_PREFIX: &[u8] = b"Adobe";

/// Output rows decoded between two checks of the decode clock: an estimated few milliseconds
/// of work for the widest image the default limits allow.
const ROWS_PER_CLOCK_CHECK: usize = 16;

/// A decoded JPEG in RGB8 with the EXIF orientation not yet applied.
pub(crate) struct DecodedJpeg {
    pub image: RgbImage,
    pub orientation: Orientation,
}

/// Decodes `bytes` (a JPEG by its magic bytes) with the settings Pillow 13 uses.
///
/// The header is read first and its dimensions checked against `limits` before any pixel
/// buffer exists. Grayscale is replicated to RGB by libjpeg. CMYK and YCCK are decoded to
/// CMYK and converted as Pillow's `convert("RGB")` does.
///
/// `clock` is checked once the input is absorbed (all scans of a progressive JPEG) and then
/// every [`ROWS_PER_CLOCK_CHECK`] output rows.
pub(crate) fn decode_jpeg(
    bytes: &[u8],
    limits: &Limits,
    clock: &DecodeClock,
) -> Result<DecodedJpeg, ImageError> {
    // The closure owns every libjpeg object, so an unwind out of libjpeg drops them all
    // (the crate's `Drop` calls `jpeg_destroy_decompress`) and leaves nothing half-built.
    let outcome = catch_unwind(AssertUnwindSafe(|| decode_unwinding(bytes, limits, clock)));
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("libjpeg failed");
            Err(invalid(message.trim_start_matches("libjpeg fatal error: ")))
        }
    }
}

fn decode_unwinding(
    bytes: &[u8],
    limits: &Limits,
    clock: &DecodeClock,
) -> Result<DecodedJpeg, ImageError> {
    let markers = [Marker::APP(1), Marker::APP(14)];
    let mut decompress = Decompress::with_markers(&markers)
        .from_mem(bytes)
        .map_err(|error| invalid(&error.to_string()))?;

    let (width, height) = decompress.size();
    let width = u32::try_from(width).unwrap_or(u32::MAX);
    let height = u32::try_from(height).unwrap_or(u32::MAX);
    limits.check_dimensions(ImageFormat::Jpeg, width, height)?;

    let mut orientation = Orientation::NoTransforms;
    let mut adobe = false;
    for marker in decompress.markers() {
        match marker.marker {
            Marker::APP(1) if orientation == Orientation::NoTransforms => {
                if let Some(tiff) = marker.data.strip_prefix(EXIF_PREFIX) {
                    orientation =
                        Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
                }
            }
            Marker::APP(14) => adobe |= marker.data.starts_with(ADOBE_PREFIX),
            _ => {}
        }
    }

    let cmyk = matches!(
        decompress.color_space(),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
    );
    let peak = peak_jpeg_bytes(
        width,
        height,
        decompress.components().len(),
        cmyk,
        orientation,
    );
    if peak > limits.max_decode_alloc {
        return Err(ImageError::AllocationTooLarge {
            format: ImageFormat::Jpeg,
            width,
            height,
            max_alloc: limits.max_decode_alloc,
        });
    }

    // libjpeg's defaults already are ISLOW and fancy upsampling; set them so that a
    // change of default cannot silently break the match with Pillow.
    decompress.dct_method(DctMethod::IntegerSlow);
    decompress.do_fancy_upsampling(true);
    let out_space = if cmyk {
        ColorSpace::JCS_CMYK
    } else {
        ColorSpace::JCS_RGB
    };
    let mut started = decompress
        .to_colorspace(out_space)
        .map_err(|error| invalid(&error.to_string()))?;
    // A progressive JPEG has read all its scans by now.
    clock.check()?;

    let row_len = width as usize * if cmyk { 4 } else { 3 };
    let mut samples = Vec::new();
    samples
        .try_reserve_exact(row_len * height as usize)
        .map_err(|_| invalid("out of memory for the decoded rows"))?;
    samples.resize(row_len * height as usize, 0);
    for rows in samples.chunks_mut(row_len * ROWS_PER_CLOCK_CHECK) {
        started
            .read_scanlines_into(rows)
            .map_err(|error| invalid(&error.to_string()))?;
        clock.check()?;
    }
    started
        .finish()
        .map_err(|error| invalid(&error.to_string()))?;

    let rgb = if cmyk {
        cmyk_to_rgb(&samples, adobe)
    } else {
        samples
    };
    let image = RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| invalid("the decoded rows do not match the header's dimensions"))?;
    Ok(DecodedJpeg { image, orientation })
}

/// Estimates the most bytes a JPEG decode holds at once.
///
/// A progressive JPEG keeps every DCT coefficient (2 bytes per sample and component) until
/// the last scan, and the output coexists with it. CMYK output is converted into a second
/// buffer, and a 90 or 270 degree EXIF rotation then holds two RGB8 images. Whether the
/// file is progressive is not known before decoding starts, so the estimate assumes it.
fn peak_jpeg_bytes(
    width: u32,
    height: u32,
    components: usize,
    cmyk: bool,
    orientation: Orientation,
) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let rgb_bytes = 3 * pixels;
    let coefficients = 2 * pixels * components as u64;
    let output = if cmyk {
        4 * pixels + rgb_bytes
    } else {
        rgb_bytes
    };
    (coefficients + output).max(crate::decode::rotation_bytes(orientation, rgb_bytes))
}

/// Converts libjpeg's CMYK output to RGB as Pillow 13 does.
///
/// Pillow stores Adobe CMYK JPEGs (which are written inverted) as `CMYK;I`, so it inverts
/// the samples back, then `convert("RGB")` computes `nk - nk * c / 255` per channel with
/// `nk = 255 - k` (`cmyk2rgb` in `src/libImaging/Convert.c`, rounded by `MULDIV255`).
fn cmyk_to_rgb(samples: &[u8], adobe: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(samples.len() / 4 * 3);
    for pixel in samples.chunks_exact(4) {
        let [c, m, y, k] = if adobe {
            [!pixel[0], !pixel[1], !pixel[2], !pixel[3]]
        } else {
            [pixel[0], pixel[1], pixel[2], pixel[3]]
        };
        let not_k = 255 - i32::from(k);
        for value in [c, m, y] {
            rgb.push((not_k - muldiv255(i32::from(value), not_k)).clamp(0, 255) as u8);
        }
    }
    rgb
}

/// Pillow's `MULDIV255`: `a * b / 255`, rounded to nearest with integer shifts.
fn muldiv255(a: i32, b: i32) -> i32 {
    let product = a * b + 128;
    ((product >> 8) + product) >> 8
}

fn invalid(reason: &str) -> ImageError {
    ImageError::Invalid {
        format: ImageFormat::Jpeg,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_checked_every_row_chunk() {
        let bytes = include_bytes!("../tests/fixtures/corpus/baseline.jpg");
        let limits = Limits {
            max_decode_time: None,
            ..Limits::default()
        };
        let clock = limits.decode_clock(ImageFormat::Jpeg);

        let decoded = decode_jpeg(bytes, &limits, &clock).unwrap();

        // Once after absorbing the input, then once per 16 of the 48 rows.
        assert_eq!(decoded.image.height(), 48);
        assert_eq!(clock.checks(), 1 + 48 / ROWS_PER_CLOCK_CHECK as u32);
    }

    #[test]
    fn muldiv255_rounds() {
        for a in 0..=255 {
            for b in (0..=255).step_by(17) {
                let exact = (f64::from(a * b) / 255.0).round() as i32;
                assert_eq!(muldiv255(a, b), exact, "{a} * {b} / 255");
            }
        }
    }

    #[test]
    fn cmyk_adobe_inverted() {
        // Inverted Adobe data: 255 means no ink, so white stays white.
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255], true), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), [0, 0, 0]);
    }
}
