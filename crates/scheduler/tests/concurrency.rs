//! Many tasks submitting, cancelling and timing out at once on a multi-threaded runtime.

mod common;

use std::{sync::Arc, time::Duration};

use common::{FakeBackend, doubled, scheduler};
use effnet_scheduler::{ModelConfig, ModelId, ScheduleError, SchedulerConfig, SubmitOptions};
use tokio::time::Instant;

/// Encodes the model in each input so that calls can be checked for mixed models.
const MODEL_STRIDE: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_settle() {
    const TASKS: i64 = 16;
    const REQUESTS_PER_TASK: i64 = 25;
    let models = [
        ModelConfig::new(4, 64),
        ModelConfig::new(3, 64).with_max_queue_delay(Duration::from_millis(1)),
        ModelConfig::new(8, 64),
    ];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(2, 128), &models);
    let scheduler = Arc::new(scheduler);

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move {
                for request in 0..REQUESTS_PER_TASK {
                    let model = usize::try_from((task + request) % 3).unwrap();
                    let images = 1 + request % 5;
                    let inputs: Vec<i64> = (0..images)
                        .map(|k| model as i64 * MODEL_STRIDE + task * 1000 + request * 10 + k)
                        .collect();
                    let mut options = SubmitOptions::default();
                    if request % 4 == 0 {
                        options = options.with_deadline(Instant::now() + Duration::from_millis(1));
                    }

                    let response =
                        match scheduler.submit(ModelId::new(model), inputs.clone(), options) {
                            Ok(response) => response,
                            Err(ScheduleError::Rejected { .. }) => continue,
                            Err(error) => panic!("unexpected submit error {error:?}"),
                        };
                    if request % 7 == 0 {
                        drop(response);
                        continue;
                    }
                    match response.await {
                        Ok(outputs) => {
                            let values: Vec<i64> =
                                outputs.iter().map(|output| output.value).collect();
                            assert_eq!(values, doubled(&inputs));
                        }
                        Err(ScheduleError::DeadlineExceeded { .. }) => {}
                        Err(error) => panic!("unexpected response error {error:?}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    scheduler.drain().await;

    let snapshot = scheduler.snapshot();
    assert_eq!(snapshot.in_flight, 0);
    assert_eq!(snapshot.running_batches, 0);
    assert_eq!(snapshot.queue_depth, [0, 0, 0]);
    let calls = scheduler.backend().calls();
    assert!(!calls.is_empty());
    for call in calls {
        assert!(call.inputs.len() <= models[call.model.index()].max_batch_size);
        for input in &call.inputs {
            assert_eq!(
                input / MODEL_STRIDE,
                call.model.index() as i64,
                "mixed batch {call:?}"
            );
        }
    }
}

#[tokio::test]
async fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let (scheduler, _) = scheduler(
        FakeBackend::open(),
        SchedulerConfig::new(1, 8),
        &[ModelConfig::new(1, 8)],
    );

    let response = scheduler
        .submit(ModelId::new(0), vec![1], SubmitOptions::default())
        .unwrap();
    let inference = scheduler.infer(ModelId::new(0), vec![2], SubmitOptions::default());
    let drain = scheduler.drain();

    assert_send_sync(&scheduler);
    assert_send(&response);
    assert_send(&inference);
    assert_send(&drain);
}
