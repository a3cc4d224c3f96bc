//! Image decoding and the evaluation preprocessing of EfficientNet-Lite.
//!
//! The server hands each client image to [`decode_and_preprocess`] on a bounded pool of
//! blocking threads. [`decode`] detects the format from magic bytes, checks the declared
//! dimensions against [`Limits`] before allocating, applies the EXIF orientation and
//! converts every colour type to RGB8. [`preprocess`] then reproduces the Python
//! evaluation pipeline (centre crop, Pillow-equivalent bicubic resize, per-channel
//! normalisation) into a float32 CHW buffer. The crate has no async code and no HTTP types.

mod decode;
mod error;
mod format;
mod jpeg;
mod preprocess;
mod resample;

use std::time::{Duration, Instant};

pub use decode::{Limits, decode};
pub use error::{ImageError, ImageErrorKind};
pub use format::{ImageFormat, detect_format};
pub use image::RgbImage;
pub use preprocess::{CropBox, PreprocessSpec, center_crop, preprocess, resize_center_crop};

/// Wall-clock time of the two stages of [`decode_and_preprocess`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub decode: Duration,
    pub preprocess: Duration,
}

/// Decodes `bytes` and preprocesses the image into a new CHW buffer of
/// [`PreprocessSpec::output_len`] values.
pub fn decode_and_preprocess(
    bytes: &[u8],
    limits: &Limits,
    spec: &PreprocessSpec,
) -> Result<(Vec<f32>, Timings), ImageError> {
    let started = Instant::now();
    let image = decode(bytes, limits)?;
    let decoded = Instant::now();

    let mut tensor = vec![0.0; spec.output_len()];
    preprocess(&image, spec, &mut tensor)?;

    let timings = Timings {
        decode: decoded - started,
        preprocess: decoded.elapsed(),
    };
    Ok((tensor, timings))
}
