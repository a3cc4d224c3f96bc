//! Hostile and unusual inputs through a real server: every case of the
//! generated image corpus gets its exact status, decodable ones the same
//! top-1 class as the plain photo, decompression bombs are rejected without
//! the server's peak memory growing, no error message leaks internals, and
//! a model whose file is corrupt is unavailable while the others serve.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use common::TestServer;
use reqwest::blocking::{Client, multipart};
use serde_json::Value;

const LITE0: &str = "/v1/models/efficientnet-lite0-fp32/classify";

/// Fragments that would show that an error message leaks internals.
const LEAKS: [&str; 5] = ["/work", "/home", "/tmp", ".rs:", "panicked"];

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::start(&[]))
}

/// One case of `cases.json`.
struct Case {
    file: String,
    expect: String,
    reference: Option<String>,
}

/// The corpus: generated at a size the model can classify when `.venv`
/// exists, otherwise the small committed fixtures of effnet-imaging, whose
/// 64x48 photo is checked for status only.
struct Corpus {
    dir: PathBuf,
    cases: Vec<Case>,
    compare_classes: bool,
    _temp: Option<tempfile::TempDir>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = common::workspace_root();
        let python = root.join(".venv/bin/python");
        let (dir, temp, compare_classes) = if python.is_file() {
            let temp = tempfile::tempdir().unwrap();
            let photo = zebra_photo();
            let status = Command::new(&python)
                .arg(root.join("tools/make_image_corpus.py"))
                .arg("corpus")
                .arg(&photo)
                .arg(temp.path())
                .args(["--size", "256x192"])
                .status()
                .unwrap();
            assert!(status.success(), "make_image_corpus.py failed");
            (temp.path().to_path_buf(), Some(temp), true)
        } else {
            eprintln!("no .venv: using the committed 64x48 corpus, statuses only");
            (
                root.join("crates/imaging/tests/fixtures/corpus"),
                None,
                false,
            )
        };

        let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let cases = json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| Case {
                file: case["file"].as_str().unwrap().to_string(),
                expect: case["expect"].as_str().unwrap().to_string(),
                reference: case["reference"].as_str().map(str::to_string),
            })
            .collect();
        Corpus {
            dir,
            cases,
            compare_classes,
            _temp: temp,
        }
    })
}

