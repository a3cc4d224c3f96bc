//! Compares the Rust preprocessing with Pillow's on the output of
//! `tools/make_image_corpus.py reference`.
//!
//! ```text
//! .venv/bin/python tools/make_image_corpus.py reference OUT PHOTO... --resolution 224
//! cargo run --release -p effnet-imaging --example pillow_compare -- OUT [PHOTO_DIR]
//! ```
//!
//! For each entry it prints the mean and max absolute difference, in 8-bit levels:
//! - `resize`: the resized crop, starting from Pillow's decoded pixels (the PNG copy), so
//!   only the resize differs;
//! - `decode` (with PHOTO_DIR): the Rust decode of the original file against Pillow's pixels;
//! - `pipeline` (with PHOTO_DIR): the resized crop from the original file.

use std::path::{Path, PathBuf};

use effnet_imaging::{Limits, PreprocessSpec, RgbImage, decode, resize_center_crop};
use serde::Deserialize;

#[derive(Deserialize)]
struct Entry {
    input: String,
    resolution: u32,
    expected: String,
    source: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    entries: Vec<Entry>,
}

/// Running mean and maximum of absolute differences over many comparisons.
#[derive(Default)]
struct Stats {
    sum: f64,
    count: usize,
    max: f64,
}

impl Stats {
    fn add(&mut self, a: &[u8], b: &[u8]) -> (f64, f64) {
        let mut sum = 0.0;
        let mut max: f64 = 0.0;
        for (x, y) in a.iter().zip(b) {
            let diff = f64::from(x.abs_diff(*y));
            sum += diff;
            max = max.max(diff);
        }
        self.sum += sum;
        self.count += a.len();
        self.max = self.max.max(max);
        (sum / a.len() as f64, max)
    }

    fn print(&self, stage: &str) {
        if self.count > 0 {
            println!(
                "{stage:<8} overall mean {:.4} max {:.0}",
                self.sum / self.count as f64,
                self.max
            );
        }
    }
}

fn load(path: &Path) -> Result<RgbImage, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    decode(&bytes, &Limits::default())
        .map_err(|error| format!("{}: {error}", path.display()).into())
}

fn resize(image: &RgbImage, resolution: u32) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let spec = PreprocessSpec::efficientnet_lite(resolution);
    let mut out = vec![0; spec.output_len()];
    resize_center_crop(image, &spec, &mut out)?;
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: pillow_compare REFERENCE_DIR [PHOTO_DIR]")?,
    );
    let photo_dir = args.next().map(PathBuf::from);
    let reference: Reference = serde_json::from_slice(&std::fs::read(dir.join("reference.json"))?)?;

    let (mut resize_stats, mut decode_stats, mut pipeline_stats) =
        (Stats::default(), Stats::default(), Stats::default());
    for entry in &reference.entries {
        let pillow_pixels = load(&dir.join(&entry.input))?;
        let expected = load(&dir.join(&entry.expected))?;
        let (mean, max) = resize_stats.add(
            &resize(&pillow_pixels, entry.resolution)?,
            expected.as_raw(),
        );
        print!("{:<40} resize {mean:.4}/{max:.0}", entry.expected);

        if let (Some(photo_dir), Some(source)) = (&photo_dir, &entry.source) {
            let decoded = load(&photo_dir.join(source))?;
            let (mean, max) = decode_stats.add(decoded.as_raw(), pillow_pixels.as_raw());
            print!("  decode {mean:.4}/{max:.0}");
            let (mean, max) =
                pipeline_stats.add(&resize(&decoded, entry.resolution)?, expected.as_raw());
            print!("  pipeline {mean:.4}/{max:.0}");
        }
        println!();
    }
    resize_stats.print("resize");
    decode_stats.print("decode");
    pipeline_stats.print("pipeline");
    Ok(())
}
