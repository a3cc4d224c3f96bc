//! Bounded decoding of client images into upright 8-bit RGB.
//!
//! JPEG goes through libjpeg ([`crate::jpeg`]) to match Pillow's pixels exactly; the other
//! formats go through the `image` crate.
//!
//! Every colour type becomes RGB8: grayscale is replicated, 16-bit samples are
//! rounded (`v / 257` to nearest), and transparency is composited onto white.
//! The EXIF orientation is applied wherever the decoder reports one (JPEG,
//! PNG `eXIf`, WebP). GIF decodes to its first frame.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Cursor;
use std::time::Duration;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::{ImageError, ImageFormat};

/// Bounds on one decode. The size bounds are checked before any pixel buffer is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum width in pixels, after any EXIF rotation (default 16384).
    pub max_width: u32,
    /// Maximum height in pixels (default 16384).
    pub max_height: u32,
    /// Maximum width x height (default 40 000 000, about 120 MB as RGB8).
    pub max_pixels: u64,
    /// Maximum size of the encoded input in bytes (default 32 MiB).
    pub max_input_bytes: usize,
    /// Maximum bytes the decode may hold at once: the decoder's own buffers, its output in the
    /// native colour type and the RGB8 copy (default 512 MiB).
    pub max_decode_alloc: u64,
    /// Maximum CPU time of one decode, or `None` for no limit (default 5 s). CPU time of the
    /// decoding thread, not wall-clock time, so that a busy machine does not fail valid images.
    pub max_decode_time: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_width: 16_384,
            max_height: 16_384,
            max_pixels: 40_000_000,
            max_input_bytes: 32 * 1024 * 1024,
            max_decode_alloc: 512 * 1024 * 1024,
            max_decode_time: Some(Duration::from_secs(5)),
        }
    }
}

// === impl Limits ===

impl Limits {
    /// Rejects dimensions over the width, height or pixel limit, and empty images.
    ///
    /// The check is symmetric in width and height when the maxima are equal, so an EXIF
    /// rotation cannot turn an accepted image into a rejected one.
    pub fn check_dimensions(
        &self,
        format: ImageFormat,
        width: u32,
        height: u32,
    ) -> Result<(), ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Invalid {
                format,
                reason: format!("the image is {width}x{height} pixels"),
            });
        }
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_width || height > self.max_height || pixels > self.max_pixels {
            return Err(ImageError::TooLarge {
                width,
                height,
                max_width: self.max_width,
                max_height: self.max_height,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }

    /// Starts the clock of [`Self::max_decode_time`] for one decode of `format`.
    pub(crate) fn decode_clock(&self, format: ImageFormat) -> DecodeClock {
        DecodeClock {
            format,
            started: thread_cpu_time(),
            limit: self.max_decode_time,
            checks: Cell::new(0),
        }
    }

    /// The `image` crate limits for a decoder whose dimensions have passed [`Self::check_dimensions`].
    fn decoder_limits(&self, dimensions: Option<(u32, u32)>) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.max_decode_alloc);
        if let Some((width, height)) = dimensions {
            limits.max_image_width = Some(width);
            limits.max_image_height = Some(height);
        }
        limits
    }
}

