//! `/metrics` through real servers: exact request, stage and batch counts,
//! online accuracy from feedback, INT8 shadow agreement and skips, and a
//! bounded number of series. Each test starts its own server with only the
//! models it needs, so that its counts are exact.

mod common;

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::TestServer;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const LITE0_FP32: &str = "efficientnet-lite0-fp32";
const LITE0_INT8: &str = "efficientnet-lite0-int8";

/// Starts a server whose configuration file enables only `models`, with
/// `server` lines under `[server]` and `model_defaults` under
/// `[models.default]`. The temporary directory must outlive the server.
fn start(models: &[&str], server: &str, model_defaults: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(
        file,
        "[server]\n{server}\n[models.default]\nenabled = false\n{model_defaults}"
    )
    .unwrap();
    for model in models {
        writeln!(file, "[models.{model}]\nenabled = true").unwrap();
    }
    let server = TestServer::start(&["--config", path.to_str().unwrap()]);
    (server, dir)
}

fn shark() -> (Vec<u8>, usize) {
    let (file, index) = common::sample_labels()
        .into_iter()
        .find(|(file, _)| file.contains("great_white_shark"))
        .unwrap();
    (common::sample_image(&file), index)
}

fn classify(server: &TestServer, model: &str, query: &str, image: &[u8]) -> (u16, Value) {
    let response = Client::new()
        .post(server.url(&format!("/v1/models/{model}/classify{query}")))
        .body(image.to_vec())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn scrape(server: &TestServer) -> String {
    let response = Client::new().get(server.url("/metrics")).send().unwrap();
    assert_eq!(response.status(), 200);
    response.text().unwrap()
}

/// Sums the samples of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(key, expected)| label_text.contains(&format!("{key}=\"{expected}\"")));
            matches.then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// Scrapes until `done` holds for the metrics text, for counts that move
/// after the response (shadow runs); gives up after 60 s.
fn scrape_until(server: &TestServer, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = scrape(server);
        if done(&text) || started.elapsed() > Duration::from_secs(60) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .count()
}

#[test]
fn request_and_batch_counts_exact() {
    let (server, _dir) = start(
        &[LITE0_FP32],
        "batch_workers = 1",
        "max_batch_size = 1\nqueue_limit = 4",
    );
    let (image, _) = shark();
    let model = [("model", LITE0_FP32)];

    // Successes, a client error with a known model, one with an unknown model.
    for _ in 0..3 {
        assert_eq!(classify(&server, LITE0_FP32, "", &image).0, 200);
    }
    assert_eq!(classify(&server, LITE0_FP32, "?top_k=0", &image).0, 400);
    assert_eq!(classify(&server, "no-such-model", "", &image).0, 404);

    // Concurrent 4-image requests against a queue of 4 images: all but the
    // first of each round are likely rejected. Rounds repeat until one is.
    let body = json!({ "images": vec![base64(&image); 4] }).to_string();
    let (ok, rejected) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for _ in 0..10 {
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let status = Client::new()
                        .post(server.url(&format!("/v1/models/{LITE0_FP32}/classify")))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .unwrap()
                        .status()
                        .as_u16();
                    match status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => rejected.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected status {other}"),
                    };
                });
            }
        });
        if rejected.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    let (ok, rejected) = (ok.load(Ordering::Relaxed), rejected.load(Ordering::Relaxed));
    assert!(rejected > 0, "no request was rejected");

    let text = scrape(&server);
    let requests = |outcome: &str| {
        sample(
            &text,
            "effnet_requests_total",
            &[model[0], ("protocol", "rest"), ("outcome", outcome)],
        )
    };
    let images = |outcome: &str| {
        sample(
            &text,
            "effnet_request_images_total",
            &[model[0], ("outcome", outcome)],
        )
    };
    let success_images = 3 + 4 * ok;
    assert_eq!(requests("success"), (3 + ok) as f64);
    assert_eq!(requests("client_error"), 1.0);
    assert_eq!(requests("rejected"), rejected as f64);
    assert_eq!(images("success"), success_images as f64);
    assert_eq!(images("rejected"), (4 * rejected) as f64);
    assert_eq!(
        sample(
            &text,
            "effnet_requests_total",
            &[("model", "_unknown"), ("outcome", "client_error")]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "effnet_request_duration_seconds_count", &model),
        (3 + ok + 1 + rejected) as f64
    );
    assert_eq!(
        sample(&text, "effnet_preprocess_duration_seconds_count", &model),
        (success_images + 4 * rejected) as f64
    );
    assert_eq!(
        sample(&text, "effnet_queue_wait_seconds_count", &model),
        success_images as f64
    );
    assert_eq!(
        sample(&text, "effnet_inference_duration_seconds_count", &model),
        success_images as f64
    );
    assert_eq!(
        sample(&text, "effnet_batch_size_count", &model),
        success_images as f64
    );
    assert_eq!(
        sample(&text, "effnet_batch_size_sum", &model),
        success_images as f64
    );
    assert_eq!(
        sample(
            &text,
            "effnet_queue_rejections_total",
            &[model[0], ("limit", "model_queue")]
        ),
        rejected as f64
    );
    assert_eq!(sample(&text, "effnet_queue_depth", &model), 0.0);
    assert_eq!(sample(&text, "effnet_images_in_flight", &[]), 0.0);
    assert_eq!(
        sample(&text, "effnet_model_state", &[model[0], ("state", "ready")]),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "effnet_model_state",
            &[model[0], ("state", "loading")]
        ),
        0.0
    );
    assert!(sample(&text, "effnet_model_load_duration_seconds", &model) > 0.0);
    assert!(
        sample(
            &text,
            "effnet_offline_accuracy_ratio",
            &[model[0], ("rank", "top1")]
        ) > 0.5
    );
    assert!(sample(&text, "process_resident_memory_bytes", &[]) > 0.0);
}

