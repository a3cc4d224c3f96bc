//! `effnet-serve`: an inference server for the EfficientNet-Lite image
//! classifiers on ONNX Runtime.
//!
//! Request path: API edge (`http`, `grpc`) → [`service`] (model resolution,
//! decode pool, batching queue) → `effnet-scheduler` → `effnet-engine`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod config;
mod cpu;
mod decode;
mod error;
mod feedback;
mod grpc;
mod http;
mod metrics;
mod models;
mod oip;
mod serve;
mod service;
mod shadow;
mod tls;
mod topk;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "effnet-serve",
    version,
    about = "Serve EfficientNet-Lite image classifiers over REST and gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load every model of the repository and serve HTTP (and gRPC).
    Serve(config::ServeArgs),
    /// Classify local image files with the same code path as the server.
    Classify(cli::ClassifyArgs),
    /// Print per-image decode, preprocess and inference times of each model.
    Bench(cli::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Classify(args) => cli::classify(args).await,
            Command::Bench(args) => cli::bench(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "exiting");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