/// Decodes `bytes` into an upright RGB8 image, rejecting it early when it exceeds `limits`.
///
/// The format comes from the magic bytes ([`crate::detect_format`]). The declared dimensions
/// are checked against `limits` after reading only the header, and the decoder receives an
/// allocation limit, so an oversized image returns [`ImageError::TooLarge`] or
/// [`ImageError::AllocationTooLarge`] instead of allocating.
///
/// A decode that takes more CPU time than `limits.max_decode_time` returns
/// [`ImageError::DecodeTimeout`]. JPEG output is checked against the clock every few rows, so
/// it stops shortly after the limit.
//
// NOTE: the other formats are decoded by one call of the `image` crate, which cannot be
// interrupted, so they are checked only when that call returns. Their decode time grows
// about linearly with the pixel count, which `max_pixels` caps. A progressive JPEG reads
// every scan before the first output row, and the number of scans is bounded only by the
// input size, so that phase is checked only at its end. Interrupting it would need
// libjpeg's progress monitor hook, which the `mozjpeg` crate does not expose.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_input_bytes {
        return Err(ImageError::InputTooLarge {
            len: bytes.len(),
            max: limits.max_input_bytes,
        });
    }

    let format = crate::detect_format(bytes).ok_or_else(|| ImageError::UnknownFormat {
        prefix: hex_prefix(bytes),
    })?;
    let decoder_format = format
        .decoder_format()
        .ok_or(ImageError::UnsupportedFormat { format })?;
    if format == ImageFormat::Jpeg {
        check_jpeg_end(bytes)?;
        let clock = limits.decode_clock(format);
        let decoded = crate::jpeg::decode_jpeg(bytes, limits, &clock)?;
        clock.check()?;
        let mut upright = DynamicImage::ImageRgb8(decoded.image);
        upright.apply_orientation(decoded.orientation);
        return Ok(upright.into_rgb8());
    }

    // Read the header with only the allocation limit set, so that oversized dimensions reach
    // our own check and its message.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), decoder_format);
    reader.limits(limits.decoder_limits(None));
    let to_error = |dimensions, error| {
        ImageError::from_decoder(format, dimensions, limits.max_decode_alloc, error)
    };
    let mut decoder = reader
        .into_decoder()
        .map_err(|error| to_error((0, 0), error))?;
    let dimensions = decoder.dimensions();
    let (width, height) = dimensions;
    limits.check_dimensions(format, width, height)?;

    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let peak = peak_decode_bytes(
        decoder.total_bytes(),
        decoder.color_type(),
        width,
        height,
        orientation,
    );
    if peak > limits.max_decode_alloc {
        return Err(ImageError::AllocationTooLarge {
            format,
            width,
            height,
            max_alloc: limits.max_decode_alloc,
        });
    }
    decoder
        .set_limits(limits.decoder_limits(Some(dimensions)))
        .map_err(|error| to_error(dimensions, error))?;

    let clock = limits.decode_clock(format);
    let decoded =
        DynamicImage::from_decoder(decoder).map_err(|error| to_error(dimensions, error))?;
    clock.check()?;
    let mut upright = DynamicImage::ImageRgb8(to_rgb8_on_white(decoded));
    upright.apply_orientation(orientation);
    Ok(upright.into_rgb8())
}

/// The CPU time spent on one decode, against [`Limits::max_decode_time`].
///
/// The decode must run on the thread that created the clock.
pub(crate) struct DecodeClock {
    format: ImageFormat,
    /// CPU time of the thread when the decode started.
    started: Duration,
    limit: Option<Duration>,
    /// Checks made so far, for tests of where the decoders check.
    checks: Cell<u32>,
}

// === impl DecodeClock ===

