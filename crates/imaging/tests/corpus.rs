//! Decodes every file of the committed corpus and checks the outcome `cases.json` expects.
//!
//! Regenerate the corpus with
//! `.venv/bin/python tools/make_image_corpus.py corpus PHOTO crates/imaging/tests/fixtures/corpus`.

mod common;

use common::{abs_diff, cases, corpus_file, decode_fixture, fixtures, preprocess_levels};
use std::time::Duration;

use effnet_imaging::{ImageError, ImageErrorKind, ImageFormat, Limits, decode};

/// Model input side used to compare variants: a mild downscale of the 64x48 corpus photo.
const COMPARE_RESOLUTION: u32 = 32;

fn expected_kind(expect: &str) -> ImageErrorKind {
    match expect {
        "empty" => ImageErrorKind::Empty,
        "unknown_format" => ImageErrorKind::UnknownFormat,
        "unsupported_format" => ImageErrorKind::UnsupportedFormat,
        "invalid" => ImageErrorKind::Invalid,
        "too_large" => ImageErrorKind::TooLarge,
        other => panic!("unknown expectation {other} in cases.json"),
    }
}

#[test]
fn variants_match_reference() {
    let cases = cases();
    let ok_cases: Vec<_> = cases.iter().filter(|case| case.expect == "ok").collect();
    assert!(
        ok_cases.len() >= 25,
        "only {} decodable cases",
        ok_cases.len()
    );

    for case in ok_cases {
        let image = decode_fixture(&fixtures().join("corpus").join(&case.file));
        let reference_name = case
            .reference
            .as_deref()
            .expect("ok cases name a reference");
        let reference = decode_fixture(&fixtures().join("corpus").join(reference_name));
        assert_eq!(
            image.dimensions(),
            reference.dimensions(),
            "{}: {}",
            case.file,
            case.note
        );

        let actual = preprocess_levels(&image, COMPARE_RESOLUTION);
        let expected = preprocess_levels(&reference, COMPARE_RESOLUTION);
        let (mean, max) = abs_diff(&actual, &expected);
        let bound = case.max_mean_abs_diff.expect("ok cases carry a bound");
        println!(
            "{:<24} mean {mean:.3} max {max:.0} (bound {bound})",
            case.file
        );
        assert!(
            mean <= bound,
            "{}: mean abs diff {mean:.3} > {bound} ({})",
            case.file,
            case.note
        );
    }
}

#[test]
fn hostile_cases_rejected() {
    for case in cases().iter().filter(|case| case.expect != "ok") {
        let bytes = corpus_file(&case.file);
        let error = decode(&bytes, &Limits::default()).expect_err(&case.file);
        assert_eq!(
            error.kind(),
            expected_kind(&case.expect),
            "{}: {error}",
            case.file
        );
    }
}

#[test]
fn truncated_variants_rejected() {
    for case in cases().iter().filter(|case| case.expect == "ok") {
        let bytes = corpus_file(&case.file);
        let half = &bytes[..bytes.len() / 2];
        let result = decode(half, &Limits::default());
        let kind = result.as_ref().err().map(ImageError::kind);
        assert_eq!(
            kind,
            Some(ImageErrorKind::Invalid),
            "{} cut to {} bytes",
            case.file,
            half.len()
        );
    }
}

#[test]
fn orientation_restores_landscape() {
    for orientation in 1..=8 {
        let image =
            decode_fixture(&fixtures().join(format!("corpus/orientation{orientation}.jpg")));
        assert_eq!(image.dimensions(), (64, 48), "orientation {orientation}");
    }
}

#[test]
fn alpha_composited_onto_white() {
    // The left quarter below the top ramp band is fully transparent.
    for file in [
        "rgba8.png",
        "rgba16.png",
        "gray_alpha.png",
        "palette_trns.png",
    ] {
        let image = decode_fixture(&fixtures().join("corpus").join(file));
        assert_eq!(image.get_pixel(3, 40).0, [255, 255, 255], "{file}");
    }
}

#[test]
fn sixteen_bit_rounds_to_eight() {
    let wide = decode_fixture(&fixtures().join("corpus/rgb16.png"));
    let narrow = decode_fixture(&fixtures().join("corpus/rgb.png"));
    assert_eq!(wide.as_raw(), narrow.as_raw());
}

