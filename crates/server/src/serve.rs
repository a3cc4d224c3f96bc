//! `effnet-serve serve`: start-up, the listeners, and graceful shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use effnet_engine::{Engine, EngineConfig};
use effnet_repository::Repository;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::{Config, LogFormat, ServeArgs},
    grpc, http,
    service::InferenceService,
    tls,
};

/// Runs the server until SIGTERM or SIGINT, then drains and exits.
///
/// On a signal, readiness turns false at once, but requests are still
/// accepted for the drain period. Then the listeners close, and queued and
/// running work gets the shutdown timeout to finish.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    init_logging(config.log_format);

    let (service, engine) = start(config).await?;
    let config = service.config().clone();

    let tls = config.tls.as_ref().map(tls::http_acceptor).transpose()?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("failed to bind the HTTP address {}", config.http_addr))?;
    tracing::info!(addr = %http_listener.local_addr()?, tls = tls.is_some(), "http listening");

    let (close_tx, close_rx) = watch::channel(false);
    let http_server = tokio::spawn({
        let router = http::router(service.clone());
        let closed = wait_closed(close_rx.clone());
        async move {
            match tls {
                Some(acceptor) => {
                    tls::serve(http_listener, acceptor, router, closed).await;
                    Ok(())
                }
                None => {
                    axum::serve(http_listener, router)
                        .with_graceful_shutdown(closed)
                        .await
                }
            }
        }
    });

    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to bind the metrics address {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let router = http::metrics::router(service.clone());
            let closed = wait_closed(close_rx.clone());
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(closed)
                    .await
            }))
        }
        None => None,
    };

    let grpc_server = match config.grpc_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("failed to bind the gRPC address {addr}"))?;
            let identity = config.tls.as_ref().map(tls::grpc_identity).transpose()?;
            tracing::info!(addr = %listener.local_addr()?, tls = identity.is_some(), "grpc listening");
            let closed = wait_closed(close_rx.clone());
            Some(tokio::spawn(grpc::serve(
                listener,
                service.clone(),
                identity,
                closed,
            )))
        }
        None => None,
    };

    let load = {
        let service = service.clone();
        let root = config.model_repository.clone();
        tokio::spawn(async move {
            service.load_models(engine, &root).await;
            tracing::info!(ready = service.is_ready(), "model loading finished");
        })
    };

    shutdown_signal().await;
    tracing::info!(
        drain_ms = config.shutdown.drain_period.as_millis() as u64,
        "shutdown signal received, readiness off"
    );
    service.start_draining();
    tokio::time::sleep(config.shutdown.drain_period).await;

    tracing::info!("closing listeners");
    let _ = close_tx.send(true);
    load.abort();

    let finish = async {
        let _ = http_server.await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        if let Some(grpc_server) = grpc_server
            && let Ok(Err(error)) = grpc_server.await
        {
            tracing::error!(%error, "grpc server failed");
        }
        // Requests accepted before the listeners closed may still be
        // decoding. The scheduler closes only after every connection is
        // done, so that none of them is rejected.
        service.scheduler().shutdown().await;
    };
    match tokio::time::timeout(config.shutdown.timeout, finish).await {
        Ok(()) => tracing::info!("shutdown complete"),
        Err(_) => tracing::warn!(
            timeout_ms = config.shutdown.timeout.as_millis() as u64,
            "shutdown timeout reached with work still running"
        ),
    }
    Ok(())
}

/// Reads the repository, creates the engine and the service. Models are
/// loaded afterwards, so that the probes respond during loading.
pub async fn start(config: Config) -> anyhow::Result<(Arc<InferenceService>, Arc<Engine>)> {
    let repository = Repository::open(&config.model_repository)?;
    tracing::info!(
        repository = %config.model_repository.display(),
        models = repository.models.len(),
        cpu_budget = config.threads.cpu_budget,
        intra_op_threads = config.threads.intra_op_threads,
        batch_workers = config.threads.batch_workers,
        decode_workers = config.threads.decode_workers,
        max_in_flight_images = config.admission.max_in_flight_images,
        shadow_fraction = config.shadow_fraction,
        "starting"
    );

    let engine = Engine::new(EngineConfig {
        library: config.onnxruntime_library.clone(),
        intra_op_threads: config.threads.intra_op_threads,
        spinning: config.threads.spinning,
        instances_per_model: 1,
    })?;
    let service = InferenceService::new(config, repository)?;
    Ok((Arc::new(service), Arc::new(engine)))
}

async fn wait_closed(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|closed| *closed).await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EFFNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