impl DecodeClock {
    /// Fails with [`ImageError::DecodeTimeout`] once the decode has used more CPU time than the
    /// limit.
    pub(crate) fn check(&self) -> Result<(), ImageError> {
        self.checks.set(self.checks.get() + 1);
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if thread_cpu_time().saturating_sub(self.started) > limit {
            return Err(ImageError::DecodeTimeout {
                format: self.format,
                limit_ms: limit.as_millis(),
            });
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn checks(&self) -> u32 {
        self.checks.get()
    }
}

/// Returns the CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        // A clock that cannot be read reads as zero, which turns the time limit off.
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Estimates the most bytes [`decode`] holds at once, excluding the decoder's internal state.
///
/// The native buffer and the RGB8 copy coexist during conversion; a 90 or 270 degree EXIF
/// rotation then holds two RGB8 images.
fn peak_decode_bytes(
    native_bytes: u64,
    color_type: image::ColorType,
    width: u32,
    height: u32,
    orientation: Orientation,
) -> u64 {
    let rgb_bytes = 3 * u64::from(width) * u64::from(height);
    let conversion = match color_type {
        image::ColorType::Rgb8 => native_bytes,
        _ => native_bytes.saturating_add(rgb_bytes),
    };
    conversion.max(rotation_bytes(orientation, rgb_bytes))
}

/// Bytes an EXIF rotation holds: a 90 or 270 degree rotation copies the RGB8 image, which
/// is `rgb_bytes` long.
pub(crate) fn rotation_bytes(orientation: Orientation, rgb_bytes: u64) -> u64 {
    match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => 2 * rgb_bytes,
        _ => 0,
    }
}

/// Rejects a JPEG whose data ends before its end-of-image marker (`FF D9`).
///
/// libjpeg, when the data runs out, inserts an end-of-image marker and only emits a
/// warning, which the `mozjpeg` crate discards. Without this check a truncated upload would
/// decode with its missing rows filled in and be classified.
/// The marker segments before the first scan are walked by their lengths, so an `FF D9`
/// inside an EXIF thumbnail does not count.
///
// NOTE: Pillow 13 with default settings also rejects a JPEG cut short ("image file is
// truncated") but loads one that lacks only the final EOI marker, which is rejected here.
fn check_jpeg_end(bytes: &[u8]) -> Result<(), ImageError> {
    let truncated = || ImageError::Invalid {
        format: ImageFormat::Jpeg,
        reason: "the data ends before the end-of-image marker (truncated)".to_owned(),
    };

    // Skip SOI, then walk segments: FF, marker, 2-byte big-endian length including itself.
    let mut at = 2;
    loop {
        let Some(&prefix) = bytes.get(at) else {
            return Err(truncated());
        };
        if prefix != 0xFF {
            // Not a marker: leave the diagnosis to the decoder.
            return Ok(());
        }
        let Some(&marker) = bytes.get(at + 1) else {
            return Err(truncated());
        };
        match marker {
            0xFF => at += 1,
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let Some(length) = bytes.get(at + 2..at + 4) else {
                    return Err(truncated());
                };
                let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
                let payload_end = at + 2 + length;
                if marker == 0xDA {
                    let scan = bytes.get(payload_end..).ok_or_else(truncated)?;
                    let ended = scan.windows(2).rev().any(|pair| pair == [0xFF, 0xD9]);
                    return if ended { Ok(()) } else { Err(truncated()) };
                }
                at = payload_end;
            }
        }
    }
}

/// Converts any colour type to RGB8, compositing transparent pixels onto white.
///
/// 16-bit samples are rounded to 8 bits (`(v + 128) / 257`); with alpha, the blend is done
/// at the source bit depth and rounded once.
///
// NOTE: Pillow 13's `convert("RGB")` drops alpha instead, keeping the colour under
// transparent pixels, and it truncates 16-bit PNG samples to the high byte. The evaluation
// images are opaque 8-bit JPEGs, so neither rule affects the measured accuracy.
fn to_rgb8_on_white(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(gray) => {
            map_pixels(width, height, gray.as_raw(), 1, |p| [p[0]; 3])
        }
        DynamicImage::ImageLumaA8(gray) => {
            map_pixels(width, height, gray.as_raw(), 2, |p| [blend8(p[0], p[1]); 3])
        }
        DynamicImage::ImageRgba8(rgba) => map_pixels(width, height, rgba.as_raw(), 4, |p| {
            [blend8(p[0], p[3]), blend8(p[1], p[3]), blend8(p[2], p[3])]
        }),
        DynamicImage::ImageLuma16(gray) => {
            map_pixels(width, height, gray.as_raw(), 1, |p| [to_u8(p[0]); 3])
        }
        DynamicImage::ImageLumaA16(gray) => map_pixels(width, height, gray.as_raw(), 2, |p| {
            [to_u8(blend16(p[0], p[1])); 3]
        }),
        DynamicImage::ImageRgb16(rgb) => map_pixels(width, height, rgb.as_raw(), 3, |p| {
            [to_u8(p[0]), to_u8(p[1]), to_u8(p[2])]
        }),
        DynamicImage::ImageRgba16(rgba) => map_pixels(width, height, rgba.as_raw(), 4, |p| {
            [
                to_u8(blend16(p[0], p[3])),
                to_u8(blend16(p[1], p[3])),
                to_u8(blend16(p[2], p[3])),
            ]
        }),
        // Float images come only from HDR formats, which are not decoded; convert them
        // through RGBA16 in case a future decoder produces one.
        other => to_rgb8_on_white(DynamicImage::ImageRgba16(other.to_rgba16())),
    }
}

