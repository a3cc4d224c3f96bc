//! Fake backend, counting observer and helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::{
    Arc, Condvar, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use effnet_scheduler::{
    AdmissionLimit, Backend, BackendError, ModelConfig, ModelId, ModelSpec, Observer,
    ResponseFuture, ScheduleError, Scheduler, SchedulerConfig, SubmitOptions,
};
use tokio::{sync::Notify, time::Instant};

/// Input that makes the fake backend panic.
pub const PANIC_INPUT: i64 = -1;
/// Input that makes the fake backend return an error.
pub const ERROR_INPUT: i64 = -2;

/// Backend that returns each input doubled and records every call.
pub struct FakeBackend {
    calls: Mutex<Vec<Call>>,
    started: Notify,
    gate: Arc<Gate>,
}

/// One `run_batch` call as the fake backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub model: ModelId,
    pub inputs: Vec<i64>,
    /// Time on the tokio clock when the call started.
    pub at: Instant,
}

/// Blocks backend calls until the test releases them, so that tests decide
/// when a batch finishes.
pub struct Gate {
    /// Calls that may still pass; `None` lets every call pass.
    permits: Mutex<Option<usize>>,
    changed: Condvar,
}

/// Observer that counts events.
#[derive(Default)]
pub struct CountingObserver {
    pub batches: AtomicUsize,
    pub failed_batches: AtomicUsize,
    pub finished_entries: AtomicUsize,
    pub rejected_queue: AtomicUsize,
    pub rejected_in_flight: AtomicUsize,
    pub expired: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub skipped: AtomicUsize,
}

// === impl FakeBackend ===

impl FakeBackend {
    /// Creates a backend whose calls all pass at once.
    pub fn open() -> Self {
        Self::with_gate(None)
    }

    /// Creates a backend whose calls block until the gate releases them.
    pub fn gated() -> Self {
        Self::with_gate(Some(0))
    }

    fn with_gate(permits: Option<usize>) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            started: Notify::new(),
            gate: Arc::new(Gate {
                permits: Mutex::new(permits),
                changed: Condvar::new(),
            }),
        }
    }

    pub fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.gate)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until at least `count` calls have started.
    pub async fn wait_for_calls(&self, count: usize) {
        loop {
            let notified = self.started.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.calls.lock().unwrap().len() >= count {
                return;
            }
            notified.await;
        }
    }
}

impl Backend for FakeBackend {
    type Input = i64;
    type Output = i64;

    fn run_batch(&self, model: ModelId, inputs: Vec<i64>) -> Result<Vec<i64>, BackendError> {
        self.calls.lock().unwrap().push(Call {
            model,
            inputs: inputs.clone(),
            at: Instant::now(),
        });
        self.started.notify_waiters();
        self.gate.pass();

        if inputs.contains(&PANIC_INPUT) {
            panic!("marked input in batch");
        }
        if inputs.contains(&ERROR_INPUT) {
            return Err(BackendError::new("marked input in batch"));
        }
        Ok(inputs.into_iter().map(|x| x * 2).collect())
    }
}

// === impl Gate ===

impl Gate {
    /// Lets `count` more calls pass.
    pub fn release(&self, count: usize) {
        let mut permits = self.permits.lock().unwrap();
        if let Some(permits) = permits.as_mut() {
            *permits += count;
        }
        self.changed.notify_all();
    }

    /// Lets every call pass from now on. Tests must open the gate before
    /// returning, because the runtime waits for blocked calls at shutdown.
    pub fn open(&self) {
        *self.permits.lock().unwrap() = None;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut permits = self.permits.lock().unwrap();
        loop {
            match permits.as_mut() {
                None => return,
                Some(0) => permits = self.changed.wait(permits).unwrap(),
                Some(count) => {
                    *count -= 1;
                    return;
                }
            }
        }
    }
}

// === impl CountingObserver ===

impl CountingObserver {
    pub fn count(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

impl Observer for CountingObserver {
    fn batch_executed(&self, _model: ModelId, _size: usize, _duration: std::time::Duration) {
        self.batches.fetch_add(1, Ordering::SeqCst);
    }

    fn batch_failed(&self, _model: ModelId, _size: usize) {
        self.failed_batches.fetch_add(1, Ordering::SeqCst);
    }

    fn entry_finished(&self, _model: ModelId, _queue_wait: std::time::Duration) {
        self.finished_entries.fetch_add(1, Ordering::SeqCst);
    }

    fn rejected(&self, _model: ModelId, limit: AdmissionLimit) {
        let counter = match limit {
            AdmissionLimit::ModelQueue => &self.rejected_queue,
            AdmissionLimit::InFlight => &self.rejected_in_flight,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn expired(&self, _model: ModelId, images: usize) {
        self.expired.fetch_add(images, Ordering::SeqCst);
    }

    fn cancelled(&self, _model: ModelId, images: usize) {
        self.cancelled.fetch_add(images, Ordering::SeqCst);
    }

    fn skipped(&self, _model: ModelId) {
        self.skipped.fetch_add(1, Ordering::SeqCst);
    }
}

// === helpers ===

/// Creates a scheduler over `backend` with models named m0, m1, ... and a counting observer.
pub fn scheduler(
    backend: FakeBackend,
    config: SchedulerConfig,
    models: &[ModelConfig],
) -> (Scheduler<FakeBackend>, Arc<CountingObserver>) {
    let specs = models
        .iter()
        .enumerate()
        .map(|(index, config)| ModelSpec::new(format!("m{index}"), *config))
        .collect();
    let observer = Arc::new(CountingObserver::default());
    let scheduler = Scheduler::with_observer(backend, config, specs, observer.clone())
        .expect("test config is valid");
    (scheduler, observer)
}

/// Submits a normal-priority request.
pub fn submit(
    scheduler: &Scheduler<FakeBackend>,
    model: usize,
    inputs: &[i64],
) -> Result<ResponseFuture<FakeBackend>, ScheduleError> {
    scheduler.submit(
        ModelId::new(model),
        inputs.to_vec(),
        SubmitOptions::default(),
    )
}

/// Awaits a response and returns its output values.
pub async fn values(response: ResponseFuture<FakeBackend>) -> Result<Vec<i64>, ScheduleError> {
    let outputs = response.await?;
    Ok(outputs.into_iter().map(|output| output.value).collect())
}

/// Returns `inputs` doubled, as the fake backend computes them.
pub fn doubled(inputs: &[i64]) -> Vec<i64> {
    inputs.iter().map(|x| x * 2).collect()
}

/// Submits a request and waits until the backend has started its batch, which
/// then stays blocked in a gated backend.
pub async fn submit_running(
    scheduler: &Scheduler<FakeBackend>,
    model: usize,
    inputs: &[i64],
) -> ResponseFuture<FakeBackend> {
    let calls = scheduler.backend().calls().len();
    let response = submit(scheduler, model, inputs).expect("blocking request is admitted");
    scheduler.backend().wait_for_calls(calls + 1).await;
    response
}

/// Returns the inputs of every backend call so far, in call order.
pub fn batch_inputs(scheduler: &Scheduler<FakeBackend>) -> Vec<Vec<i64>> {
    scheduler
        .backend()
        .calls()
        .into_iter()
        .map(|call| call.inputs)
        .collect()
}