/// A photo that lite0 classifies with a wide margin, so that the lossy
/// variants keep its top-1 class (a shark photo flips between two sharks).
fn zebra_photo() -> PathBuf {
    let (file, _) = common::sample_labels()
        .into_iter()
        .find(|(file, _)| file.contains("zebra"))
        .unwrap();
    common::imagenet_sample().join("images").join(file)
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

/// Posts a raw body and returns the status and the JSON body.
fn post_raw(path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = Client::new()
        .post(server().url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn top1(body: &Value) -> u64 {
    body["results"][0]["classes"][0]["index"].as_u64().unwrap()
}

fn expected_status(expect: &str) -> u16 {
    match expect {
        "ok" => 200,
        "empty" => 400,
        "unknown_format" | "unsupported_format" => 415,
        "invalid" | "too_large" => 422,
        other => panic!("unknown expectation {other}"),
    }
}

fn assert_no_leak(context: &str, message: &str) {
    for leak in LEAKS {
        assert!(
            !message.contains(leak),
            "{context}: {message:?} contains {leak:?}"
        );
    }
}

#[test]
fn corpus_statuses() {
    let corpus = corpus();
    assert!(
        corpus.cases.len() >= 40,
        "only {} cases",
        corpus.cases.len()
    );

    for case in &corpus.cases {
        // A JPEG content type on every file: the format comes from the bytes.
        let (status, body) = post_raw(LITE0, "image/jpeg", read(&corpus.dir, &case.file));

        assert_eq!(
            status,
            expected_status(&case.expect),
            "{}: {body}",
            case.file
        );
        if status != 200 {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(body["error"]["code"].is_string(), "{}: {body}", case.file);
            assert_no_leak(&case.file, message);
        }
    }
}

#[test]
fn corpus_top1_matches_plain_jpeg() {
    let corpus = corpus();
    if !corpus.compare_classes {
        return;
    }
    let classify = |file: &str| {
        let (status, body) = post_raw(LITE0, "application/octet-stream", read(&corpus.dir, file));
        assert_eq!(status, 200, "{file}: {body}");
        top1(&body)
    };

    // The plain RGB JPEG of the photo; other references (grayscale,
    // composited on white, the GIF's palette) are lossless PNGs of what the
    // variant shows.
    let plain = classify("baseline.jpg");
    for case in corpus.cases.iter().filter(|case| case.expect == "ok") {
        let reference = case.reference.as_deref().unwrap();
        let expected = match reference {
            "rgb.png" => plain,
            other => classify(other),
        };

        assert_eq!(
            classify(&case.file),
            expected,
            "{} against {reference}",
            case.file
        );
    }
}

#[test]
fn unsupported_format_is_named() {
    let corpus = corpus();
    for (file, name) in [
        ("ftyp.avif", "AVIF"),
        ("ftyp.heic", "HEIC"),
        ("photo.tiff", "TIFF"),
    ] {
        let (status, body) = post_raw(LITE0, "image/jpeg", read(&corpus.dir, file));

        assert_eq!(status, 415, "{file}: {body}");
        assert_eq!(body["error"]["code"], "image_format_unsupported", "{file}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(name), "{file}: {message}");
    }
}

/// Peak resident memory of the server process (`VmHWM`), in KiB.
fn peak_rss_kib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Encodes an uncompressed 24-bit BMP of `width` x `height` mid-gray pixels
/// (`width` a multiple of 4, so rows need no padding).
fn gray_bmp(width: u32, height: u32) -> Vec<u8> {
    let pixels = 3 * width * height;
    let mut bmp = Vec::with_capacity(54 + pixels as usize);
    bmp.extend_from_slice(b"BM");
    for field in [54 + pixels, 0, 54, 40] {
        bmp.extend_from_slice(&field.to_le_bytes());
    }
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    for field in [0, pixels, 2835, 2835, 0, 0] {
        bmp.extend_from_slice(&field.to_le_bytes());
    }
    bmp.resize(54 + pixels as usize, 128);
    bmp
}

#[test]
fn decode_time_limit_rejects_slow_image() {
    let server = TestServer::start(&["--max-decode-ms", "1"]);
    let client = Client::new();

    // Decoding six million pixels takes far longer than 1 ms.
    let response = client
        .post(format!("http://{}{LITE0}", server.http))
        .body(gray_bmp(3000, 2000))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    let ready = client
        .get(format!("http://{}/health/ready", server.http))
        .send()
        .unwrap();

    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "image_decode_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1 ms"),
        "{body}"
    );
    assert_eq!(ready.status(), 200);
}

#[test]
fn bombs_do_not_raise_peak_memory() {
    let corpus = corpus();
    let server = TestServer::start(&[]);
    let post = |file: &str| {
        Client::new()
            .post(format!("http://{}{LITE0}", server.http))
            .body(read(&corpus.dir, file))
            .send()
            .unwrap()
    };
    // Warm every buffer a normal request touches before taking the baseline.
    for _ in 0..3 {
        assert_eq!(post("baseline.jpg").status(), 200);
    }
    let before = peak_rss_kib(&server);

    let bombs = [
        "bomb.png",
        "bomb_idat.png",
        "huge.jpg",
        "huge_screen.gif",
        "huge_canvas.webp",
        "pixels.png",
        "wide.png",
    ];
    for file in bombs {
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let response = post(file);
            println!("{file}: {} in {:?}", response.status(), started.elapsed());
            assert_eq!(response.status(), 422, "{file}");
        }
    }
    let after = peak_rss_kib(&server);

    println!("peak RSS before {before} KiB, after {after} KiB");
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} to {after} KiB"
    );
}