fn map_pixels<S: Copy>(
    width: u32,
    height: u32,
    samples: &[S],
    channels: usize,
    convert: impl Fn(&[S]) -> [u8; 3],
) -> RgbImage {
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for pixel in samples.chunks_exact(channels) {
        rgb.extend_from_slice(&convert(pixel));
    }
    RgbImage::from_raw(width, height, rgb).expect("one RGB triple per source pixel")
}

/// Blends an 8-bit sample onto white with an 8-bit alpha, rounded to nearest.
fn blend8(value: u8, alpha: u8) -> u8 {
    let (value, alpha) = (u32::from(value), u32::from(alpha));
    ((value * alpha + 255 * (255 - alpha) + 127) / 255) as u8
}

/// Blends a 16-bit sample onto white with a 16-bit alpha, rounded to nearest.
fn blend16(value: u16, alpha: u16) -> u16 {
    let (value, alpha) = (u64::from(value), u64::from(alpha));
    ((value * alpha + 65_535 * (65_535 - alpha) + 32_767) / 65_535) as u16
}

/// Rounds a 16-bit sample to 8 bits: `v / 257` to nearest.
fn to_u8(value: u16) -> u8 {
    ((u32::from(value) + 128) / 257) as u8
}

/// Up to the first 8 bytes as lowercase hex, for the unknown-format message.
fn hex_prefix(bytes: &[u8]) -> String {
    let mut prefix = String::new();
    for byte in bytes.iter().take(8) {
        let _ = write!(prefix, "{byte:02x}");
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_u8_rounds() {
        assert_eq!(to_u8(0), 0);
        assert_eq!(to_u8(128), 0);
        assert_eq!(to_u8(129), 1);
        assert_eq!(to_u8(257), 1);
        assert_eq!(to_u8(65_535), 255);
        for v in 0..=255u16 {
            assert_eq!(to_u8(v * 257), v as u8);
        }
    }

    #[test]
    fn blend_extremes() {
        assert_eq!(blend8(0, 0), 255);
        assert_eq!(blend8(37, 255), 37);
        assert_eq!(blend8(0, 128), 127);
        assert_eq!(blend16(0, 0), 65_535);
        assert_eq!(blend16(1234, 65_535), 1234);
    }

    #[test]
    fn blend16_matches_blend8() {
        for value in (0..=255u16).step_by(5) {
            for alpha in (0..=255u16).step_by(3) {
                let wide = to_u8(blend16(value * 257, alpha * 257));
                let narrow = blend8(value as u8, alpha as u8);
                assert_eq!(wide, narrow, "value {value} alpha {alpha}");
            }
        }
    }

    #[test]
    fn jpeg_end_walks_segments() {
        // SOI, APP1 whose payload contains FF D9, SOS, scan data without EOI.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02, 0x12, 0x34]);
        assert!(check_jpeg_end(&jpeg).is_err());

        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        assert!(check_jpeg_end(&jpeg).is_ok());
    }

    #[test]
    fn jpeg_end_missing_scan() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A];
        assert!(check_jpeg_end(&jpeg).is_err());
    }
}
