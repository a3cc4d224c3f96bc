//! Admission control: queue limits, the in-flight limit, low priority and config checks.

mod common;

use std::time::Duration;

use common::{
    CountingObserver, FakeBackend, batch_inputs, scheduler, submit, submit_running, values,
};
use effnet_scheduler::{
    AdmissionLimit, ConfigError, ModelConfig, ModelId, ModelSpec, ScheduleError, Scheduler,
    SchedulerConfig, SubmitOptions,
};

#[tokio::test]
async fn model_queue_limit_rejects_at_once() {
    let models = [ModelConfig::new(2, 4)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1, 2]).await;
    let queued: Vec<_> = (3..=6)
        .map(|x| submit(&scheduler, 0, &[x]).unwrap())
        .collect();
    let rejected = submit(&scheduler, 0, &[7]).unwrap_err();

    let ScheduleError::Rejected {
        model,
        limit,
        max,
        retry_after,
    } = &rejected
    else {
        panic!("expected rejection, got {rejected:?}");
    };
    assert_eq!(&**model, "m0");
    assert_eq!(*limit, AdmissionLimit::ModelQueue);
    assert_eq!(*max, 4);
    assert!(*retry_after >= Duration::from_secs(1));
    assert_eq!(CountingObserver::count(&observer.rejected_queue), 1);
    assert_eq!(scheduler.snapshot().queue_depth, [4]);
    assert_eq!(scheduler.snapshot().in_flight, 6);

    gate.open();
    assert_eq!(values(running).await.unwrap(), [2, 4]);
    for response in queued {
        assert!(response.await.is_ok());
    }
    assert_eq!(
        values(submit(&scheduler, 0, &[7]).unwrap()).await.unwrap(),
        [14]
    );
}

#[tokio::test]
async fn in_flight_limit_rejects_at_once() {
    let models = [ModelConfig::new(2, 10), ModelConfig::new(2, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 3), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1, 2]).await;
    let queued = submit(&scheduler, 1, &[3]).unwrap();
    let rejected = submit(&scheduler, 1, &[4]).unwrap_err();

    assert!(
        matches!(
            rejected,
            ScheduleError::Rejected {
                limit: AdmissionLimit::InFlight,
                max: 3,
                ..
            }
        ),
        "expected in-flight rejection, got {rejected:?}"
    );
    assert_eq!(CountingObserver::count(&observer.rejected_in_flight), 1);

    gate.open();
    assert!(running.await.is_ok());
    assert!(queued.await.is_ok());
    scheduler.drain().await;
    assert_eq!(scheduler.snapshot().in_flight, 0);
    assert_eq!(
        values(submit(&scheduler, 1, &[4]).unwrap()).await.unwrap(),
        [8]
    );
}

#[tokio::test]
async fn oversized_request_is_too_large() {
    let models = [ModelConfig::new(2, 4)];
    let (scheduler, observer) =
        scheduler(FakeBackend::open(), SchedulerConfig::new(1, 100), &models);

    let error = submit(&scheduler, 0, &[1, 2, 3, 4, 5]).unwrap_err();

    assert!(
        matches!(
            error,
            ScheduleError::TooLarge {
                limit: AdmissionLimit::ModelQueue,
                images: 5,
                max: 4,
                ..
            }
        ),
        "expected too large, got {error:?}"
    );
    assert_eq!(error.retry_after(), None);
    assert_eq!(CountingObserver::count(&observer.rejected_queue), 1);
}

#[tokio::test]
async fn empty_request_completes_at_once() {
    let models = [ModelConfig::new(2, 4)];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 100), &models);

    assert_eq!(
        values(submit(&scheduler, 0, &[]).unwrap()).await.unwrap(),
        []
    );
    assert!(scheduler.backend().calls().is_empty());
}

#[tokio::test]
async fn unknown_model_is_rejected() {
    let models = [ModelConfig::new(2, 4)];
    let (scheduler, _) = scheduler(FakeBackend::open(), SchedulerConfig::new(1, 100), &models);

    let error = submit(&scheduler, 1, &[1]).unwrap_err();

    assert_eq!(
        error,
        ScheduleError::UnknownModel {
            model: ModelId::new(1),
            models: 1
        }
    );
}