/// Requests that are malformed in every way the REST API parses.
fn malformed_requests() -> Vec<(&'static str, reqwest::blocking::RequestBuilder)> {
    let client = Client::new();
    let url = |path: &str| server().url(path);
    let json = |body: &str| {
        client
            .post(url(LITE0))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    vec![
        ("invalid json", json("{\"image\": ")),
        ("unknown field", json("{\"picture\": \"abc\"}")),
        ("invalid base64", json("{\"image\": \"***\"}")),
        (
            "data uri without base64",
            json("{\"image\": \"data:image/png,abc\"}"),
        ),
        (
            "image and images",
            json("{\"image\": \"\", \"images\": []}"),
        ),
        ("no image", json("{}")),
        (
            "too many images",
            json(&format!(
                "{{\"images\": [{}]}}",
                vec!["\"AA\""; 65].join(",")
            )),
        ),
        (
            "broken multipart",
            client
                .post(url(LITE0))
                .header("content-type", "multipart/form-data; boundary=x")
                .body(
                    "--x\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a\"\r\n\r\nabc",
                ),
        ),
        ("empty body", client.post(url(LITE0))),
        (
            "top_k zero",
            client.post(url(&format!("{LITE0}?top_k=0"))).body("x"),
        ),
        (
            "bad timeout",
            client
                .post(url(LITE0))
                .header("x-request-timeout", "-1")
                .body("x"),
        ),
        // The name is echoed back (the client sent it) but never reaches the filesystem.
        (
            "traversal model",
            client
                .post(url("/v1/models/..%2F..%2Fetc%2Fpasswd/classify"))
                .body("x"),
        ),
        (
            "unknown model",
            client.get(url("/v1/models/efficientnet-lite9-fp32")),
        ),
        ("unknown route", client.get(url("/v1/nothing/here"))),
        (
            "feedback invalid",
            client
                .post(url("/v1/feedback"))
                .header("content-type", "application/json")
                .body("{}"),
        ),
        (
            "body too large",
            client.post(url(LITE0)).body(vec![0u8; 33 * 1024 * 1024]),
        ),
    ]
}

#[test]
fn error_messages_leak_nothing() {
    for (name, request) in malformed_requests() {
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);

        assert!((400..500).contains(&status), "{name}: {status} {body}");
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {body}"));
        assert_no_leak(name, message);
    }

    let models: Value = Client::new()
        .get(server().url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    for model in models["models"].as_array().unwrap() {
        assert_no_leak("model reason", model["reason"].as_str().unwrap_or(""));
    }
}

#[test]
fn multipart_mixed_formats() {
    let corpus = corpus();
    let form = multipart::Form::new()
        .part(
            "a",
            multipart::Part::bytes(read(&corpus.dir, "rgba8.png")).file_name("a.jpg"),
        )
        .part(
            "b",
            multipart::Part::bytes(read(&corpus.dir, "lossy.webp")).file_name("b.png"),
        )
        .part(
            "c",
            multipart::Part::bytes(read(&corpus.dir, "animated.gif")).file_name("c"),
        );

    let response = Client::new()
        .post(server().url(LITE0))
        .multipart(form)
        .send()
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
}

#[test]
fn one_bad_image_fails_the_request_by_position() {
    let corpus = corpus();
    let form = multipart::Form::new()
        .part(
            "a",
            multipart::Part::bytes(read(&corpus.dir, "baseline.jpg")).file_name("a"),
        )
        .part(
            "b",
            multipart::Part::bytes(read(&corpus.dir, "truncated.png")).file_name("b"),
        );

    let response = Client::new()
        .post(server().url(LITE0))
        .multipart(form)
        .send()
        .unwrap();

    assert_eq!(response.status(), 422);
    let body: Value = response.json().unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("image 1:"), "{message}");
}

/// A repository with a good INT8 model and an FP32 model whose ONNX file is
/// garbage; the model directories other than these are left out.
fn repository_with_corrupt_model() -> tempfile::TempDir {
    let source = common::model_repository();
    let temp = tempfile::tempdir().unwrap();
    std::fs::copy(source.join("labels.tsv"), temp.path().join("labels.tsv")).unwrap();
    std::os::unix::fs::symlink(
        source.join("efficientnet-lite0-int8"),
        temp.path().join("efficientnet-lite0-int8"),
    )
    .unwrap();
    let corrupt = temp.path().join("efficientnet-lite0-fp32");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::copy(
        source.join("efficientnet-lite0-fp32/manifest.json"),
        corrupt.join("manifest.json"),
    )
    .unwrap();
    std::fs::write(corrupt.join("model.onnx"), b"this is not an ONNX protobuf").unwrap();
    temp
}

#[test]
fn corrupt_model_is_unavailable() {
    let repository = repository_with_corrupt_model();
    let server = TestServer::start(&["--model-repository", repository.path().to_str().unwrap()]);
    let client = Client::new();
    let url = |path: &str| format!("http://{}{path}", server.http);

    let model: Value = client
        .get(url("/v1/models/efficientnet-lite0-fp32"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(model["state"], "unavailable", "{model}");
    let reason = model["reason"].as_str().unwrap();
    assert!(reason.starts_with("failed to load"), "{reason}");
    assert_no_leak("corrupt model reason", reason);

    let image = read(&corpus().dir, "baseline.jpg");
    let broken = client.post(url(LITE0)).body(image.clone()).send().unwrap();
    assert_eq!(broken.status(), 503);
    let good = client
        .post(url("/v1/models/efficientnet-lite0-int8/classify"))
        .body(image)
        .send()
        .unwrap();
    assert_eq!(good.status(), 200);
}
