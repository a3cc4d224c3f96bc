//! Per-model batching queues feeding one shared inference budget.
//!
//! The [`Scheduler`] sits between request handlers and an inference engine.
//! It keeps one queue per model and forms batches of up to `max_batch_size`
//! images, optionally waiting up to `max_queue_delay` for a fuller batch.
//! At most `workers` batches run at once across all models, on blocking
//! threads, and models are served round-robin so that a flood on one model
//! cannot starve another.
//!
//! Work beyond the queue limits is rejected at submit time. Queued images
//! whose deadline passed or whose caller went away are dropped before they
//! run. A backend panic fails only the batch that raised it, and the
//! scheduler drains its work on shutdown. See [`Scheduler`] for the exact
//! policy and its bounds.
//!
//! The crate knows nothing of images, HTTP or ONNX: the engine is a
//! [`Backend`], and metrics are collected through an [`Observer`].
//!
//! # Example
//!
//! ```
//! use effnet_scheduler::{
//!     Backend, BackendError, ModelConfig, ModelId, ModelSpec, Scheduler, SchedulerConfig,
//!     SubmitOptions,
//! };
//!
//! /// Doubles every input.
//! struct Doubler;
//!
//! impl Backend for Doubler {
//!     type Input = f32;
//!     type Output = f32;
//!
//!     fn run_batch(&self, _model: ModelId, inputs: Vec<f32>) -> Result<Vec<f32>, BackendError> {
//!         Ok(inputs.into_iter().map(|x| x * 2.0).collect())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let models = vec![ModelSpec::new("lite0-fp32", ModelConfig::new(8, 64))];
//! let scheduler = Scheduler::new(Doubler, SchedulerConfig::new(2, 256), models)?;
//! let model = scheduler.model_id("lite0-fp32").expect("model is configured");
//!
//! let outputs = scheduler.infer(model, vec![1.0, 2.0, 3.0], SubmitOptions::default()).await?;
//! let values: Vec<f32> = outputs.iter().map(|output| output.value).collect();
//! assert_eq!(values, [2.0, 4.0, 6.0]);
//! assert_eq!(outputs[0].timings.batch_size, 3);
//!
//! scheduler.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config;
mod dispatch;
mod error;
mod observer;
mod queue;
mod scheduler;
mod slot;
mod state;

pub use config::{
    ConfigError, ModelConfig, ModelId, ModelSpec, Priority, SchedulerConfig, SubmitOptions,
};
pub use error::{AdmissionLimit, BackendError, ScheduleError};
pub use observer::{NoopObserver, Observer, Snapshot, Timed, Timings};
pub use scheduler::{ResponseFuture, Scheduler};

/// An inference engine that runs one batch of one model at a time.
///
/// `run_batch` blocks. The scheduler calls it on tokio's blocking threads,
/// never on the async runtime's worker threads, with up to
/// `SchedulerConfig::workers` calls running at once, possibly for the same
/// model.
pub trait Backend: Send + Sync + 'static {
    /// One image's preprocessed input.
    type Input: Send + 'static;
    /// One image's result.
    type Output: Send + 'static;

    /// Runs one batch for `model` and returns one output per input, in
    /// input order. An error, a panic or a wrong number of outputs fails
    /// every request in the batch and nothing else.
    fn run_batch(
        &self,
        model: ModelId,
        inputs: Vec<Self::Input>,
    ) -> Result<Vec<Self::Output>, BackendError>;
}
