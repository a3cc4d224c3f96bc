//! INT8 drift monitoring: a sampled INT8 request is run again on the FP32
//! model of the same variant, and the two top-1 results are compared.
//!
//! The shadow run reuses the request's preprocessed tensors, which fit the
//! twin because both precisions of a variant share resolution and
//! preprocessing. It is submitted at low priority, so the scheduler runs it
//! only while no client image is queued and skips it (counted as
//! `skipped`) otherwise. Its batches still occupy a batch worker while they
//! run, so a client request arriving then can wait for up to
//! `batch_workers` shadow batches.

use std::sync::Arc;

use effnet_repository::Precision;
use effnet_scheduler::{ModelId, ScheduleError, Scheduler, SubmitOptions};

use crate::{
    metrics::{Metrics, ShadowResult},
    models::ModelRegistry,
    service::{ClassifiedImage, EngineBackend},
    topk,
};

/// One sampled INT8 request waiting for its FP32 shadow run.
pub struct ShadowRun {
    /// Registry index of the INT8 model.
    model: usize,
    /// Registry index of its FP32 twin.
    twin: usize,
    /// Top-1 class and probability of each image on the INT8 model.
    int8_top1: Vec<(usize, f32)>,
    inputs: Vec<Vec<f32>>,
}

/// Finds the FP32 model of the same variant for every INT8 model, by registry index.
pub fn twins(models: &ModelRegistry) -> Vec<Option<usize>> {
    models
        .iter()
        .map(|model| {
            if model.manifest.precision != Precision::Int8 {
                return None;
            }
            models
                .iter()
                .find(|other| {
                    other.manifest.precision == Precision::Fp32
                        && other.manifest.variant == model.manifest.variant
                })
                .map(|twin| twin.index)
        })
        .collect()
}

/// Returns the best class of one image's logits and its softmax probability.
fn top1(logits: &[f32]) -> (usize, f32) {
    let probabilities = topk::softmax(logits);
    let best = topk::top_k_indices(&probabilities, 1)
        .first()
        .copied()
        .unwrap_or(0);
    (best, probabilities.get(best).copied().unwrap_or(0.0))
}

// === impl ShadowRun ===

impl ShadowRun {
    pub fn new(
        model: usize,
        twin: usize,
        images: &[ClassifiedImage],
        inputs: Vec<Vec<f32>>,
    ) -> Self {
        Self {
            model,
            twin,
            int8_top1: images.iter().map(|image| top1(&image.logits)).collect(),
            inputs,
        }
    }

    /// Submits the run at low priority and spawns a task that awaits it and
    /// records the comparison. Returns at once.
    pub fn spawn(
        self,
        scheduler: &Scheduler<EngineBackend>,
        metrics: Arc<Metrics>,
        deadline: tokio::time::Instant,
    ) {
        let images = self.inputs.len();
        let twin_ready = scheduler
            .backend()
            .models()
            .get(self.twin)
            .is_some_and(|twin| twin.session().is_ok());
        if !twin_ready {
            metrics.record_shadow(self.model, ShadowResult::Skipped, images);
            return;
        }

        let options = SubmitOptions::low_priority().with_deadline(deadline);
        let pending = match scheduler.submit(ModelId::new(self.twin), self.inputs, options) {
            Ok(pending) => pending,
            Err(error) => {
                record_error(&metrics, self.model, &error, images);
                return;
            }
        };

        let model = self.model;
        let int8_top1 = self.int8_top1;
        tokio::spawn(async move {
            match pending.await {
                Ok(outputs) => {
                    for (output, (int8_class, int8_probability)) in outputs.iter().zip(int8_top1) {
                        let (fp32_class, fp32_probability) = top1(&output.value);
                        let result = if fp32_class == int8_class {
                            ShadowResult::Agree
                        } else {
                            ShadowResult::Disagree
                        };
                        metrics.record_shadow(model, result, 1);
                        metrics.record_shadow_difference(
                            model,
                            (int8_probability - fp32_probability).abs(),
                        );
                    }
                }
                Err(error) => record_error(&metrics, model, &error, images),
            }
        });
    }
}

/// Counts a shadow run the scheduler did not complete: turned away because
/// it was busy (skipped), or failed.
fn record_error(metrics: &Metrics, model: usize, error: &ScheduleError, images: usize) {
    let result = match error {
        ScheduleError::Skipped { .. }
        | ScheduleError::Rejected { .. }
        | ScheduleError::ShuttingDown
        | ScheduleError::DeadlineExceeded { .. }
        | ScheduleError::Cancelled { .. } => ShadowResult::Skipped,
        _ => {
            tracing::warn!(%error, "int8 shadow run failed");
            ShadowResult::Failed
        }
    };
    metrics.record_shadow(model, result, images);
}
