//! The in-process ceiling: how many images per second this machine can
//! decode, preprocess and classify with no networking at all.
//!
//! It uses the server's own code and defaults: `effnet_imaging`'s
//! `decode_and_preprocess` on a pool of decode threads (as many as cores),
//! feeding `effnet_engine` sessions that share one global intra-op pool of
//! as many threads as cores, without spinning. Decoding runs ahead of
//! inference through a bounded channel, as in the server, so the two
//! overlap. Each batch size is timed for a fixed wall time after one warm-up
//! batch.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use effnet_engine::{Engine, EngineConfig, ModelSession};
use effnet_imaging::{Limits, PreprocessSpec};
use effnet_repository::{Manifest, Repository};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error(transparent)]
    Repository(#[from] effnet_repository::Error),
    #[error(transparent)]
    Engine(#[from] effnet_engine::Error),
    #[error("model {model} is not in the repository {root}")]
    UnknownModel { model: String, root: PathBuf },
    #[error("image {index} could not be decoded for {model}: {source}")]
    Image {
        model: String,
        index: usize,
        source: effnet_imaging::ImageError,
    },
}

/// Thread and timing settings of a ceiling measurement.
#[derive(Debug, Clone)]
pub struct CeilingSettings {
    pub library: PathBuf,
    pub repository: PathBuf,
    pub intra_op_threads: usize,
    pub decode_threads: usize,
    pub batch_sizes: Vec<usize>,
    /// Wall time each batch size is measured for.
    pub seconds_per_size: Duration,
}

/// The throughput of one model at each batch size.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCeiling {
    pub model: String,
    /// `(batch size, images per second)`.
    pub batches: Vec<(usize, f64)>,
}

// === impl ModelCeiling ===

impl ModelCeiling {
    /// The best `(batch size, images per second)`.
    pub fn best(&self) -> (usize, f64) {
        self.batches
            .iter()
            .copied()
            .fold((0, 0.0), |best, b| if b.1 > best.1 { b } else { best })
    }
}

/// The ceiling of a mix: images per second when a share `shares[m]` of the
/// images goes to a model that alone reaches `rates[m]` (the weighted
/// harmonic mean, since the models share one CPU).
pub fn mix_ceiling(shares: &[f64], rates: &[f64]) -> f64 {
    let seconds_per_image: f64 = shares.iter().zip(rates).map(|(s, r)| s / r).sum();
    1.0 / seconds_per_image
}

/// Measures each model in turn. Creates the process's one ONNX Runtime
/// environment, so it may be called once per process.
pub fn measure(
    settings: &CeilingSettings,
    models: &[String],
    images: &[Bytes],
) -> Result<Vec<ModelCeiling>, CeilingError> {
    let repository = Repository::open(&settings.repository)?;
    let engine = Engine::new(EngineConfig {
        library: settings.library.clone(),
        intra_op_threads: settings.intra_op_threads,
        spinning: false,
        instances_per_model: 1,
    })?;

    let mut results = Vec::with_capacity(models.len());
    for model in models {
        let entry = repository
            .models
            .get(model)
            .ok_or_else(|| CeilingError::UnknownModel {
                model: model.clone(),
                root: repository.root.clone(),
            })?;
        let session = engine.load(entry)?;
        let spec = preprocess_spec(&entry.manifest);
        check_images(model, images, &spec)?;

        let mut batches = Vec::with_capacity(settings.batch_sizes.len());
        for &size in &settings.batch_sizes {
            let rate = measure_batch(&session, &spec, images, size, settings)?;
            tracing::info!(model = %model, batch = size, images_per_s = rate, "ceiling measured");
            batches.push((size, rate));
        }
        results.push(ModelCeiling {
            model: model.clone(),
            batches,
        });
    }
    Ok(results)
}

/// The preprocessing the server derives from a manifest.
pub fn preprocess_spec(manifest: &Manifest) -> PreprocessSpec {
    PreprocessSpec {
        resolution: manifest.input.resolution,
        crop_padding: manifest.preprocessing.crop_padding,
        mean: manifest.preprocessing.mean,
        std: manifest.preprocessing.std,
    }
}

/// Decodes every image once, so that a bad file fails up front and not in
/// a decode thread during timing.
fn check_images(model: &str, images: &[Bytes], spec: &PreprocessSpec) -> Result<(), CeilingError> {
    for (index, image) in images.iter().enumerate() {
        effnet_imaging::decode_and_preprocess(image, &Limits::default(), spec).map_err(
            |source| CeilingError::Image {
                model: model.to_string(),
                index,
                source,
            },
        )?;
    }
    Ok(())
}

/// Images per second of one model at one batch size.
fn measure_batch(
    session: &ModelSession,
    spec: &PreprocessSpec,
    images: &[Bytes],
    size: usize,
    settings: &CeilingSettings,
) -> Result<f64, CeilingError> {
    session.warm_up(&[size])?;

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::sync_channel::<Vec<f32>>(2 * size);

    std::thread::scope(|scope| {
        for _ in 0..settings.decode_threads.max(1) {
            let tx = tx.clone();
            let (stop, next) = (stop.clone(), next.clone());
            scope.spawn(move || {
                let limits = Limits::default();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) % images.len();
                    // The images were all decoded once by `check_images`.
                    let Ok((tensor, _)) =
                        effnet_imaging::decode_and_preprocess(&images[i], &limits, spec)
                    else {
                        break;
                    };
                    if tx.send(tensor).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);

        let result = run_batches(session, &rx, size, settings.seconds_per_size);
        stop.store(true, Ordering::Relaxed);
        // Unblock decoders waiting on a full channel.
        drop(rx);
        result
    })
}

fn run_batches(
    session: &ModelSession,
    rx: &mpsc::Receiver<Vec<f32>>,
    size: usize,
    budget: Duration,
) -> Result<f64, CeilingError> {
    let start = Instant::now();
    let mut done = 0usize;
    let mut batch = Vec::with_capacity(size * session.image_len());
    while start.elapsed() < budget {
        batch.clear();
        for _ in 0..size {
            let Ok(tensor) = rx.recv() else {
                break;
            };
            batch.extend_from_slice(&tensor);
        }
        session.run(std::mem::take(&mut batch))?;
        batch = Vec::with_capacity(size * session.image_len());
        done += size;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Loads the `count` first images of `dir` (sorted by name).
pub fn load_images(dir: &Path, count: usize) -> std::io::Result<Vec<Bytes>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files.truncate(count);
    files
        .iter()
        .map(|file| std::fs::read(file).map(Bytes::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_of_equal_models() {
        assert_eq!(mix_ceiling(&[0.5, 0.5], &[100.0, 100.0]), 100.0);
    }

    #[test]
    fn mix_harmonic() {
        // Half the images at 100/s (5 ms each on average), half at 50/s
        // (10 ms each): 15 ms per two images.
        let rate = mix_ceiling(&[0.5, 0.5], &[100.0, 50.0]);

        assert!((rate - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn best_batch() {
        let ceiling = ModelCeiling {
            model: "m".into(),
            batches: vec![(1, 50.0), (8, 70.0), (32, 65.0)],
        };

        assert_eq!(ceiling.best(), (8, 70.0));
    }

    #[test]
    fn images_sorted_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jpg", "a.jpg", "c.jpg"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let images = load_images(dir.path(), 2).unwrap();

        assert_eq!(images, [Bytes::from("a.jpg"), Bytes::from("b.jpg")]);
    }
}
