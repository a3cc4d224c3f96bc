//! Server configuration: a TOML file, overridden by command-line flags,
//! which clap in turn reads from `EFFNET_*` environment variables.
//!
//! Every setting, its default and its unit is listed in `docs/configuration.md`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::cpu;

/// The whole configuration after the file, flags and defaults are merged.
#[derive(Debug, Clone)]
pub struct Config {
    pub model_repository: PathBuf,
    pub http_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub onnxruntime_library: PathBuf,
    pub threads: ThreadConfig,
    pub admission: AdmissionConfig,
    pub limits: effnet_imaging::Limits,
    pub max_images_per_request: usize,
    /// Maximum request body (REST) and message (gRPC) size in bytes.
    pub max_request_bytes: usize,
    /// Maximum pause between two reads of an HTTP request body.
    pub body_timeout: Duration,
    pub default_precision: effnet_repository::Precision,
    pub shutdown: ShutdownConfig,
    pub models: ModelsConfig,
    pub log_format: LogFormat,
    /// Fraction in `0..=1` of INT8 requests also run on the FP32 model of
    /// the same variant, at low priority, to measure INT8 drift.
    pub shadow_fraction: f64,
    pub feedback: FeedbackConfig,
    /// Bearer token that the management endpoints require; `None` leaves
    /// them open.
    pub admin_token: Option<AdminToken>,
    /// Whether `/metrics` also requires the admin token.
    pub metrics_require_token: bool,
    /// Certificate and key that both listeners serve TLS with; `None` serves
    /// plain HTTP and gRPC.
    pub tls: Option<TlsFiles>,
}

/// The admin bearer token. Its `Debug` output is redacted, so that logging
/// the configuration never prints it.
#[derive(Clone)]
pub struct AdminToken(String);

/// PEM files of the TLS certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long classify results are remembered for `POST /v1/feedback`.
#[derive(Debug, Clone, Copy)]
pub struct FeedbackConfig {
    /// A result older than this is forgotten.
    pub ttl: Duration,
    /// Results remembered at most; the oldest is forgotten first. 0 turns
    /// feedback by request id off.
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ThreadConfig {
    /// Threads of ONNX Runtime's global intra-op pool.
    pub intra_op_threads: usize,
    /// Batches that run at once across all models.
    pub batch_workers: usize,
    /// Blocking threads that decode and preprocess images.
    pub decode_workers: usize,
    pub spinning: bool,
    /// Cores the settings were derived from, for the startup log.
    pub cpu_budget: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Images accepted but not yet completed, across all models.
    pub max_in_flight_images: usize,
    /// Deadline of a request that sets none itself.
    pub default_timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// After SIGTERM, readiness is false but requests are still accepted
    /// for this long, so that load balancers stop routing first.
    pub drain_period: Duration,
    /// Then queued and running work gets this long to finish.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Per-model batching and admission settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    pub enabled: bool,
    /// Images per batch at most.
    pub max_batch_size: usize,
    /// How long a batch may wait for more requests once a worker is free,
    /// in milliseconds; 0 dispatches at once.
    pub max_queue_delay_ms: u64,
    /// Images queued for this model at most; more are rejected with 429.
    pub queue_limit: usize,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch_size: 16,
            max_queue_delay_ms: 0,
            queue_limit: 256,
        }
    }
}

/// The `[models]` table: defaults for every model plus per-model overrides.
/// (serde cannot combine `flatten` with `deny_unknown_fields`; the fields of
/// each table are still checked.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModelsConfig {
    pub default: ModelSettings,
    #[serde(flatten)]
    pub overrides: BTreeMap<String, ModelOverride>,
}

/// Fields a single model may override; the rest come from `[models.default]`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverride {
    pub enabled: Option<bool>,
    pub max_batch_size: Option<usize>,
    pub max_queue_delay_ms: Option<u64>,
    pub queue_limit: Option<usize>,
}

// === impl ModelsConfig ===

impl ModelsConfig {
    /// Returns the settings of one model: its overrides on top of the defaults.
    pub fn for_model(&self, name: &str) -> ModelSettings {
        let base = self.default;
        let Some(o) = self.overrides.get(name) else {
            return base;
        };
        ModelSettings {
            enabled: o.enabled.unwrap_or(base.enabled),
            max_batch_size: o.max_batch_size.unwrap_or(base.max_batch_size),
            max_queue_delay_ms: o.max_queue_delay_ms.unwrap_or(base.max_queue_delay_ms),
            queue_limit: o.queue_limit.unwrap_or(base.queue_limit),
        }
    }
}

