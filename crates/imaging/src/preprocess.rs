//! The evaluation preprocessing of EfficientNet-Lite: centre crop, bicubic resize, normalise.
//!
//! This reproduces the Python pipeline that measured the models:
//!
//! ```python
//! crop = int(res / (res + crop_padding) * min(w, h))
//! top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
//! image.crop((left, top, left + crop, top + crop)).resize((res, res), Image.BICUBIC)
//! (x - mean) / std   # float32, CHW
//! ```
//!
//! The resize reproduces Pillow's BICUBIC convolution exactly, fixed-point rounding included
//! (a = -0.5, support widened by the scale factor when downsampling).

use image::RgbImage;

use crate::{ImageError, resample};

/// The input geometry and normalisation of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessSpec {
    /// Side of the square model input in pixels.
    pub resolution: u32,
    /// Padding that shrinks the centre crop to `resolution / (resolution + crop_padding)` of
    /// the shorter side (32 for EfficientNet).
    pub crop_padding: u32,
    /// Per-channel value subtracted from the 0..255 RGB sample.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the mean.
    pub std: [f32; 3],
}

/// A square crop of the source image, in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    /// Side of the square; at least 1 and at most `min(width, height)`.
    pub side: u32,
}

// === impl PreprocessSpec ===

impl PreprocessSpec {
    /// The EfficientNet-Lite evaluation spec at `resolution`: crop padding 32, mean 127, std 128.
    pub fn efficientnet_lite(resolution: u32) -> Self {
        PreprocessSpec {
            resolution,
            crop_padding: 32,
            mean: [127.0; 3],
            std: [128.0; 3],
        }
    }

    /// Number of `f32` values [`preprocess`] writes: 3 x resolution x resolution.
    pub fn output_len(&self) -> usize {
        3 * self.resolution as usize * self.resolution as usize
    }

    fn validate(&self) -> Result<(), ImageError> {
        if self.resolution == 0 {
            return Err(ImageError::InvalidSpec {
                reason: "resolution is 0".to_owned(),
            });
        }
        if let Some(std) = self.std.iter().find(|std| **std == 0.0 || !std.is_finite()) {
            return Err(ImageError::InvalidSpec {
                reason: format!("std {std} is not a finite non-zero number"),
            });
        }
        if let Some(mean) = self.mean.iter().find(|mean| !mean.is_finite()) {
            return Err(ImageError::InvalidSpec {
                reason: format!("mean {mean} is not finite"),
            });
        }
        Ok(())
    }
}

/// Computes the centred square crop of a `width` x `height` image for `resolution`.
///
/// The side is `floor(resolution / (resolution + crop_padding) * min(width, height))` in
/// f64, in the same operation order as the Python `int(...)`, raised to 1 where that floors
/// to 0 (images narrower than about `1 + crop_padding / resolution` pixels). The offsets
/// round the centring towards the bottom right: `(extent - side + 1) / 2`, written as
/// `div_ceil`. A zero-sized image gives a crop of side 1 at 0, which the resize rejects.
pub fn center_crop(width: u32, height: u32, resolution: u32, crop_padding: u32) -> CropBox {
    let shorter = width.min(height);
    let ratio = f64::from(resolution) / (f64::from(resolution) + f64::from(crop_padding));
    let side = ((ratio * f64::from(shorter)).floor() as u32).clamp(1, shorter.max(1));
    CropBox {
        left: width.saturating_sub(side).div_ceil(2),
        top: height.saturating_sub(side).div_ceil(2),
        side,
    }
}

/// Crops and resizes `image` to `spec.resolution` squared RGB8 pixels, written row-major to `out`.
///
/// `out` must hold exactly 3 x resolution x resolution bytes. The resize is Pillow's
/// `Image.resize(..., Image.BICUBIC)` on the cropped image, bit for bit (see
/// [`crate::resample`]): the filter clamps at the crop edges instead of reading the pixels
/// around the crop, and the crop is never copied.
pub fn resize_center_crop(
    image: &RgbImage,
    spec: &PreprocessSpec,
    out: &mut [u8],
) -> Result<(), ImageError> {
    spec.validate()?;
    let resolution = spec.resolution;
    if out.len() != spec.output_len() {
        return Err(ImageError::OutputLength {
            resolution,
            expected: spec.output_len(),
            actual: out.len(),
        });
    }
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::InvalidSpec {
            reason: format!("source image is {width}x{height} pixels"),
        });
    }

    let crop = center_crop(width, height, resolution, spec.crop_padding);
    let square = (crop.left as usize, crop.top as usize, crop.side as usize);
    resample::resize_square(
        image.as_raw(),
        width as usize,
        square,
        resolution as usize,
        out,
    );
    Ok(())
}

