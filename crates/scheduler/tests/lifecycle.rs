//! Deadlines, cancellation, backend failures, shutdown and dropping the scheduler.

mod common;

use std::time::Duration;

use common::{
    CountingObserver, ERROR_INPUT, FakeBackend, PANIC_INPUT, batch_inputs, scheduler, submit,
    submit_running, values,
};
use effnet_scheduler::{ModelConfig, ModelId, ScheduleError, SchedulerConfig, SubmitOptions};
use tokio::time::{Instant, timeout};

#[tokio::test(start_paused = true)]
async fn deadline_expires_behind_slow_batch() {
    let models = [ModelConfig::new(4, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 0, &[1]).await;
    let deadline = Instant::now() + Duration::from_millis(50);
    let late = scheduler
        .submit(
            ModelId::new(0),
            vec![2],
            SubmitOptions::default().with_deadline(deadline),
        )
        .unwrap();
    tokio::time::advance(Duration::from_millis(100)).await;
    gate.open();

    assert!(blocker.await.is_ok());
    let error = late.await.unwrap_err();
    assert_eq!(
        error,
        ScheduleError::DeadlineExceeded { model: "m0".into() }
    );
    scheduler.drain().await;
    assert_eq!(CountingObserver::count(&observer.expired), 1);
    let batches = batch_inputs(&scheduler);
    assert_eq!(batches, [vec![1]]);
    assert_eq!(scheduler.snapshot().in_flight, 0);
}

#[tokio::test]
async fn dropped_response_never_reaches_backend() {
    let models = [ModelConfig::new(4, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 0, &[1]).await;
    let abandoned = submit(&scheduler, 0, &[7, 8]).unwrap();
    drop(abandoned);

    assert_eq!(CountingObserver::count(&observer.cancelled), 2);
    assert_eq!(scheduler.snapshot().queue_depth, [0]);
    assert_eq!(scheduler.snapshot().in_flight, 1);

    gate.open();
    assert!(blocker.await.is_ok());
    assert_eq!(
        values(submit(&scheduler, 0, &[3]).unwrap()).await.unwrap(),
        [6]
    );
    let batches = batch_inputs(&scheduler);
    assert_eq!(batches, [vec![1], vec![3]]);
}

#[tokio::test]
async fn panic_fails_only_its_batch() {
    let models = [ModelConfig::new(1, 10)];
    let (scheduler, observer) =
        scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let panicking = submit(&scheduler, 0, &[PANIC_INPUT]).unwrap();
    let next = submit(&scheduler, 0, &[5]).unwrap();
    gate.open();

    let error = panicking.await.unwrap_err();
    assert_eq!(
        error,
        ScheduleError::Panicked {
            model: "m0".into(),
            message: "marked input in batch".into()
        }
    );
    assert_eq!(values(next).await.unwrap(), [10]);
    assert_eq!(
        values(submit(&scheduler, 0, &[6]).unwrap()).await.unwrap(),
        [12]
    );
    // Outcomes are sent before the observer and the counts are updated.
    scheduler.drain().await;
    assert_eq!(CountingObserver::count(&observer.failed_batches), 1);
    assert_eq!(CountingObserver::count(&observer.batches), 2);
}

#[tokio::test]
async fn backend_error_fails_whole_request() {
    // The request spans two batches: the first fails, so the second never runs.
    let models = [ModelConfig::new(2, 10)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let blocker = submit_running(&scheduler, 0, &[1]).await;
    let failing = submit(&scheduler, 0, &[ERROR_INPUT, 2, 3, 4]).unwrap();
    gate.open();

    assert!(blocker.await.is_ok());
    let error = failing.await.unwrap_err();
    assert_eq!(
        error,
        ScheduleError::Backend {
            model: "m0".into(),
            message: "marked input in batch".into()
        }
    );
    assert_eq!(
        values(submit(&scheduler, 0, &[5]).unwrap()).await.unwrap(),
        [10]
    );
    let batches = batch_inputs(&scheduler);
    assert_eq!(batches, [vec![1], vec![ERROR_INPUT, 2], vec![5]]);
    scheduler.drain().await;
    assert_eq!(scheduler.snapshot().in_flight, 0);
}

#[tokio::test]
async fn shutdown_rejects_then_drains() {
    let models = [ModelConfig::new(1, 10)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1]).await;
    let queued = submit(&scheduler, 0, &[2]).unwrap();
    scheduler.close();

    assert_eq!(
        submit(&scheduler, 0, &[3]).unwrap_err(),
        ScheduleError::ShuttingDown
    );
    assert!(scheduler.snapshot().closed);
    let drain = scheduler.drain();
    tokio::pin!(drain);
    assert!(
        timeout(Duration::ZERO, &mut drain).await.is_err(),
        "drain finished with work queued"
    );

    gate.open();
    drain.await;
    let running = timeout(Duration::ZERO, running)
        .await
        .expect("running request has its outcome");
    let queued = timeout(Duration::ZERO, queued)
        .await
        .expect("queued request has its outcome");
    assert_eq!(running.unwrap()[0].value, 2);
    assert_eq!(queued.unwrap()[0].value, 4);
    assert_eq!(scheduler.snapshot().in_flight, 0);
}

#[tokio::test]
async fn dropped_scheduler_cancels_queued() {
    let models = [ModelConfig::new(1, 10)];
    let (scheduler, _) = scheduler(FakeBackend::gated(), SchedulerConfig::new(1, 100), &models);
    let gate = scheduler.backend().gate();

    let running = submit_running(&scheduler, 0, &[1]).await;
    let queued = submit(&scheduler, 0, &[2]).unwrap();
    drop(scheduler);

    assert_eq!(
        queued.await.unwrap_err(),
        ScheduleError::Cancelled { model: "m0".into() }
    );
    gate.open();
    assert_eq!(values(running).await.unwrap(), [2]);
}