/// The TOML file. Every field is optional; flags win over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: FileServer,
    pub limits: FileLimits,
    pub models: ModelsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileServer {
    pub model_repository: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub onnxruntime_library: Option<PathBuf>,
    pub intra_op_threads: Option<usize>,
    pub batch_workers: Option<usize>,
    pub decode_workers: Option<usize>,
    pub spinning: Option<bool>,
    pub max_in_flight_images: Option<usize>,
    pub default_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub default_precision: Option<effnet_repository::Precision>,
    pub drain_period_ms: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub shadow_fraction: Option<f64>,
    pub feedback_ttl_ms: Option<u64>,
    pub feedback_capacity: Option<usize>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub metrics_require_token: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileLimits {
    pub max_request_bytes: Option<usize>,
    pub max_images_per_request: Option<usize>,
    pub max_image_width: Option<u32>,
    pub max_image_height: Option<u32>,
    pub max_image_pixels: Option<u64>,
    /// Milliseconds of CPU time one image may take to decode; 0 turns the limit off.
    pub max_decode_ms: Option<u64>,
}

/// Flags of `effnet-serve serve`. Each also reads an environment variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "EFFNET_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory of the model repository (one subdirectory per model).
    #[arg(long, env = "EFFNET_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,

    /// Address of the HTTP listener (REST, Open Inference Protocol, metrics).
    #[arg(long, env = "EFFNET_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Address of the gRPC listener.
    #[arg(long, env = "EFFNET_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,

    /// Serve /metrics on this separate address as well.
    #[arg(long, env = "EFFNET_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Path of libonnxruntime.so.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub onnxruntime_library: Option<PathBuf>,

    /// Threads of ONNX Runtime's shared intra-op pool [default: the CPU quota].
    #[arg(long, env = "EFFNET_INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,

    /// Batches running at once across all models [default: 1 per 4 cores, at least 1].
    #[arg(long, env = "EFFNET_BATCH_WORKERS")]
    pub batch_workers: Option<usize>,

    /// Threads decoding and preprocessing images [default: the CPU quota].
    #[arg(long, env = "EFFNET_DECODE_WORKERS")]
    pub decode_workers: Option<usize>,

    /// Let idle ONNX Runtime threads busy-wait for work [default: false].
    #[arg(long, env = "EFFNET_SPINNING")]
    pub spinning: Option<bool>,

    /// Images accepted and not yet completed, across all models [default: 1024].
    #[arg(long, env = "EFFNET_MAX_IN_FLIGHT_IMAGES")]
    pub max_in_flight_images: Option<usize>,

    /// Deadline in milliseconds of requests that set none [default: 30000].
    #[arg(long, env = "EFFNET_DEFAULT_TIMEOUT_MS")]
    pub default_timeout_ms: Option<u64>,

    /// Maximum pause in milliseconds between two reads of an HTTP request
    /// body before the request fails [default: 30000].
    #[arg(long, env = "EFFNET_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,

    /// Precision that a model alias without one (efficientnet-lite0) resolves to [default: int8].
    #[arg(long, env = "EFFNET_DEFAULT_PRECISION", value_parser = parse_precision)]
    pub default_precision: Option<effnet_repository::Precision>,

    /// Milliseconds between SIGTERM and closing the listeners [default: 5000].
    #[arg(long, env = "EFFNET_DRAIN_PERIOD_MS")]
    pub drain_period_ms: Option<u64>,

    /// Milliseconds that queued and running work gets to finish after the
    /// listeners close [default: 20000].
    #[arg(long, env = "EFFNET_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,

    /// Maximum request body and gRPC message in bytes [default: 33554432].
    #[arg(long, env = "EFFNET_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Milliseconds of CPU time one image may take to decode; 0 turns the limit off
    /// [default: 5000].
    #[arg(long, env = "EFFNET_MAX_DECODE_MS")]
    pub max_decode_ms: Option<u64>,

    /// Log format [default: text].
    #[arg(long, env = "EFFNET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Fraction (0 to 1) of INT8 requests also run on the FP32 model to
    /// measure their agreement [default: 0].
    #[arg(long, env = "EFFNET_SHADOW_FRACTION")]
    pub shadow_fraction: Option<f64>,

    /// Milliseconds a classify result stays available to POST /v1/feedback
    /// [default: 600000].
    #[arg(long, env = "EFFNET_FEEDBACK_TTL_MS")]
    pub feedback_ttl_ms: Option<u64>,

    /// Classify results remembered for POST /v1/feedback at most; 0 turns it
    /// off [default: 100000].
    #[arg(long, env = "EFFNET_FEEDBACK_CAPACITY")]
    pub feedback_capacity: Option<usize>,

    /// Bearer token that management endpoints (GET /v1/config) require
    /// [default: none, endpoints open].
    #[arg(
        long,
        env = "EFFNET_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,

    /// File whose content (trailing newline removed) is the admin token.
    #[arg(long, env = "EFFNET_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Require the admin token on /metrics as well [default: false].
    #[arg(long, env = "EFFNET_METRICS_REQUIRE_TOKEN")]
    pub metrics_require_token: Option<bool>,

    /// PEM certificate chain: serve HTTPS and gRPC over TLS (needs --tls-key).
    #[arg(long, env = "EFFNET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "EFFNET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn parse_precision(value: &str) -> Result<effnet_repository::Precision, String> {
    match value {
        "fp32" => Ok(effnet_repository::Precision::Fp32),
        "int8" => Ok(effnet_repository::Precision::Int8),
        other => Err(format!(
            "invalid precision {other:?}; expected fp32 or int8"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("failed to read the admin token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

// === impl AdminToken ===

impl AdminToken {
    /// Wraps a token; rejects an empty one, which would protect nothing.
    pub fn new(token: String) -> Result<Self, ConfigError> {
        if token.is_empty() {
            return Err(ConfigError::Invalid {
                name: "admin_token",
                reason: "is empty".into(),
            });
        }
        Ok(Self(token))
    }

    /// Compares a presented token in time independent of where they differ:
    /// both sides are hashed first, so neither the length nor a common
    /// prefix shows in the timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};

        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented);
        let difference = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

// === impl Config ===

impl Config {
    /// Merges flags (and their environment variables) over the file over the
    /// defaults, and derives thread settings from the CPU quota where unset.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        Self::merge(args, file, cpu::cpu_budget())
    }

    fn merge(args: &ServeArgs, file: FileConfig, cpu_budget: f64) -> Result<Self, ConfigError> {
        let s = &file.server;
        let cores = (cpu_budget.ceil() as usize).max(1);

        let threads = ThreadConfig {
            intra_op_threads: args
                .intra_op_threads
                .or(s.intra_op_threads)
                .unwrap_or(cores),
            batch_workers: args
                .batch_workers
                .or(s.batch_workers)
                .unwrap_or((cores / 4).max(1)),
            decode_workers: args.decode_workers.or(s.decode_workers).unwrap_or(cores),
            spinning: args.spinning.or(s.spinning).unwrap_or(false),
            cpu_budget,
        };
        for (name, value) in [
            ("intra_op_threads", threads.intra_op_threads),
            ("batch_workers", threads.batch_workers),
            ("decode_workers", threads.decode_workers),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }

        let defaults = effnet_imaging::Limits::default();
        let l = &file.limits;
        let limits = effnet_imaging::Limits {
            max_width: l.max_image_width.unwrap_or(defaults.max_width),
            max_height: l.max_image_height.unwrap_or(defaults.max_height),
            max_pixels: l.max_image_pixels.unwrap_or(defaults.max_pixels),
            max_decode_time: match args.max_decode_ms.or(l.max_decode_ms) {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => defaults.max_decode_time,
            },
            ..defaults
        };
        let max_request_bytes = args
            .max_request_bytes
            .or(l.max_request_bytes)
            .unwrap_or(32 * 1024 * 1024);

        let admin_token = admin_token(args, s)?;
        let metrics_require_token = args
            .metrics_require_token
            .or(s.metrics_require_token)
            .unwrap_or(false);
        let tls = match (
            args.tls_cert.clone().or_else(|| s.tls_cert.clone()),
            args.tls_key.clone().or_else(|| s.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "tls_cert",
                    reason: "tls_cert and tls_key must be set together".into(),
                });
            }
        };

        let config = Self {
            model_repository: args
                .model_repository
                .clone()
                .or_else(|| s.model_repository.clone())
                .unwrap_or_else(|| PathBuf::from("model-repository")),
            http_addr: args
                .http_addr
                .or(s.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8000))),
            grpc_addr: args.grpc_addr.or(s.grpc_addr),
            metrics_addr: args.metrics_addr.or(s.metrics_addr),
            onnxruntime_library: args
                .onnxruntime_library
                .clone()
                .or_else(|| s.onnxruntime_library.clone())
                .ok_or(ConfigError::Invalid {
                    name: "onnxruntime_library",
                    reason: "not set; pass --onnxruntime-library or set ORT_DYLIB_PATH to libonnxruntime.so".into(),
                })?,
            threads,
            admission: AdmissionConfig {
                max_in_flight_images: args
                    .max_in_flight_images
                    .or(s.max_in_flight_images)
                    .unwrap_or(1024),
                default_timeout: Duration::from_millis(
                    args.default_timeout_ms.or(s.default_timeout_ms).unwrap_or(30_000),
                ),
            },
            limits: effnet_imaging::Limits {
                max_input_bytes: max_request_bytes,
                ..limits
            },
            max_images_per_request: l.max_images_per_request.unwrap_or(64),
            max_request_bytes,
            body_timeout: Duration::from_millis(
                args.body_timeout_ms
                    .or(s.body_timeout_ms)
                    .unwrap_or(30_000)
                    .max(1),
            ),
            default_precision: args
                .default_precision
                .or(s.default_precision)
                .unwrap_or(effnet_repository::Precision::Int8),
            shutdown: ShutdownConfig {
                drain_period: Duration::from_millis(
                    args.drain_period_ms.or(s.drain_period_ms).unwrap_or(5_000),
                ),
                timeout: Duration::from_millis(
                    args.shutdown_timeout_ms.or(s.shutdown_timeout_ms).unwrap_or(20_000),
                ),
            },
            models: file.models,
            log_format: args.log_format.or(s.log_format).unwrap_or(LogFormat::Text),
            shadow_fraction: args.shadow_fraction.or(s.shadow_fraction).unwrap_or(0.0),
            feedback: FeedbackConfig {
                ttl: Duration::from_millis(
                    args.feedback_ttl_ms.or(s.feedback_ttl_ms).unwrap_or(600_000),
                ),
                capacity: args
                    .feedback_capacity
                    .or(s.feedback_capacity)
                    .unwrap_or(100_000),
            },
            admin_token,
            metrics_require_token,
            tls,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.metrics_require_token && self.admin_token.is_none() {
            return Err(ConfigError::Invalid {
                name: "metrics_require_token",
                reason: "needs an admin token (admin_token or admin_token_file)".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.shadow_fraction) {
            return Err(ConfigError::Invalid {
                name: "shadow_fraction",
                reason: format!("must be from 0 to 1, got {}", self.shadow_fraction),
            });
        }
        let mut names = vec!["default".to_string()];
        names.extend(self.models.overrides.keys().cloned());
        for name in names {
            let settings = self.models.for_model(&name);
            if settings.max_batch_size == 0 {
                return Err(ConfigError::Invalid {
                    name: "models.max_batch_size",
                    reason: format!("model {name}: must be at least 1"),
                });
            }
            if settings.queue_limit < settings.max_batch_size {
                return Err(ConfigError::Invalid {
                    name: "models.queue_limit",
                    reason: format!(
                        "model {name}: queue_limit {} is below max_batch_size {}",
                        settings.queue_limit, settings.max_batch_size
                    ),
                });
            }
        }
        if self.max_images_per_request == 0 {
            return Err(ConfigError::Invalid {
                name: "limits.max_images_per_request",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// The admin token from the flag, the token file, or the config file, in
/// that order; a token and a token file together are rejected.
fn admin_token(args: &ServeArgs, file: &FileServer) -> Result<Option<AdminToken>, ConfigError> {
    let inline = args
        .admin_token
        .clone()
        .or_else(|| file.admin_token.clone());
    let path = args
        .admin_token_file
        .clone()
        .or_else(|| file.admin_token_file.clone());
    let token = match (inline, path) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                name: "admin_token",
                reason: "set admin_token or admin_token_file, not both".into(),
            });
        }
        (Some(token), None) => token,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::TokenFile { path, source })?;
            text.trim_end_matches(['\r', '\n']).to_string()
        }
        (None, None) => return Ok(None),
    };
    AdminToken::new(token).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            onnxruntime_library: Some("/lib/libonnxruntime.so".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn defaults_follow_cpu_budget() {
        let config = Config::merge(&args(), FileConfig::default(), 8.0).unwrap();

        assert_eq!(config.threads.intra_op_threads, 8);
        assert_eq!(config.threads.batch_workers, 2);
        assert_eq!(config.threads.decode_workers, 8);
    }

    #[test]
    fn fractional_quota_rounds_up() {
        let config = Config::merge(&args(), FileConfig::default(), 1.5).unwrap();

        assert_eq!(config.threads.intra_op_threads, 2);
        assert_eq!(config.threads.batch_workers, 1);
    }

    #[test]
    fn flags_override_file() {
        let file: FileConfig =
            toml::from_str("[server]\nintra_op_threads = 3\nhttp_addr = \"127.0.0.1:9000\"\n")
                .unwrap();
        let mut args = args();
        args.intra_op_threads = Some(5);

        let config = Config::merge(&args, file, 2.0).unwrap();

        assert_eq!(config.threads.intra_op_threads, 5);
        assert_eq!(config.http_addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn decode_time_limit() {
        let default = Config::merge(&args(), FileConfig::default(), 2.0).unwrap();
        let file: FileConfig = toml::from_str("[limits]\nmax_decode_ms = 0\n").unwrap();
        let off = Config::merge(&args(), file, 2.0).unwrap();
        let file: FileConfig = toml::from_str("[limits]\nmax_decode_ms = 0\n").unwrap();
        let mut flagged = args();
        flagged.max_decode_ms = Some(250);
        let flag = Config::merge(&flagged, file, 2.0).unwrap();

        assert_eq!(default.limits.max_decode_time, Some(Duration::from_secs(5)));
        assert_eq!(off.limits.max_decode_time, None);
        assert_eq!(
            flag.limits.max_decode_time,
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn model_overrides_apply_on_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            [models.default]
            max_batch_size = 8
            queue_limit = 100

            [models.efficientnet-lite0-int8]
            max_queue_delay_ms = 5
            "#,
        )
        .unwrap();

        let config = Config::merge(&args(), file, 2.0).unwrap();
        let lite0 = config.models.for_model("efficientnet-lite0-int8");
        let lite1 = config.models.for_model("efficientnet-lite1-int8");

        assert_eq!(lite0.max_batch_size, 8);
        assert_eq!(lite0.max_queue_delay_ms, 5);
        assert_eq!(lite0.queue_limit, 100);
        assert_eq!(lite1.max_queue_delay_ms, 0);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = toml::from_str::<FileConfig>("[server]\nhttp_adr = \"x\"\n").unwrap_err();

        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn queue_limit_below_batch_size_is_rejected() {
        let file: FileConfig =
            toml::from_str("[models.default]\nmax_batch_size = 32\nqueue_limit = 8\n").unwrap();

        let error = Config::merge(&args(), file, 2.0).unwrap_err().to_string();

        assert!(
            error.contains("queue_limit 8 is below max_batch_size 32"),
            "{error}"
        );
    }

    #[test]
    fn shadow_fraction_out_of_range_is_rejected() {
        let mut args = args();
        args.shadow_fraction = Some(1.5);

        let error = Config::merge(&args, FileConfig::default(), 2.0)
            .unwrap_err()
            .to_string();

        assert!(error.contains("shadow_fraction"), "{error}");
    }

    #[test]
    fn feedback_settings_from_file() {
        let file: FileConfig = toml::from_str(
            "[server]\nshadow_fraction = 0.01\nfeedback_ttl_ms = 500\nfeedback_capacity = 10\n",
        )
        .unwrap();

        let config = Config::merge(&args(), file, 2.0).unwrap();

        assert_eq!(config.shadow_fraction, 0.01);
        assert_eq!(config.feedback.ttl, Duration::from_millis(500));
        assert_eq!(config.feedback.capacity, 10);
    }

    #[test]
    fn missing_library_names_the_fix() {
        let error = Config::merge(&ServeArgs::default(), FileConfig::default(), 2.0)
            .unwrap_err()
            .to_string();

        assert!(error.contains("ORT_DYLIB_PATH"), "{error}");
    }

    #[test]
    fn admin_token_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut args = args();
        args.admin_token_file = Some(path);

        let config = Config::merge(&args, FileConfig::default(), 2.0).unwrap();
        let token = config.admin_token.unwrap();

        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cret\n"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn admin_token_is_redacted() {
        let mut args = args();
        args.admin_token = Some("s3cret".into());

        let config = Config::merge(&args, FileConfig::default(), 2.0).unwrap();

        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn empty_admin_token_is_rejected() {
        let mut args = args();
        args.admin_token = Some(String::new());

        let error = Config::merge(&args, FileConfig::default(), 2.0)
            .unwrap_err()
            .to_string();

        assert!(error.contains("admin_token"), "{error}");
    }

    #[test]
    fn metrics_token_needs_admin_token() {
        let mut args = args();
        args.metrics_require_token = Some(true);

        let error = Config::merge(&args, FileConfig::default(), 2.0)
            .unwrap_err()
            .to_string();

        assert!(error.contains("metrics_require_token"), "{error}");
    }

    #[test]
    fn tls_needs_cert_and_key() {
        let file: FileConfig = toml::from_str("[server]\ntls_cert = \"cert.pem\"\n").unwrap();

        let error = Config::merge(&args(), file, 2.0).unwrap_err().to_string();

        assert!(error.contains("tls_key"), "{error}");
    }
}
