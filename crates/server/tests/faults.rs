//! Panic containment end to end, with the test-only `fault-injection`
//! feature: a request whose id starts with `fault-injection-panic` makes the
//! engine backend panic on its batch.
//!
//! Run with `cargo test -p effnet-serve --features fault-injection --test faults`.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::blocking::Client;
use serde_json::Value;

fn classify(server: &TestServer, model: &str, request_id: &str) -> (u16, Value) {
    let (file, _) = &common::sample_labels()[0];
    let response = Client::new()
        .post(server.url(&format!("/v1/models/{model}/classify")))
        .header("x-request-id", request_id)
        .body(common::sample_image(file))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn backend_panic_fails_only_its_request() {
    let server = TestServer::start(&[]);

    // Different models never share a batch, so only the poisoned one fails.
    let (panicked, normal) = std::thread::scope(|scope| {
        let panicked = scope.spawn(|| {
            classify(
                &server,
                "efficientnet-lite0-int8",
                "fault-injection-panic-1",
            )
        });
        let normal = scope.spawn(|| classify(&server, "efficientnet-lite0-fp32", "concurrent-1"));
        (panicked.join().unwrap(), normal.join().unwrap())
    });

    let (status, body) = panicked;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("panic"), "{message}");
    assert!(!message.contains("fault injection"), "{message}");
    assert_eq!(normal.0, 200, "{}", normal.1);

    for i in 0..3 {
        let (status, body) = classify(&server, "efficientnet-lite0-int8", &format!("after-{i}"));
        assert_eq!(status, 200, "{body}");
    }

    let logs = server.logs.lock().unwrap();
    let logged = std::iter::from_fn(|| logs.recv_timeout(Duration::from_secs(2)).ok())
        .any(|line| line.contains("inference failed") && line.contains("fault-injection-panic-1"));
    assert!(logged, "no error log line with the request id");
}