#[tokio::test]
async fn low_priority_skipped_while_normal_queued() {
    let models = [ModelConfig::new(1, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1]).await;
    let queued = submit(&scheduler, 0, &[2]).unwrap();
    let skipped = scheduler
        .submit(ModelId::new(0), vec![3], SubmitOptions::low_priority())
        .unwrap_err();

    assert!(
        matches!(skipped, ScheduleError::Skipped { .. }),
        "expected skip, got {skipped:?}"
    );
    assert_eq!(CountingObserver::count(&observer.skipped), 1);

    gate.open();
    assert!(running.await.is_ok());
    assert!(queued.await.is_ok());
}

#[tokio::test]
async fn low_priority_skipped_above_half_in_flight() {
    let models = [ModelConfig::new(2, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 4), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1, 2]).await;
    let skipped = scheduler
        .submit(ModelId::new(0), vec![3], SubmitOptions::low_priority())
        .unwrap_err();

    assert!(
        matches!(skipped, ScheduleError::Skipped { .. }),
        "expected skip, got {skipped:?}"
    );
    assert_eq!(CountingObserver::count(&observer.skipped), 1);

    gate.open();
    assert!(running.await.is_ok());
}

#[tokio::test]
async fn low_priority_runs_after_normal() {
    // Round-robin alone would serve model 1 first after the blocker on model 0.
    let models = [ModelConfig::new(4, 10), ModelConfig::new(4, 10)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 0, &[1]).await;
    let low = scheduler
        .submit(ModelId::new(1), vec![50], SubmitOptions::low_priority())
        .unwrap();
    let normal = submit(&scheduler, 0, &[2]).unwrap();
    gate.open();

    assert_eq!(values(blocker).await.unwrap(), [2]);
    assert_eq!(values(normal).await.unwrap(), [4]);
    assert_eq!(values(low).await.unwrap(), [100]);
    let batches = batch_inputs(&scheduler);
    assert_eq!(batches, [vec![1], vec![2], vec![50]]);
}

#[tokio::test]
async fn config_rejects_invalid_values() {
    let model = ModelSpec::new("m0", ModelConfig::new(2, 4));
    let cases = [
        (
            SchedulerConfig::new(0, 10),
            vec![model.clone()],
            ConfigError::Zero { field: "workers" },
        ),
        (
            SchedulerConfig::new(1, 0),
            vec![model.clone()],
            ConfigError::Zero {
                field: "max_in_flight",
            },
        ),
        (SchedulerConfig::new(1, 10), vec![], ConfigError::NoModels),
        (
            SchedulerConfig::new(1, 10),
            vec![ModelSpec::new("m0", ModelConfig::new(0, 4))],
            ConfigError::ModelZero {
                model: "m0".into(),
                field: "max_batch_size",
            },
        ),
        (
            SchedulerConfig::new(1, 10),
            vec![ModelSpec::new("m0", ModelConfig::new(2, 0))],
            ConfigError::ModelZero {
                model: "m0".into(),
                field: "queue_limit",
            },
        ),
        (
            SchedulerConfig::new(1, 10),
            vec![model.clone(), model.clone()],
            ConfigError::DuplicateModel { name: "m0".into() },
        ),
    ];

    for (config, models, expected) in cases {
        let error = Scheduler::new(FakeBackend::open(), config, models).unwrap_err();
        assert_eq!(error, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_follows_batch_duration() {
    let models = [ModelConfig::new(1, 2)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let slow = submit_running(&scheduler, 0, &[1]).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    gate.release(1);
    assert!(slow.await.is_ok());
    scheduler.drain().await;

    let running = submit_running(&scheduler, 0, &[2]).await;
    let queued = [
        submit(&scheduler, 0, &[3]).unwrap(),
        submit(&scheduler, 0, &[4]).unwrap(),
    ];
    let rejected = submit(&scheduler, 0, &[5]).unwrap_err();

    // Two queued batches at the 3 s mean batch duration, on one worker.
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(6)));

    gate.open();
    assert!(running.await.is_ok());
    for response in queued {
        assert!(response.await.is_ok());
    }
}
