//! Fixture loading shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use effnet_imaging::{Limits, PreprocessSpec, RgbImage};
use serde::Deserialize;

/// One file of the corpus that `tools/make_image_corpus.py corpus` writes.
#[derive(Debug, Deserialize)]
pub struct Case {
    pub file: String,
    /// `ok`, or the snake_case name of the expected error kind.
    pub expect: String,
    pub note: String,
    /// Lossless PNG the decode must match, for `ok` cases.
    pub reference: Option<String>,
    /// Bound on the mean absolute difference after preprocessing, in 8-bit levels.
    pub max_mean_abs_diff: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

/// One Pillow preprocessing output that `tools/make_image_corpus.py reference` writes.
#[derive(Debug, Deserialize)]
pub struct ReferenceEntry {
    pub input: String,
    pub resolution: u32,
    pub expected: String,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub crop_padding: u32,
    pub entries: Vec<ReferenceEntry>,
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

pub fn corpus_file(name: &str) -> Vec<u8> {
    read(&fixtures().join("corpus").join(name))
}

pub fn cases() -> Vec<Case> {
    let text = read(&fixtures().join("corpus/cases.json"));
    let cases: Cases = serde_json::from_slice(&text).expect("cases.json parses");
    cases.cases
}

pub fn reference() -> Reference {
    let text = read(&fixtures().join("reference/reference.json"));
    serde_json::from_slice(&text).expect("reference.json parses")
}

/// Decodes a fixture that must decode.
pub fn decode_fixture(path: &Path) -> RgbImage {
    effnet_imaging::decode(&read(path), &Limits::default())
        .unwrap_or_else(|error| panic!("decoding {}: {error}", path.display()))
}

/// Preprocesses `image` and maps the output back to 0..255 levels.
pub fn preprocess_levels(image: &RgbImage, resolution: u32) -> Vec<f64> {
    let spec = PreprocessSpec::efficientnet_lite(resolution);
    let mut out = vec![0.0; spec.output_len()];
    effnet_imaging::preprocess(image, &spec, &mut out).expect("preprocess succeeds");
    out.iter().map(|v| f64::from(*v) * 128.0 + 127.0).collect()
}

/// Mean and max absolute difference of two equally long sample sequences.
pub fn abs_diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "compared buffers differ in length");
    let mut sum = 0.0;
    let mut max: f64 = 0.0;
    for (x, y) in a.iter().zip(b) {
        let diff = ((*x).into() - (*y).into()).abs();
        sum += diff;
        max = max.max(diff);
    }
    (sum / a.len() as f64, max)
}
