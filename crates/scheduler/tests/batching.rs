//! Batch formation, output routing, `max_queue_delay` and fairness across models.

mod common;

use std::time::Duration;

use common::{FakeBackend, batch_inputs, doubled, scheduler, submit, submit_running, values};
use effnet_scheduler::{ModelConfig, ModelId, SchedulerConfig, SubmitOptions};
use tokio::time::Instant;

#[tokio::test]
async fn queued_entries_form_full_batches() {
    let models = [ModelConfig::new(4, 100), ModelConfig::new(4, 100)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 1000), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 1, &[100]).await;
    let first: Vec<_> = (1..=10)
        .map(|x| submit(&scheduler, 0, &[x]).unwrap())
        .collect();
    let second: Vec<_> = (201..=203)
        .map(|x| submit(&scheduler, 1, &[x]).unwrap())
        .collect();
    gate.open();

    assert_eq!(values(blocker).await.unwrap(), [200]);
    for (x, response) in (1..=10).zip(first) {
        assert_eq!(values(response).await.unwrap(), [x * 2]);
    }
    for (x, response) in (201..=203).zip(second) {
        assert_eq!(values(response).await.unwrap(), [x * 2]);
    }

    let calls = scheduler.backend().calls();
    let sizes = |model: usize| -> Vec<usize> {
        calls
            .iter()
            .filter(|call| call.model == ModelId::new(model))
            .map(|call| call.inputs.len())
            .collect()
    };
    assert_eq!(sizes(0), [4, 4, 2]);
    assert_eq!(sizes(1), [1, 3]);
    for call in &calls {
        let from_first = call.inputs.iter().all(|x| (1..=10).contains(x));
        assert_eq!(
            from_first,
            call.model == ModelId::new(0),
            "mixed batch {call:?}"
        );
    }
}

#[tokio::test]
async fn large_request_is_split_and_reassembled() {
    let models = [ModelConfig::new(3, 100)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 1000), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 0, &[0]).await;
    let small = submit(&scheduler, 0, &[1, 2]).unwrap();
    let large_inputs: Vec<i64> = (10..=16).collect();
    let large = submit(&scheduler, 0, &large_inputs).unwrap();
    let last = submit(&scheduler, 0, &[20]).unwrap();
    gate.open();

    assert_eq!(values(blocker).await.unwrap(), [0]);
    assert_eq!(values(small).await.unwrap(), [2, 4]);
    let large_outputs = large.await.unwrap();
    let large_values: Vec<i64> = large_outputs.iter().map(|output| output.value).collect();
    assert_eq!(large_values, doubled(&large_inputs));
    let batch_sizes: Vec<usize> = large_outputs
        .iter()
        .map(|output| output.timings.batch_size)
        .collect();
    assert_eq!(batch_sizes, [3, 3, 3, 3, 3, 3, 3]);
    assert_eq!(values(last).await.unwrap(), [40]);

    let batches = batch_inputs(&scheduler);
    assert_eq!(
        batches,
        [
            vec![0],
            vec![1, 2, 10],
            vec![11, 12, 13],
            vec![14, 15, 16],
            vec![20]
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn delay_holds_lone_request() {
    let models = [ModelConfig::new(4, 100).with_max_queue_delay(Duration::from_millis(10))];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 1000), &models);

    let submitted_at = Instant::now();
    let outputs = scheduler
        .infer(ModelId::new(0), vec![5], SubmitOptions::default())
        .await
        .unwrap();

    let calls = scheduler.backend().calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at - submitted_at, Duration::from_millis(10));
    assert_eq!(outputs[0].value, 10);
    assert_eq!(outputs[0].timings.queue_wait, Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn delay_skipped_for_full_batch() {
    let models = [ModelConfig::new(4, 100).with_max_queue_delay(Duration::from_millis(10))];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 1000), &models);

    let submitted_at = Instant::now();
    let responses: Vec<_> = (1..=4)
        .map(|x| submit(&scheduler, 0, &[x]).unwrap())
        .collect();
    for (x, response) in (1..=4).zip(responses) {
        assert_eq!(values(response).await.unwrap(), [x * 2]);
    }

    let calls = scheduler.backend().calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].inputs, [1, 2, 3, 4]);
    assert_eq!(calls[0].at, submitted_at);
}

#[tokio::test(start_paused = true)]
async fn zero_delay_dispatches_at_once() {
    let models = [ModelConfig::new(4, 100)];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 1000), &models);

    let submitted_at = Instant::now();
    let outputs = scheduler
        .infer(ModelId::new(0), vec![5], SubmitOptions::default())
        .await
        .unwrap();

    let calls = scheduler.backend().calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].at, submitted_at);
    assert_eq!(outputs[0].timings.queue_wait, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn close_flushes_delayed_batch() {
    let models = [ModelConfig::new(4, 100).with_max_queue_delay(Duration::from_secs(60))];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 1000), &models);

    let submitted_at = Instant::now();
    let response = submit(&scheduler, 0, &[3]).unwrap();
    scheduler.close();

    assert_eq!(values(response).await.unwrap(), [6]);
    assert_eq!(scheduler.backend().calls()[0].at, submitted_at);
}

#[tokio::test]
async fn flooded_model_cannot_starve_another() {
    const MODELS: usize = 3;
    const WORKERS: usize = 1;
    let models = [ModelConfig::new(4, 1000); MODELS];
    let (scheduler, _) = scheduler(
        FakeBackend::gated(),
        SchedulerConfig::new(WORKERS, 10_000),
        &models,
    );
    let gate = scheduler.backend().gate();

    let flood: Vec<_> = (0..300)
        .flat_map(|x| {
            [
                submit(&scheduler, 0, &[x]).unwrap(),
                submit(&scheduler, 2, &[x]).unwrap(),
            ]
        })
        .collect();
    scheduler.backend().wait_for_calls(1).await;
    let quiet = submit(&scheduler, 1, &[7]).unwrap();
    gate.open();

    assert_eq!(values(quiet).await.unwrap(), [14]);
    let calls = scheduler.backend().calls();
    let position = calls
        .iter()
        .position(|call| call.model == ModelId::new(1))
        .expect("quiet model was served");
    // Documented bound: the batches already running plus one batch of each other model.
    assert!(
        position <= WORKERS + (MODELS - 1),
        "quiet model served after {position} batches"
    );

    for response in flood {
        assert!(response.await.is_ok());
    }
}