/// Preprocesses `image` into `out` as float32 CHW: plane `c` holds `(x - mean[c]) / std[c]`.
///
/// `out.len()` must equal [`PreprocessSpec::output_len`].
pub fn preprocess(
    image: &RgbImage,
    spec: &PreprocessSpec,
    out: &mut [f32],
) -> Result<(), ImageError> {
    if out.len() != spec.output_len() {
        return Err(ImageError::OutputLength {
            resolution: spec.resolution,
            expected: spec.output_len(),
            actual: out.len(),
        });
    }
    let mut resized = vec![0u8; spec.output_len()];
    resize_center_crop(image, spec, &mut resized)?;
    normalize_chw(&resized, spec, out);
    Ok(())
}

/// Writes interleaved RGB8 `pixels` to `out` as normalised CHW planes.
///
/// A 256-entry table per channel holds `(v - mean) / std` computed exactly as the formula
/// reads, so the values are bit-identical to the division and the loop is three loads and
/// three stores per pixel.
fn normalize_chw(pixels: &[u8], spec: &PreprocessSpec, out: &mut [f32]) {
    let tables: [[f32; 256]; 3] = std::array::from_fn(|channel| {
        std::array::from_fn(|value| (value as f32 - spec.mean[channel]) / spec.std[channel])
    });

    let plane = pixels.len() / 3;
    let (red, rest) = out.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    let planes = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
    for (pixel, ((red, green), blue)) in pixels.chunks_exact(3).zip(planes) {
        *red = tables[0][usize::from(pixel[0])];
        *green = tables[1][usize::from(pixel[1])];
        *blue = tables[2][usize::from(pixel[2])];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_matches_python_formula() {
        // (width, height, resolution, expected side, left, top), computed with the Python
        // expression int(res / (res + 32) * min(w, h)).
        let cases = [
            (500, 375, 224, 328, 86, 24),
            (500, 333, 224, 291, 105, 21),
            (333, 500, 300, 300, 17, 100),
            (640, 480, 260, 427, 107, 27),
            (101, 77, 224, 67, 17, 5),
        ];
        for (width, height, resolution, side, left, top) in cases {
            let crop = center_crop(width, height, resolution, 32);
            assert_eq!(crop.side, side, "{width}x{height} at {resolution}");
            assert_eq!(crop.left, left, "{width}x{height} at {resolution}");
            assert_eq!(crop.top, top, "{width}x{height} at {resolution}");
        }
    }

    #[test]
    fn crop_tiny_images() {
        for (width, height) in [(1, 1), (1, 500), (500, 1), (2, 2), (3, 7)] {
            let crop = center_crop(width, height, 224, 32);
            assert!(crop.side >= 1, "{width}x{height}");
            assert!(crop.left + crop.side <= width, "{width}x{height}");
            assert!(crop.top + crop.side <= height, "{width}x{height}");
        }
        assert_eq!(
            center_crop(1, 1, 224, 32),
            CropBox {
                left: 0,
                top: 0,
                side: 1
            }
        );
        assert_eq!(
            center_crop(1, 9, 224, 32),
            CropBox {
                left: 0,
                top: 4,
                side: 1
            }
        );
        // 2 * 224 / 256 = 1.75 floors to 1; the odd remainder goes right: (2 - 1 + 1) / 2.
        assert_eq!(
            center_crop(2, 2, 224, 32),
            CropBox {
                left: 1,
                top: 1,
                side: 1
            }
        );
    }

    #[test]
    fn crop_without_padding() {
        assert_eq!(
            center_crop(300, 200, 224, 0),
            CropBox {
                left: 50,
                top: 0,
                side: 200
            }
        );
    }

    #[test]
    fn normalize_planes() {
        let spec = PreprocessSpec::efficientnet_lite(2);
        let pixels = [0, 127, 255, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut out = [0.0f32; 12];
        normalize_chw(&pixels, &spec, &mut out);
        assert_eq!(out[0], -127.0 / 128.0);
        assert_eq!(out[4], 0.0);
        assert_eq!(out[8], 1.0);
        assert_eq!(out[1], (1.0 - 127.0) / 128.0);
        assert_eq!(out[11], (9.0 - 127.0) / 128.0);
    }
}
