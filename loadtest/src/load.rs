//! The closed and open request loops against the server.
//!
//! Closed loop: `concurrency` workers, each with its own client and
//! connection (HTTP/1.1, or one HTTP/2 connection for gRPC), send the next
//! request as soon as the previous one finishes. Latency runs from the send.
//!
//! Open loop: requests are due on a fixed schedule (see
//! [`Schedule`](crate::schedule::Schedule)) whatever the server does, and
//! latency runs from each request's intended send time, so time a request
//! spends waiting for the client to get to it counts against the server
//! (no coordinated omission). At most `max_outstanding` requests are in
//! flight; a request due while the cap is reached is not sent and counts as
//! a schedule miss.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use effnet_proto::{
    effnet::v1::classifier_client::ClassifierClient,
    inference::grpc_inference_service_client::GrpcInferenceServiceClient,
};
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::{Channel, Endpoint};

use crate::{
    protocol::{self, HEADER_LENGTH, Payload, Protocol},
    report::{Recorder, Report},
    schedule::{ModelMix, Schedule},
};

/// Everything one run sends: the protocol, the model mix and one prepared
/// body per model and image.
pub struct Workload {
    pub protocol: Protocol,
    pub mix: ModelMix,
    /// `payloads[model][image]`.
    pub payloads: Vec<Vec<Payload>>,
    /// Full URL of each model's HTTP endpoint.
    pub urls: Vec<String>,
    pub addr: SocketAddr,
}

/// The client of one worker: HTTP requests share its connection pool, gRPC
/// calls its one HTTP/2 connection.
#[derive(Clone)]
pub enum Client {
    Http(reqwest::Client),
    Grpc(Channel),
}

/// Limits and timing of one run.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Measured time after the warm-up.
    pub duration: Duration,
    /// Requests excluded from the results at the start.
    pub warmup: Duration,
    /// Requests sent at most, warm-up included.
    pub max_requests: u64,
    /// Per-request timeout of the client.
    pub timeout: Duration,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    Closed { concurrency: usize },
    Open { rate: f64, max_outstanding: usize },
}

/// The raw result of a run, before it becomes a [`Report`].
pub struct Outcome {
    pub recorder: Recorder,
    /// Requests sent inside the measured window.
    pub sent: u64,
    pub schedule_misses: u64,
    /// Time over which throughput is computed.
    pub window: Duration,
    /// Time over which requests were sent (the open loop's schedule).
    pub send_window: Duration,
}

// === impl Workload ===

impl Workload {
    pub fn new(
        protocol: Protocol,
        mix: ModelMix,
        payloads: Vec<Vec<Payload>>,
        addr: SocketAddr,
    ) -> Self {
        let urls = mix
            .names()
            .iter()
            .map(|model| format!("http://{addr}{}", protocol.path(model)))
            .collect();
        Self {
            protocol,
            mix,
            payloads,
            urls,
            addr,
        }
    }

    /// Creates a client for this workload's protocol. A gRPC client
    /// connects on its first call.
    pub fn client(&self, timeout: Duration) -> Client {
        if !self.protocol.is_grpc() {
            return Client::Http(http_client(timeout));
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("a socket address makes a valid URI")
            .timeout(timeout)
            .tcp_nodelay(true);
        Client::Grpc(endpoint.connect_lazy())
    }

    /// Sends request `i` and returns the model index and the outcome: `Ok`
    /// or the error kind.
    async fn send(&self, client: &Client, i: u64) -> (usize, Result<(), String>) {
        let model = self.mix.pick(i);
        let images = &self.payloads[model];
        let payload = &images[(i % images.len() as u64) as usize];

        let result = match (client, payload) {
            (
                Client::Http(client),
                Payload::Http {
                    body,
                    content_type,
                    header_length,
                },
            ) => {
                let mut request = client
                    .post(&self.urls[model])
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(body.clone());
                if let Some(length) = header_length {
                    request = request.header(HEADER_LENGTH, *length);
                }
                self.exchange(request).await
            }
            (Client::Grpc(channel), Payload::Classify(request)) => {
                let mut request = request.clone();
                request.model = self.model_name(model).to_string();
                let mut client = ClassifierClient::new(channel.clone());
                match client.classify(request).await {
                    Ok(response) => {
                        protocol::check_classify(response.get_ref()).map_err(str::to_string)
                    }
                    Err(status) => Err(grpc_kind(&status)),
                }
            }
            (Client::Grpc(channel), Payload::ModelInfer(request)) => {
                let mut request = request.clone();
                request.model_name = self.model_name(model).to_string();
                let mut client = GrpcInferenceServiceClient::new(channel.clone());
                match client.model_infer(request).await {
                    Ok(response) => {
                        protocol::check_model_infer(response.get_ref()).map_err(str::to_string)
                    }
                    Err(status) => Err(grpc_kind(&status)),
                }
            }
            _ => unreachable!("a workload's client and payloads share its protocol"),
        };
        (model, result)
    }

    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<(), String> {
        let response = request.send().await.map_err(transport_kind)?;
        let status = response.status();
        let header_length = response
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        // Read the whole body even on errors, so the connection is reused.
        let body = response.bytes().await.map_err(transport_kind)?;
        if !status.is_success() {
            return Err(format!("http {}", status.as_u16()));
        }
        self.protocol
            .check(&body, header_length)
            .map_err(str::to_string)
    }

    fn model_name(&self, model: usize) -> &str {
        &self.mix.names()[model]
    }
}

fn transport_kind(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "error"
    };
    format!("transport {kind}")
}

