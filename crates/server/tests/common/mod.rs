//! A real `effnet-serve` process on 127.0.0.1 for integration tests, with
//! the real model repository and the shared ImageNet sample.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

/// Returns the model repository that `scripts/build-models.sh` built.
pub fn model_repository() -> PathBuf {
    let path = std::env::var_os("EFFNET_MODEL_REPOSITORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("model-repository"));
    assert!(
        path.join("labels.tsv").is_file(),
        "model repository {} is missing; run scripts/build-models.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Returns the labelled sample folder: `images/` and `labels.tsv` (file, index, wnid).
pub fn imagenet_sample() -> PathBuf {
    let path = std::env::var_os("EFFNET_IMAGENET_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data/imagenet-sample"));
    assert!(
        path.join("labels.tsv").is_file(),
        "ImageNet sample {} is missing",
        path.display()
    );
    path
}

/// `(file name, class index)` of every sample image, in file order.
pub fn sample_labels() -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(imagenet_sample().join("labels.tsv")).unwrap();
    let mut rows: Vec<(String, usize)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let file = fields.next().unwrap().to_string();
            let index = fields.next().unwrap().parse().unwrap();
            (file, index)
        })
        .collect();
    rows.sort();
    rows
}

pub fn sample_image(file: &str) -> Vec<u8> {
    std::fs::read(imagenet_sample().join("images").join(file)).unwrap()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let site = workspace_root().join(".venv/lib");
    for python in std::fs::read_dir(&site).expect(".venv missing; run scripts/setup.sh") {
        let capi = python
            .unwrap()
            .path()
            .join("site-packages/onnxruntime/capi");
        for entry in std::fs::read_dir(&capi).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libonnxruntime.so.")
            {
                return path;
            }
        }
    }
    panic!("libonnxruntime.so not found; run scripts/setup.sh or set ORT_DYLIB_PATH");
}

/// A running server process; killed on drop.
pub struct TestServer {
    pub child: Child,
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    /// `https` when started with `--tls-cert`, else `http`.
    pub scheme: &'static str,
    /// Log lines after start-up, for tests that check logging. The mutex
    /// makes the server shareable between a test file's threads.
    pub logs: Mutex<mpsc::Receiver<String>>,
}

impl TestServer {
    /// Starts the server with the real repository and waits until it is
    /// ready (all models loaded and warmed up).
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_with(extra_args, &[])
    }

    pub fn start_with(extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_effnet-serve"));
        command.arg("serve");
        if !extra_args.contains(&"--model-repository") {
            command.arg("--model-repository").arg(model_repository());
        }
        command
            .arg("--onnxruntime-library")
            .arg(onnxruntime_library())
            .args(["--http-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(extra_args)
            .env_remove("EFFNET_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("failed to start effnet-serve");
        kill_at_exit(child.id());

        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("EFFNET_TEST_LOGS").is_some() {
                    eprintln!("server: {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut http = None;
        let mut grpc = None;
        let started = Instant::now();
        while http.is_none() || (extra_args.contains(&"--grpc-addr") && grpc.is_none()) {
            let line = rx
                .recv_timeout(Duration::from_secs(120).saturating_sub(started.elapsed()))
                .expect("server did not report its listening address in time");
            let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let message = value["fields"]["message"].as_str().unwrap_or("");
            let addr = value["fields"]["addr"]
                .as_str()
                .and_then(|a| a.parse().ok());
            match message {
                "http listening" => http = addr,
                "grpc listening" => grpc = addr,
                _ => {}
            }
        }
        let server = Self {
            child,
            http: http.unwrap(),
            grpc,
            scheme: if extra_args.contains(&"--tls-cert") {
                "https"
            } else {
                "http"
            },
            logs: Mutex::new(rx),
        };
        server.wait_ready(Duration::from_secs(300));
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.http, path)
    }

    pub fn wait_ready(&self, timeout: Duration) {
        // Readiness only: the TLS tests check the certificate themselves.
        let client = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Ok(response) = client.get(self.url("/health/ready")).send()
                && response.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "server not ready after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let pid = self.child.id();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers still running when the test binary exits.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Registers a server to be killed when the test process exits. A server
/// kept in a `static` is never dropped, so without this it would outlive
/// the test binary.
fn kill_at_exit(pid: u32) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `kill_running` is a plain `extern "C"` function that only
        // locks a mutex and sends signals.
        unsafe { libc::atexit(kill_running) };
    });
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

extern "C" fn kill_running() {
    let pids = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in pids.iter() {
        // SAFETY: sending a signal has no memory-safety preconditions; a
        // process that already exited makes it fail harmlessly.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}
