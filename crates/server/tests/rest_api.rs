//! The REST API through a real server: request shapes, model listing,
//! probes and every error case with its status code and message.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::OnceLock,
    time::Duration,
};

use base64::Engine as _;
use common::TestServer;
use reqwest::blocking::{Client, multipart};
use serde_json::Value;

/// Returns the one server that the tests of this file share.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::start(&[
            "--max-request-bytes",
            "4000000",
            "--body-timeout-ms",
            "1000",
        ])
    })
}

const LITE0: &str = "/v1/models/efficientnet-lite0-fp32/classify";

/// Returns a sample photo and its class index.
fn photo() -> (Vec<u8>, usize) {
    let (file, index) = common::sample_labels()
        .into_iter()
        .find(|(file, _)| file.contains("great_white_shark"))
        .unwrap();
    (common::sample_image(&file), index)
}

/// Opens a raw connection to the shared server that gives up reading after 30 s.
fn raw_connection() -> TcpStream {
    let stream = TcpStream::connect(server().http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Posts `len` zero bytes over a raw connection, writing the whole body
/// before reading anything, as simple clients do, and returns the status
/// code and the body of the response.
fn post_whole_body(path: &str, len: usize) -> (u16, String) {
    let mut stream = raw_connection();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: image/jpeg\r\n\
         content-length: {len}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).unwrap();
        left -= n;
    }

    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string());
    (status, body)
}

fn post(path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = Client::new()
        .post(server().url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str, fragment: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
}

#[test]
fn raw_jpeg_body_is_classified() {
    let (image, index) = photo();

    let (status, body) = post(LITE0, "image/jpeg", image);

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "efficientnet-lite0-fp32");
    assert_eq!(body["precision"], "fp32");
    let classes = body["results"][0]["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 5);
    assert_eq!(classes[0]["index"], index);
    assert_eq!(classes[0]["label"], "great_white_shark");
    assert!(classes[0]["wnid"].as_str().unwrap().starts_with('n'));
    let score = classes[0]["score"].as_f64().unwrap();
    assert!(score > 0.3, "{score}");
    assert!(score <= 1.0, "{score}");
    assert!(
        body["results"][0]["timings_ms"]["inference"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn wrong_content_type_does_not_matter() {
    let (image, index) = photo();

    let (status, body) = post(LITE0, "image/png", image);

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["classes"][0]["index"], index);
}

#[test]
fn multipart_with_two_images() {
    let (image, index) = photo();
    let form = multipart::Form::new()
        .part(
            "a",
            multipart::Part::bytes(image.clone()).file_name("a.jpg"),
        )
        .part("b", multipart::Part::bytes(image).file_name("b.jpg"));

    let response = Client::new()
        .post(server().url(&format!("{LITE0}?top_k=2")))
        .multipart(form)
        .send()
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result["classes"].as_array().unwrap().len(), 2);
        assert_eq!(result["classes"][0]["index"], index);
    }
}

#[test]
fn json_base64_body() {
    let (image, index) = photo();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&image);
    let body =
        serde_json::json!({ "image": format!("data:image/jpeg;base64,{encoded}"), "top_k": 3 });

    let (status, body) = post(LITE0, "application/json", body.to_string().into_bytes());

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["classes"].as_array().unwrap().len(), 3);
    assert_eq!(body["results"][0]["classes"][0]["index"], index);
}

#[test]
fn alias_resolves_to_default_precision() {
    let (image, _) = photo();

    let (status, body) = post(
        "/v1/models/efficientnet-lite0/classify",
        "image/jpeg",
        image,
    );

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "efficientnet-lite0-int8");
}

#[test]
fn request_id_is_echoed() {
    let (image, _) = photo();

    let response = Client::new()
        .post(server().url(LITE0))
        .header("x-request-id", "test-id-42")
        .body(image)
        .send()
        .unwrap();

    assert_eq!(response.headers()["x-request-id"], "test-id-42");
    let body: Value = response.json().unwrap();
    assert_eq!(body["request_id"], "test-id-42");
}