/// Returns the error kind of a failed gRPC call: its status code, such as
/// `grpc Unavailable` for a refused connection.
fn grpc_kind(status: &tonic::Status) -> String {
    format!("grpc {:?}", status.code())
}

/// Builds an HTTP client that keeps its connections open between requests.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .no_proxy()
        .build()
        .expect("a client without TLS and proxies always builds")
}

/// Runs the load and returns what it recorded.
pub async fn run(workload: Arc<Workload>, pacing: Pacing, limits: &RunLimits) -> Outcome {
    match pacing {
        Pacing::Closed { concurrency } => closed(workload, concurrency, limits).await,
        Pacing::Open {
            rate,
            max_outstanding,
        } => open(workload, rate, max_outstanding, limits).await,
    }
}

async fn closed(workload: Arc<Workload>, concurrency: usize, limits: &RunLimits) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + limits.warmup;
    let deadline = measure_from + limits.duration;

    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let workload = workload.clone();
        let next = next.clone();
        let sent = sent.clone();
        let client = workload.client(limits.timeout);
        let max_requests = limits.max_requests;
        workers.push(tokio::spawn(async move {
            let mut recorder = Recorder::new();
            loop {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_requests {
                    break;
                }

                let (model, result) = workload.send(&client, i).await;
                let finished = Instant::now();

                // Only requests that start after the warm-up and finish
                // inside the window count, so throughput is exact over it.
                if started < measure_from || finished > deadline {
                    continue;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(()) => recorder.success(workload.model_name(model), finished - started),
                    Err(kind) => recorder.error(workload.model_name(model), kind),
                }
            }
            recorder
        }));
    }

    let mut recorder = Recorder::new();
    for worker in workers {
        if let Ok(part) = worker.await {
            recorder.merge(&part);
        }
    }
    let window = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from);
    Outcome {
        recorder,
        sent: sent.load(Ordering::Relaxed),
        schedule_misses: 0,
        window,
        send_window: window,
    }
}

/// What a finished open-loop request reports to the collector.
struct Completion {
    model: usize,
    intended: Instant,
    finished: Instant,
    result: Result<(), String>,
}

async fn open(
    workload: Arc<Workload>,
    rate: f64,
    max_outstanding: usize,
    limits: &RunLimits,
) -> Outcome {
    let client = workload.client(limits.timeout);
    let permits = Arc::new(Semaphore::new(max_outstanding.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();

    let start = Instant::now();
    let measure_from = start + limits.warmup;
    let deadline = measure_from + limits.duration;
    let schedule = Schedule::new(start, rate);

    let collector = tokio::spawn({
        let workload = workload.clone();
        async move {
            let mut recorder = Recorder::new();
            let mut last = measure_from;
            while let Some(done) = rx.recv().await {
                if done.intended < measure_from {
                    continue;
                }
                last = last.max(done.finished);
                let model = workload.model_name(done.model);
                match done.result {
                    Ok(()) => recorder.success(model, done.finished - done.intended),
                    Err(kind) => recorder.error(model, kind),
                }
            }
            (recorder, last)
        }
    });

    let mut next = 0u64;
    let mut sent = 0u64;
    let mut misses = 0u64;
    'schedule: loop {
        let due = schedule.due_by(Instant::now()).min(limits.max_requests);
        while next < due {
            let intended = schedule.intended(next);
            if intended >= deadline {
                break 'schedule;
            }
            let measured = intended >= measure_from;
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    sent += u64::from(measured);
                    let workload = workload.clone();
                    let client = client.clone();
                    let tx = tx.clone();
                    let i = next;
                    tokio::spawn(async move {
                        let (model, result) = workload.send(&client, i).await;
                        drop(permit);
                        let _ = tx.send(Completion {
                            model,
                            intended,
                            finished: Instant::now(),
                            result,
                        });
                    });
                }
                Err(_) => misses += u64::from(measured),
            }
            next += 1;
        }
        if next >= limits.max_requests || schedule.intended(next) >= deadline {
            break;
        }
        tokio::time::sleep_until(schedule.intended(next).into()).await;
    }
    drop(tx);

    let (recorder, last) = collector
        .await
        .unwrap_or_else(|_| (Recorder::new(), measure_from));
    let schedule_end = schedule.intended(next).min(deadline);
    Outcome {
        recorder,
        sent,
        schedule_misses: misses,
        // Late completions extend the window, so throughput never counts
        // work the server finished after the schedule as if it were on time.
        window: last
            .max(schedule_end)
            .saturating_duration_since(measure_from),
        send_window: schedule_end.saturating_duration_since(measure_from),
    }
}

// === impl Outcome ===

impl Outcome {
    /// The report of this outcome; `ceiling` is filled in by the caller.
    pub fn report(&self, target: SocketAddr, protocol: Protocol, pacing: Pacing) -> Report {
        let (total, models) = self.recorder.sections(self.window);
        let seconds = self.window.as_secs_f64();
        let send_seconds = self.send_window.as_secs_f64();
        let (mode, concurrency, requested_rate) = match pacing {
            Pacing::Closed { concurrency } => ("closed", Some(concurrency), None),
            Pacing::Open { rate, .. } => ("open", None, Some(rate)),
        };
        Report {
            target: target.to_string(),
            protocol: protocol.name().to_string(),
            mode: mode.to_string(),
            concurrency,
            requested_rate,
            achieved_rate: if send_seconds > 0.0 {
                self.sent as f64 / send_seconds
            } else {
                0.0
            },
            schedule_misses: self.schedule_misses,
            window_s: seconds,
            total,
            models,
            ceiling: Default::default(),
            ceiling_ratio: None,
        }
    }
}
