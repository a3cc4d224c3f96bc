//! Prints decode and preprocess times over a directory of images.
//!
//! ```text
//! cargo run --release -p effnet-imaging --example preprocess_bench -- [DIR] [RESOLUTION] [--each]
//! ```
//!
//! DIR defaults to `$EFFNET_IMAGENET_SAMPLE/images` and RESOLUTION to 224. Each image is
//! decoded and preprocessed once after one warm-up pass over all files; `--each` also
//! prints one line per image. Times are wall clock on one thread.

use std::path::PathBuf;
use std::time::Duration;

use effnet_imaging::{Limits, PreprocessSpec, decode_and_preprocess};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = None;
    let mut resolution = 224;
    let mut each = false;
    for arg in std::env::args().skip(1) {
        if arg == "--each" {
            each = true;
        } else if let Ok(value) = arg.parse() {
            resolution = value;
        } else {
            dir = Some(PathBuf::from(arg));
        }
    }
    let dir = match dir {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var("EFFNET_IMAGENET_SAMPLE")?).join("images"),
    };

    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let images: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|path| std::fs::read(&path).map(|bytes| (path, bytes)))
        .collect::<Result<_, _>>()?;

    let limits = Limits::default();
    let spec = PreprocessSpec::efficientnet_lite(resolution);
    for (_, bytes) in &images {
        let _ = decode_and_preprocess(bytes, &limits, &spec);
    }

    let mut decode_times = Vec::new();
    let mut preprocess_times = Vec::new();
    let mut failures = 0;
    for (path, bytes) in &images {
        match decode_and_preprocess(bytes, &limits, &spec) {
            Ok((_, timings)) => {
                if each {
                    println!(
                        "{:<48} decode {:>7.3} ms  preprocess {:>6.3} ms",
                        path.file_name().unwrap_or_default().to_string_lossy(),
                        millis(timings.decode),
                        millis(timings.preprocess),
                    );
                }
                decode_times.push(timings.decode);
                preprocess_times.push(timings.preprocess);
            }
            Err(error) => {
                failures += 1;
                println!("{}: {error}", path.display());
            }
        }
    }

    println!(
        "{} images from {} at {resolution}x{resolution}, {failures} failed",
        decode_times.len(),
        dir.display()
    );
    print_summary("decode", &mut decode_times);
    print_summary("preprocess", &mut preprocess_times);
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print_summary(stage: &str, times: &mut [Duration]) {
    if times.is_empty() {
        return;
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let percentile = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{stage:<10} mean {:>7.3} ms  p50 {:>7.3} ms  p95 {:>7.3} ms  max {:>7.3} ms",
        millis(mean),
        millis(percentile(0.5)),
        millis(percentile(0.95)),
        millis(times[times.len() - 1]),
    );
}