#[test]
fn gif_first_frame() {
    let gif = decode_fixture(&fixtures().join("corpus/animated.gif"));
    let frame = decode_fixture(&fixtures().join("corpus/gif_frame0.png"));
    assert_eq!(gif.as_raw(), frame.as_raw());
}

#[test]
fn too_large_message_names_values() {
    let error = decode(&corpus_file("wide.png"), &Limits::default()).expect_err("wide.png");
    assert_eq!(error.code(), "image_too_large");
    assert_eq!(
        error.to_string(),
        "image is 20000x300 pixels; the limit is 16384x16384 and 40000000 pixels"
    );
}

#[test]
fn unsupported_message_names_format() {
    let error = decode(&corpus_file("ftyp.avif"), &Limits::default()).expect_err("ftyp.avif");
    assert!(matches!(
        error,
        ImageError::UnsupportedFormat {
            format: ImageFormat::Avif
        }
    ));
    assert_eq!(error.code(), "image_format_unsupported");
    assert_eq!(
        error.to_string(),
        "AVIF images are not supported; send JPEG, PNG, WebP, GIF or BMP"
    );

    let error = decode(&corpus_file("ftyp.heic"), &Limits::default()).expect_err("ftyp.heic");
    assert!(
        error
            .to_string()
            .starts_with("HEIC images are not supported"),
        "{error}"
    );
}

#[test]
fn input_bytes_limit() {
    let limits = Limits {
        max_input_bytes: 100,
        ..Limits::default()
    };
    let error = decode(&corpus_file("baseline.jpg"), &limits).expect_err("over the byte limit");
    assert_eq!(error.kind(), ImageErrorKind::TooLarge);
    assert_eq!(error.code(), "image_input_too_large");
}

#[test]
fn decode_alloc_limit() {
    // 64x48 RGBA16 needs 24576 bytes natively plus 9216 for RGB8.
    let limits = Limits {
        max_decode_alloc: 20_000,
        ..Limits::default()
    };
    let error = decode(&corpus_file("rgba16.png"), &limits).expect_err("over the allocation limit");
    assert!(
        matches!(error, ImageError::AllocationTooLarge { .. }),
        "{error}"
    );
    assert_eq!(error.code(), "image_too_large");
}

#[test]
fn decode_time_limit() {
    let expired = Limits {
        max_decode_time: Some(Duration::ZERO),
        ..Limits::default()
    };
    let unlimited = Limits {
        max_decode_time: None,
        ..Limits::default()
    };

    for file in [
        "baseline.jpg",
        "progressive.jpg",
        "rgb8.png",
        "animated.gif",
    ] {
        let error = decode(&corpus_file(file), &expired).expect_err("over the time limit");
        assert_eq!(error.kind(), ImageErrorKind::TooLarge, "{file}");
        assert_eq!(error.code(), "image_decode_timeout", "{file}");
        assert!(
            error.to_string().contains("limit of 0 ms"),
            "{file}: {error}"
        );

        assert!(decode(&corpus_file(file), &unlimited).is_ok(), "{file}");
    }
}

#[test]
fn pixel_limit_applies() {
    let limits = Limits {
        max_pixels: 64 * 48 - 1,
        ..Limits::default()
    };
    let error = decode(&corpus_file("rgb8.png"), &limits).expect_err("over the pixel limit");
    assert!(
        matches!(
            error,
            ImageError::TooLarge {
                width: 64,
                height: 48,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn unknown_message_shows_prefix() {
    let error = decode(b"hello world", &Limits::default()).expect_err("text");
    assert_eq!(error.code(), "image_format_unknown");
    assert!(error.to_string().contains("68656c6c6f20776f"), "{error}");
}

#[test]
fn jpeg_library_error_contained() {
    // A 12-bit sample precision in the frame header makes the 8-bit libjpeg build call
    // `error_exit`, which must come back as an error, not abort the process.
    let mut bytes = corpus_file("baseline.jpg");
    let frame = bytes
        .windows(2)
        .position(|pair| pair == [0xFF, 0xC0])
        .expect("baseline.jpg has a baseline frame header");
    bytes[frame + 4] = 12;

    let error = decode(&bytes, &Limits::default()).expect_err("12-bit precision");
    assert_eq!(error.kind(), ImageErrorKind::Invalid, "{error}");
    assert!(error.to_string().contains("precision"), "{error}");
}