#[test]
fn model_list_reports_unavailable_variants() {
    let body: Value = Client::new()
        .get(server().url("/v1/models"))
        .send()
        .unwrap()
        .json()
        .unwrap();

    let models = body["models"].as_array().unwrap();
    assert_eq!(models.len(), 10);
    let lite0 = models
        .iter()
        .find(|m| m["name"] == "efficientnet-lite0-int8")
        .unwrap();
    assert_eq!(lite0["state"], "ready");
    assert_eq!(lite0["resolution"], 224);
    assert!(lite0["evaluation"][0]["top1"].as_f64().unwrap() > 0.8);
    let lite3 = models
        .iter()
        .find(|m| m["name"] == "efficientnet-lite3-fp32")
        .unwrap();
    assert_eq!(lite3["state"], "unavailable");
    assert_eq!(lite3["resolution"], 280);
    assert!(
        lite3["reason"]
            .as_str()
            .unwrap()
            .contains("no pretrained weights")
    );
    assert_eq!(
        body["aliases"]["efficientnet-lite0"],
        "efficientnet-lite0-int8"
    );
}

#[test]
fn probes() {
    let client = Client::new();

    assert_eq!(
        client
            .get(server().url("/health/live"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(server().url("/health/ready"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn unknown_model_lists_available_names() {
    let (status, body) = post("/v1/models/resnet50/classify", "image/jpeg", photo().0);

    assert_error(
        status,
        &body,
        404,
        "model_not_found",
        "\"resnet50\" not found",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("efficientnet-lite0-fp32")
    );
}

#[test]
fn unavailable_model_is_503_with_reason() {
    let (status, body) = post(
        "/v1/models/efficientnet-lite4-int8/classify",
        "image/jpeg",
        photo().0,
    );

    assert_error(
        status,
        &body,
        503,
        "model_unavailable",
        "no pretrained weights supplied",
    );
}

#[test]
fn empty_body_is_400() {
    let (status, body) = post(LITE0, "image/jpeg", Vec::new());

    assert_error(status, &body, 400, "image_empty", "empty");
}

#[test]
fn not_an_image_is_415() {
    let (status, body) = post(LITE0, "image/jpeg", b"hello, this is plain text".to_vec());

    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("JPEG"),
        "{body}"
    );
}

#[test]
fn truncated_jpeg_is_422() {
    let (image, _) = photo();
    let truncated = image[..image.len() / 3].to_vec();

    let (status, body) = post(LITE0, "image/jpeg", truncated);

    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["code"]
            .as_str()
            .unwrap()
            .starts_with("image_"),
        "{body}"
    );
}

#[test]
fn huge_declared_dimensions_are_422() {
    // A valid PNG declaring 100000 x 100000 pixels with almost no image
    // data: rejected from the header, before any pixel buffer is allocated.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // An IDAT chunk with a tiny zlib stream, then IEND: the decoder reads
    // the header up to here, so only the declared size can reject it.
    for (kind, data) in [
        (&b"IDAT"[..], &b"\x78\x9c\x63\x00\x00\x00\x01\x00\x01"[..]),
        (b"IEND", b""),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }

    let (status, body) = post(LITE0, "image/png", png);

    assert_error(status, &body, 422, "image_too_large", "100000");
}

#[test]
fn body_over_limit_is_413() {
    let (status, body) = post(LITE0, "image/jpeg", vec![0xff; 5_000_000]);

    assert_error(status, &body, 413, "body_too_large", "maximum request size");
}

#[test]
fn bad_top_k_is_400() {
    for value in ["0", "1001", "abc"] {
        let (status, body) = post(&format!("{LITE0}?top_k={value}"), "image/jpeg", photo().0);

        assert_error(status, &body, 400, "invalid_top_k", value);
    }
}

#[test]
fn bad_base64_names_field() {
    let body = serde_json::json!({ "images": ["%%%"] });

    let (status, body) = post(LITE0, "application/json", body.to_string().into_bytes());

    assert_error(status, &body, 400, "invalid_base64", "images[0]");
}

#[test]
fn bad_timeout_header_is_400() {
    let response = Client::new()
        .post(server().url(LITE0))
        .header("x-request-timeout", "soon")
        .body(photo().0)
        .send()
        .unwrap();

    assert_eq!(response.status(), 400);
}

#[test]
fn server_keeps_serving_after_errors() {
    for _ in 0..3 {
        post(LITE0, "image/jpeg", b"garbage".to_vec());
    }

    let (status, _) = post(LITE0, "image/jpeg", photo().0);

    assert_eq!(status, 200);
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn oversized_upload_gets_413() {
    // Ten times the limit: far more than socket buffers take in after the
    // server has responded, so the server must read the rest.
    let (status, body) = post_whole_body(LITE0, 40_000_000);

    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
}

#[test]
fn stalled_upload_times_out() {
    let mut stream = raw_connection();

    // Three of the 100000 declared bytes, then nothing.
    write!(
        stream,
        "POST {LITE0} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100000\r\n\r\nabc"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();

    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}
