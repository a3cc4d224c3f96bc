//! Preprocessing against Pillow's output and on edge-case geometries.
//!
//! The Pillow outputs come from `tools/make_image_corpus.py reference`, which runs Pillow's
//! `Image.resize(..., Image.BICUBIC)` on the centre crop. Both sides start from the same PNG
//! pixels, so the resize alone must reproduce them exactly.

mod common;

use common::{abs_diff, decode_fixture, fixtures, reference};
use effnet_imaging::{ImageErrorKind, PreprocessSpec, RgbImage, preprocess, resize_center_crop};

#[test]
fn resize_matches_pillow() {
    let reference = reference();
    assert_eq!(reference.crop_padding, 32);
    assert!(reference.entries.len() >= 6);

    for entry in &reference.entries {
        let image = decode_fixture(&fixtures().join("reference").join(&entry.input));
        let expected = decode_fixture(&fixtures().join("reference").join(&entry.expected));
        let spec = PreprocessSpec::efficientnet_lite(entry.resolution);
        let mut resized = vec![0u8; spec.output_len()];
        resize_center_crop(&image, &spec, &mut resized).expect("resize succeeds");

        let (mean, max) = abs_diff(&resized, expected.as_raw());
        println!("{:<32} mean {mean:.4} max {max:.0}", entry.expected);
        assert_eq!(
            resized.as_slice(),
            expected.as_raw().as_slice(),
            "{}: mean abs diff {mean:.4}, max {max} levels",
            entry.expected
        );
    }
}

fn gradient(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 200])
    })
}

#[test]
fn output_length_and_range() {
    let spec = PreprocessSpec::efficientnet_lite(224);
    let image = gradient(500, 375);
    let mut out = vec![f32::NAN; spec.output_len()];
    preprocess(&image, &spec, &mut out).expect("preprocess succeeds");

    assert_eq!(out.len(), 3 * 224 * 224);
    let min = out.iter().copied().fold(f32::INFINITY, f32::min);
    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(min >= -127.0 / 128.0, "min {min}");
    assert!(max <= 2.0, "max {max}");
    // The blue plane is constant 200 and survives the resize exactly.
    let blue = &out[2 * 224 * 224..];
    assert!(blue.iter().all(|v| *v == (200.0 - 127.0) / 128.0));
}

#[test]
fn tiny_images_preprocess() {
    let spec = PreprocessSpec::efficientnet_lite(224);
    for (width, height) in [(1, 1), (1, 7), (7, 1), (1, 300), (2, 2), (3, 5)] {
        let image = RgbImage::from_pixel(width, height, image::Rgb([255, 0, 127]));
        let mut out = vec![f32::NAN; spec.output_len()];
        preprocess(&image, &spec, &mut out)
            .unwrap_or_else(|error| panic!("{width}x{height}: {error}"));

        let plane = 224 * 224;
        assert!(
            out[..plane].iter().all(|v| *v == 1.0),
            "{width}x{height} red"
        );
        assert!(
            out[plane..2 * plane].iter().all(|v| *v == -127.0 / 128.0),
            "{width}x{height} green"
        );
        assert!(
            out[2 * plane..].iter().all(|v| *v == 0.0),
            "{width}x{height} blue"
        );
    }
}

#[test]
fn odd_sizes_preprocess() {
    for resolution in [224, 240, 260, 280, 300] {
        let spec = PreprocessSpec::efficientnet_lite(resolution);
        for (width, height) in [(333, 500), (501, 377), (17, 1023)] {
            let mut out = vec![0.0; spec.output_len()];
            let result = preprocess(&gradient(width, height), &spec, &mut out);
            assert!(
                result.is_ok(),
                "{width}x{height} at {resolution}: {result:?}"
            );
            assert!(
                out.iter().all(|v| v.is_finite()),
                "{width}x{height} at {resolution}"
            );
        }
    }
}

#[test]
fn wrong_output_length() {
    let spec = PreprocessSpec::efficientnet_lite(224);
    let mut out = vec![0.0; spec.output_len() - 1];
    let error = preprocess(&gradient(10, 10), &spec, &mut out).expect_err("short buffer");
    assert_eq!(error.kind(), ImageErrorKind::Internal);
}

#[test]
fn invalid_spec_rejected() {
    let mut spec = PreprocessSpec::efficientnet_lite(4);
    spec.std[1] = 0.0;
    let mut out = vec![0.0; spec.output_len()];
    let error = preprocess(&gradient(10, 10), &spec, &mut out).expect_err("zero std");
    assert_eq!(error.kind(), ImageErrorKind::Internal);
}
