//! The error type of decoding and preprocessing, with its HTTP-facing classification.

use crate::ImageFormat;

/// The class of an [`ImageError`], which the server maps to an HTTP status.
///
/// Intended mapping: `Empty` 400; `UnknownFormat` and `UnsupportedFormat` 415;
/// `Invalid` 422; `TooLarge` 413 when the input bytes exceed the limit
/// (code `image_input_too_large`) and 422 when the dimensions, pixel count,
/// decode allocation (code `image_too_large`) or decode time
/// (`image_decode_timeout`) do; `Internal` 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageErrorKind {
    /// The input has zero bytes.
    Empty,
    /// The format was recognised but is not decoded (AVIF, TIFF, ...), or the file uses a
    /// feature of a supported format that the decoder lacks.
    UnsupportedFormat,
    /// No known image signature matches the first bytes.
    UnknownFormat,
    /// The data is corrupt or truncated.
    Invalid,
    /// The input bytes, dimensions, pixel count, decode allocation or decode time exceed a
    /// [`crate::Limits`].
    TooLarge,
    /// A caller bug: an output buffer of the wrong length or an invalid preprocessing spec.
    Internal,
}

/// Failure to decode or preprocess one image.
///
/// Messages are lowercase apart from format names, carry the offending values and never
/// contain file paths, so the server can return them to clients.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is empty: the input has zero bytes")]
    Empty,

    #[error("image is {len} bytes; the limit is {max} bytes")]
    InputTooLarge { len: usize, max: usize },

    #[error("unknown image format (first bytes: {prefix}); send JPEG, PNG, WebP, GIF or BMP")]
    UnknownFormat {
        /// Hex dump of up to the first 8 bytes.
        prefix: String,
    },

    #[error("{format} images are not supported; send JPEG, PNG, WebP, GIF or BMP")]
    UnsupportedFormat { format: ImageFormat },

    #[error("this {format} image uses a feature the decoder does not support: {reason}")]
    UnsupportedFeature { format: ImageFormat, reason: String },

    #[error("invalid {format} image: {reason}")]
    Invalid { format: ImageFormat, reason: String },

    #[error(
        "image is {width}x{height} pixels; the limit is {max_width}x{max_height} and {max_pixels} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
        max_pixels: u64,
    },

    #[error(
        "decoding the {width}x{height} {format} image needs more than the limit of {max_alloc} bytes of memory"
    )]
    AllocationTooLarge {
        format: ImageFormat,
        width: u32,
        height: u32,
        max_alloc: u64,
    },

    #[error("decoding the {format} image took longer than the limit of {limit_ms} ms")]
    DecodeTimeout { format: ImageFormat, limit_ms: u128 },

    #[error("output buffer has {actual} values; 3x{resolution}x{resolution} = {expected} expected")]
    OutputLength {
        resolution: u32,
        expected: usize,
        actual: usize,
    },

    #[error("invalid preprocessing spec: {reason}")]
    InvalidSpec { reason: String },
}

// === impl ImageError ===

impl ImageError {
    /// The class of the error, for the HTTP status.
    pub fn kind(&self) -> ImageErrorKind {
        match self {
            ImageError::Empty => ImageErrorKind::Empty,
            ImageError::UnknownFormat { .. } => ImageErrorKind::UnknownFormat,
            ImageError::UnsupportedFormat { .. } | ImageError::UnsupportedFeature { .. } => {
                ImageErrorKind::UnsupportedFormat
            }
            ImageError::Invalid { .. } => ImageErrorKind::Invalid,
            ImageError::InputTooLarge { .. }
            | ImageError::TooLarge { .. }
            | ImageError::AllocationTooLarge { .. }
            | ImageError::DecodeTimeout { .. } => ImageErrorKind::TooLarge,
            ImageError::OutputLength { .. } | ImageError::InvalidSpec { .. } => {
                ImageErrorKind::Internal
            }
        }
    }

    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::Empty => "image_empty",
            ImageError::InputTooLarge { .. } => "image_input_too_large",
            ImageError::UnknownFormat { .. } => "image_format_unknown",
            ImageError::UnsupportedFormat { .. } | ImageError::UnsupportedFeature { .. } => {
                "image_format_unsupported"
            }
            ImageError::Invalid { .. } => "image_invalid",
            ImageError::TooLarge { .. } | ImageError::AllocationTooLarge { .. } => {
                "image_too_large"
            }
            ImageError::DecodeTimeout { .. } => "image_decode_timeout",
            ImageError::OutputLength { .. } | ImageError::InvalidSpec { .. } => {
                "image_preprocess_failed"
            }
        }
    }

    /// Classifies an error of the `image` crate that decoding `format` returned.
    pub(crate) fn from_decoder(
        format: ImageFormat,
        (width, height): (u32, u32),
        max_alloc: u64,
        error: image::ImageError,
    ) -> ImageError {
        use image::ImageError as Decoder;

        match error {
            Decoder::Limits(_) => ImageError::AllocationTooLarge {
                format,
                width,
                height,
                max_alloc,
            },
            Decoder::Unsupported(unsupported) => ImageError::UnsupportedFeature {
                format,
                reason: unsupported.to_string(),
            },
            Decoder::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                ImageError::Invalid {
                    format,
                    reason: "the data ends early (truncated)".to_owned(),
                }
            }
            other => ImageError::Invalid {
                format,
                reason: other.to_string(),
            },
        }
    }
}
