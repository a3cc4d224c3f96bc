//! Image format detection from magic bytes.

use std::fmt;

/// An image container format, detected from the first bytes of the data.
///
/// Only [`ImageFormat::is_supported`] formats are decoded; the others are
/// recognised so that the rejection can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
    Bmp,
    Tiff,
    Avif,
    Heic,
    JpegXl,
    Jpeg2000,
    Ico,
    Psd,
    Qoi,
    OpenExr,
    Hdr,
}

/// ISO base media file brands of AVIF files (`ftyp` major or compatible brand).
const AVIF_BRANDS: [&[u8; 4]; 2] = [b"avif", b"avis"];

/// ISO base media file brands of HEIF/HEIC files.
const HEIC_BRANDS: [&[u8; 4]; 8] = [
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
];

/// Detects the image format from magic bytes; the content type a client sends is never consulted.
///
/// Returns `None` when no known signature matches.
pub fn detect_format(bytes: &[u8]) -> Option<ImageFormat> {
    const SIGNATURES: &[(&[u8], ImageFormat)] = &[
        (b"\xFF\xD8\xFF", ImageFormat::Jpeg),
        (b"\x89PNG\r\n\x1A\n", ImageFormat::Png),
        (b"GIF87a", ImageFormat::Gif),
        (b"GIF89a", ImageFormat::Gif),
        (b"BM", ImageFormat::Bmp),
        (b"II*\0", ImageFormat::Tiff),
        (b"MM\0*", ImageFormat::Tiff),
        (b"\xFF\x0A", ImageFormat::JpegXl),
        (b"\0\0\0\x0CJXL \r\n\x87\n", ImageFormat::JpegXl),
        (b"\0\0\0\x0CjP  \r\n\x87\n", ImageFormat::Jpeg2000),
        (b"\xFF\x4F\xFF\x51", ImageFormat::Jpeg2000),
        (b"\0\0\x01\0", ImageFormat::Ico),
        (b"8BPS", ImageFormat::Psd),
        (b"qoif", ImageFormat::Qoi),
        (b"\x76\x2F\x31\x01", ImageFormat::OpenExr),
        (b"#?RADIANCE", ImageFormat::Hdr),
        (b"#?RGBE", ImageFormat::Hdr),
    ];

    if let Some(&(_, format)) = SIGNATURES
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        return Some(format);
    }
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Some(ImageFormat::WebP);
    }
    detect_isobmff(bytes)
}

/// Detects AVIF and HEIC from the `ftyp` box: the major brand, then the compatible brands.
///
/// AVIF wins when both kinds of brand are listed, because AVIF files also carry the generic
/// HEIF brand `mif1`.
fn detect_isobmff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let box_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let ftyp = &bytes[8..box_len.clamp(16, bytes.len())];

    // Major brand (4), minor version (4), then compatible brands (4 each).
    let brands = std::iter::once(&ftyp[0..4]).chain(ftyp.get(8..).unwrap_or(&[]).chunks_exact(4));
    let brands: Vec<&[u8]> = brands.collect();
    if brands
        .iter()
        .any(|brand| AVIF_BRANDS.iter().any(|avif| brand == avif))
    {
        return Some(ImageFormat::Avif);
    }
    if brands
        .iter()
        .any(|brand| HEIC_BRANDS.iter().any(|heic| brand == heic))
    {
        return Some(ImageFormat::Heic);
    }
    None
}

// === impl ImageFormat ===

impl ImageFormat {
    /// Every format the crate decodes, in the order the error messages list them.
    pub const SUPPORTED: [ImageFormat; 5] = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Gif,
        ImageFormat::Bmp,
    ];

    /// Whether [`crate::decode`] decodes this format.
    pub fn is_supported(self) -> bool {
        self.decoder_format().is_some()
    }

    /// The usual name of the format, as error messages print it.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::WebP => "WebP",
            ImageFormat::Gif => "GIF",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Tiff => "TIFF",
            ImageFormat::Avif => "AVIF",
            ImageFormat::Heic => "HEIC",
            ImageFormat::JpegXl => "JPEG XL",
            ImageFormat::Jpeg2000 => "JPEG 2000",
            ImageFormat::Ico => "ICO",
            ImageFormat::Psd => "PSD",
            ImageFormat::Qoi => "QOI",
            ImageFormat::OpenExr => "OpenEXR",
            ImageFormat::Hdr => "Radiance HDR",
        }
    }

    /// The `image` crate format that decodes this one, for the supported formats.
    pub(crate) fn decoder_format(self) -> Option<image::ImageFormat> {
        match self {
            ImageFormat::Jpeg => Some(image::ImageFormat::Jpeg),
            ImageFormat::Png => Some(image::ImageFormat::Png),
            ImageFormat::WebP => Some(image::ImageFormat::WebP),
            ImageFormat::Gif => Some(image::ImageFormat::Gif),
            ImageFormat::Bmp => Some(image::ImageFormat::Bmp),
            _ => None,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_signatures() {
        let cases: &[(&[u8], Option<ImageFormat>)] = &[
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", Some(ImageFormat::Jpeg)),
            (b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR", Some(ImageFormat::Png)),
            (b"GIF89a\x01\0\x01\0", Some(ImageFormat::Gif)),
            (b"BM\x36\0\0\0", Some(ImageFormat::Bmp)),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some(ImageFormat::WebP)),
            (b"RIFF\x24\0\0\0WAVEfmt ", None),
            (b"II*\0\x08\0\0\0", Some(ImageFormat::Tiff)),
            (b"\0\0\0\x1CftypavifAAAAmif1miaf", Some(ImageFormat::Avif)),
            (b"\0\0\0\x18ftypmif1\0\0\0\0avif", Some(ImageFormat::Avif)),
            (b"\0\0\0\x18ftypheic\0\0\0\0mif1", Some(ImageFormat::Heic)),
            (b"\0\0\0\x18ftypisom\0\0\0\0mp41", None),
            (b"\xFF\x0A\xFA", Some(ImageFormat::JpegXl)),
            (b"", None),
            (b"\xFF\xD8", None),
            (b"hello world", None),
        ];
        for &(bytes, expected) in cases {
            assert_eq!(detect_format(bytes), expected, "bytes {bytes:?}");
        }
    }

    #[test]
    fn supported_formats() {
        for format in ImageFormat::SUPPORTED {
            assert!(format.is_supported(), "{format}");
        }
        assert!(!ImageFormat::Avif.is_supported());
        assert!(!ImageFormat::Tiff.is_supported());
    }
}
