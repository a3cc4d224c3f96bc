//! The admin token on management endpoints and TLS on the HTTP port,
//! through real servers.

mod common;

use common::TestServer;
use reqwest::blocking::Client;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-3f9c";

fn get(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let mut request = Client::new().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

#[test]
fn admin_token_guards_config() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let server = TestServer::start(&[
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--metrics-require-token",
        "true",
    ]);

    for path in ["/v1/config", "/metrics"] {
        let missing = get(&server, path, None);
        assert_eq!(missing.status(), 401, "{path}");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer", "{path}");
        let body: Value = missing.json().unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");

        assert_eq!(get(&server, path, Some("wrong")).status(), 401, "{path}");
        assert_eq!(get(&server, path, Some(TOKEN)).status(), 200, "{path}");
    }

    // Everything else stays open.
    assert_eq!(get(&server, "/v1/models", None).status(), 200);
    assert_eq!(get(&server, "/health/ready", None).status(), 200);
    let feedback = Client::new()
        .post(server.url("/v1/feedback"))
        .json(&serde_json::json!({"request_id": "nope", "true_class": 1}))
        .send()
        .unwrap();
    assert_ne!(feedback.status(), 401);
}

#[test]
fn config_hides_the_token() {
    let server = TestServer::start_with(&[], &[("EFFNET_ADMIN_TOKEN", TOKEN)]);

    let response = get(&server, "/v1/config", Some(TOKEN));

    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["server"]["admin_token_set"], true);
    assert_eq!(config["limits"]["max_images_per_request"], 64);
    assert!(config["models"]["efficientnet-lite0-fp32"]["max_batch_size"].is_u64());

    let logs = server.logs.lock().unwrap();
    while let Ok(line) = logs.try_recv() {
        assert!(!line.contains(TOKEN), "{line}");
    }
}

#[test]
fn config_is_open_without_token() {
    let server = TestServer::start(&[]);

    assert_eq!(get(&server, "/v1/config", None).status(), 200);
    assert_eq!(get(&server, "/metrics", None).status(), 200);
}

/// A self-signed certificate for `localhost`, written as PEM files.
struct SelfSigned {
    cert_pem: String,
    dir: tempfile::TempDir,
}

impl SelfSigned {
    fn new() -> Self {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        Self {
            cert_pem: key.cert.pem(),
            dir,
        }
    }

    fn start_server(&self, extra_args: &[&str]) -> TestServer {
        let cert = self.dir.path().join("cert.pem");
        let key = self.dir.path().join("key.pem");
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra_args);
        TestServer::start(&args)
    }
}

#[test]
fn https_with_trusted_certificate() {
    let certificate = SelfSigned::new();
    let server = certificate.start_server(&[]);
    let trusted = Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certificate.cert_pem.as_bytes()).unwrap(),
        )
        .resolve("localhost", server.http)
        .build()
        .unwrap();
    let photo = common::sample_image(&common::sample_labels()[0].0);

    let response = trusted
        .post(format!(
            "https://localhost:{}/v1/models/efficientnet-lite0-int8/classify",
            server.http.port()
        ))
        .body(photo)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    let untrusted = Client::new().get(server.url("/health/live")).send();
    assert!(
        untrusted.is_err(),
        "a client without the certificate connected"
    );
    let plain = Client::new()
        .get(format!("http://{}/health/live", server.http))
        .send();
    assert!(plain.map_or(true, |r| !r.status().is_success()));
}

#[test]
fn grpc_with_trusted_certificate() {
    use effnet_proto::inference::{
        ServerLiveRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
    };
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let certificate = SelfSigned::new();
    let server = certificate.start_server(&["--grpc-addr", "127.0.0.1:0"]);
    let addr = server.grpc.unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let live = runtime.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&certificate.cert_pem))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        GrpcInferenceServiceClient::new(channel)
            .server_live(ServerLiveRequest {})
            .await
    });
    assert!(live.unwrap().into_inner().live);

    let plain = runtime.block_on(async {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map(GrpcInferenceServiceClient::new)
    });
    let plain_call = match plain {
        Ok(mut client) => runtime
            .block_on(client.server_live(ServerLiveRequest {}))
            .is_ok(),
        Err(_) => false,
    };
    assert!(!plain_call, "plain gRPC reached the TLS listener");
}