#[test]
fn metrics_on_separate_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (server, _dir) = start(&[LITE0_INT8], &format!("metrics_addr = \"{addr}\""), "");

    let text = Client::new()
        .get(format!("http://{addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let other = Client::new()
        .get(format!("http://{addr}/v1/models"))
        .send()
        .unwrap();

    assert!(text.contains("effnet_model_state"), "{text}");
    assert_eq!(other.status(), 404);
    drop(server);
}

#[test]
fn feedback_moves_accuracy() {
    let (server, _dir) = start(&[LITE0_INT8], "feedback_ttl_ms = 2000", "");
    let (image, truth) = shark();
    let model = [("model", LITE0_INT8)];
    let hits = |body: &Value| {
        let classes = body["results"][0]["classes"].as_array().unwrap();
        let top1 = classes[0]["index"] == truth;
        let top5 = classes.iter().any(|class| class["index"] == truth);
        (top1, top5)
    };

    // The true class with the request.
    let (status, inline) = classify(&server, LITE0_INT8, &format!("?true_class={truth}"), &image);
    assert_eq!(status, 200, "{inline}");

    // The true class later, by request id, as a WordNet id.
    let (status, later) = classify(&server, LITE0_INT8, "", &image);
    assert_eq!(status, 200, "{later}");
    let request_id = later["request_id"].as_str().unwrap();
    let wnid = later["results"][0]["classes"][0]["wnid"]
        .as_str()
        .unwrap()
        .to_string();
    let feedback = |request_id: &str, true_class: Value| {
        let response = Client::new()
            .post(server.url("/v1/feedback"))
            .json(&json!({ "request_id": request_id, "true_class": true_class }))
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let (status, body) = feedback(request_id, json!(wnid));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["top1_hits"], 1, "the top-1 wnid was sent as the truth");

    let (status, again) = feedback(request_id, json!(wnid));
    assert_eq!(status, 409, "{again}");
    let (status, inline_again) = feedback(inline["request_id"].as_str().unwrap(), json!(truth));
    assert_eq!(status, 409, "{inline_again}");

    let (status, unknown) = feedback("no-such-request", json!(truth));
    assert_eq!(status, 404, "{unknown}");
    let message = unknown["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"no-such-request\" not found"),
        "{message}"
    );

    let (_, fresh) = classify(&server, LITE0_INT8, "", &image);
    let fresh_id = fresh["request_id"].as_str().unwrap().to_string();
    let (status, invalid) = feedback(&fresh_id, json!(1000));
    assert_eq!(status, 400, "{invalid}");
    assert_eq!(invalid["error"]["code"], "invalid_true_class");
    let (status, bad_wnid) = feedback(&fresh_id, json!("n99999999"));
    assert_eq!(status, 400, "{bad_wnid}");

    std::thread::sleep(Duration::from_millis(2500));
    let (status, expired) = feedback(&fresh_id, json!(truth));
    assert_eq!(status, 404, "{expired}");

    let text = scrape(&server);
    let count = |rank: &str, result: &str| {
        sample(
            &text,
            "effnet_online_predictions_total",
            &[model[0], ("rank", rank), ("result", result)],
        )
    };
    let (inline_top1, inline_top5) = hits(&inline);
    let expected_top1_hits = 1 + usize::from(inline_top1);
    let expected_top5_hits = 1 + usize::from(inline_top5);
    assert_eq!(count("top1", "hit"), expected_top1_hits as f64);
    assert_eq!(count("top1", "miss"), (2 - expected_top1_hits) as f64);
    assert_eq!(count("top5", "hit"), expected_top5_hits as f64);
    assert_eq!(count("top5", "miss"), (2 - expected_top5_hits) as f64);
    assert_eq!(
        sample(
            &text,
            "effnet_feedback_requests_total",
            &[("result", "counted")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "effnet_feedback_requests_total",
            &[("result", "duplicate")]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "effnet_feedback_requests_total",
            &[("result", "not_found")]
        ),
        2.0
    );
}

#[test]
fn shadow_agreement_and_skips() {
    let (server, _dir) = start(
        &[LITE0_INT8, LITE0_FP32],
        "shadow_fraction = 1.0\nbatch_workers = 1",
        "",
    );
    let model = [("model", LITE0_INT8)];
    let shadow = |text: &str, result: &str| {
        sample(
            text,
            "effnet_int8_shadow_images_total",
            &[model[0], ("result", result)],
        )
    };
    let photos: Vec<Vec<u8>> = common::sample_labels()
        .into_iter()
        .take(8)
        .map(|(file, _)| common::sample_image(&file))
        .collect();

    // Idle: one request at a time, so every shadow run is admitted.
    for (done, image) in photos[..5].iter().enumerate() {
        assert_eq!(classify(&server, LITE0_INT8, "", image).0, 200);
        let expected = (done + 1) as f64;
        scrape_until(&server, |text| {
            shadow(text, "agree") + shadow(text, "disagree") >= expected
        });
    }
    let text = scrape_until(&server, |text| {
        shadow(text, "agree") + shadow(text, "disagree") >= 5.0
    });
    assert_eq!(shadow(&text, "agree") + shadow(&text, "disagree"), 5.0);
    assert_eq!(shadow(&text, "skipped"), 0.0);
    assert_eq!(shadow(&text, "failed"), 0.0);
    assert!(
        shadow(&text, "agree") >= 3.0,
        "INT8 and FP32 should mostly agree: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "effnet_int8_shadow_top1_probability_difference_count",
            &model
        ),
        5.0
    );

    // Saturated: many concurrent requests on one batch worker.
    let succeeded = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let (photos, succeeded, server) = (&photos, &succeeded, &server);
            scope.spawn(move || {
                for round in 0..6 {
                    let image = &photos[(thread + round) % photos.len()];
                    if classify(server, LITE0_INT8, "", image).0 == 200 {
                        succeeded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let total = 5.0 + succeeded.load(Ordering::Relaxed) as f64;
    let counted = |text: &str| {
        ["agree", "disagree", "skipped", "failed"]
            .iter()
            .map(|result| shadow(text, result))
            .sum::<f64>()
    };
    let text = scrape_until(&server, |text| counted(text) >= total);
    assert_eq!(counted(&text), total);
    assert!(
        shadow(&text, "skipped") > 0.0,
        "no shadow run was skipped: {text}"
    );
    assert_eq!(shadow(&text, "failed"), 0.0);
}

#[test]
fn unknown_models_add_no_series() {
    let (server, _dir) = start(&[LITE0_INT8], "", "");
    let client = Client::new();
    let before = series_count(&scrape(&server));

    for i in 0..2000u32 {
        let name = format!("made-up-{:08x}", rand_name(i));
        let status = client
            .post(server.url(&format!("/v1/models/{name}/classify")))
            .body(vec![0u8; 8])
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 404);
    }
    let text = scrape(&server);

    assert_eq!(series_count(&text), before);
    assert_eq!(
        sample(
            &text,
            "effnet_requests_total",
            &[("model", "_unknown"), ("outcome", "client_error")]
        ),
        2000.0
    );
}

/// Scrambles an index into a 32-bit name, distinct for distinct indices.
fn rand_name(i: u32) -> u32 {
    i.wrapping_mul(0x9e37_79b9).rotate_left(13) ^ 0x5bd1_e995
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
