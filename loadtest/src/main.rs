//! `effnet-loadtest`: a load generator for effnet-serve and the in-process
//! ceiling it is compared against.
//!
//! - `run`: closed loop (`--concurrency`) or open loop (`--rate`) for a
//!   bounded time and request count, optionally after measuring the ceiling
//!   of the same models (`--with-ceiling`) so that the server/ceiling ratio
//!   comes from one run on a noisy machine.
//! - `sweep`: the highest open-loop rate whose p99 meets a target.
//! - `ceiling`: decode, preprocess and inference in this process, no network.
//!
//! Traffic goes only to the one `--target`, which must be a loopback address
//! unless `--allow-remote` is passed.

mod ceiling;
mod load;
mod protocol;
mod report;
mod schedule;
mod sweep;
mod target;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;

use crate::{
    ceiling::CeilingSettings,
    load::{Pacing, RunLimits, Workload},
    protocol::{OipInput, Payload, Protocol, Tensor},
    report::Report,
    schedule::ModelMix,
};

#[derive(Debug, Parser)]
#[command(
    name = "effnet-loadtest",
    about = "Load generator and ceiling benchmark for effnet-serve"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Send a bounded load and report throughput and latency.
    Run(RunArgs),
    /// Find the highest open-loop rate whose p99 meets a target.
    Sweep(sweep::SweepArgs),
    /// Measure images/s in process: decode, preprocess and inference.
    Ceiling(CeilingArgs),
}

/// What to send, where, and for how long.
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Server address, HOST:PORT. Must be loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8000")]
    target: String,

    /// Allow a target that is not a loopback address.
    #[arg(long)]
    allow_remote: bool,

    #[arg(long, value_enum, default_value_t = Protocol::Rest)]
    protocol: Protocol,

    /// Input of OIP requests: the encoded image or the preprocessed tensor.
    /// oip-json takes only fp32, because a JSON string cannot hold an
    /// encoded image; rest and grpc-classify take only bytes.
    #[arg(long, value_enum, default_value_t = OipInput::Bytes)]
    oip_input: OipInput,

    /// Name of the OIP input tensor.
    #[arg(long, default_value = "input")]
    oip_input_name: String,

    /// Model and weight, NAME or NAME=WEIGHT; repeat for a mix.
    #[arg(long = "model", default_value = "efficientnet-lite0-int8")]
    models: Vec<String>,

    #[command(flatten)]
    data: DataArgs,

    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,

    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Requests sent at most, warm-up included.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,

    /// Open loop: requests in flight at most; a request due while this many
    /// are outstanding is not sent and counts as a schedule miss.
    #[arg(long, default_value_t = 256)]
    max_outstanding: usize,

    /// Threads of the client's async runtime. One keeps the client's share
    /// of a small machine's CPU low.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// The images and the model repository.
#[derive(Debug, clap::Args)]
pub(crate) struct DataArgs {
    /// Folder of encoded images to send.
    #[arg(long, default_value = "../shared/data/imagenet-sample/images")]
    images: PathBuf,

    /// Images used at most (the first, by file name).
    #[arg(long, default_value_t = 100)]
    max_images: usize,

    /// Model repository, for input resolutions and the ceiling.
    #[arg(
        long,
        env = "EFFNET_MODEL_REPOSITORY",
        default_value = "model-repository"
    )]
    model_repository: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    load: LoadArgs,

    /// Closed loop with this many clients.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,

    /// Open loop at this many requests per second.
    #[arg(long)]
    rate: Option<f64>,

    /// Measure the in-process ceiling of the same models first and report
    /// the server/ceiling ratio.
    #[arg(long)]
    with_ceiling: bool,

    #[command(flatten)]
    ceiling: CeilingOptions,

    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Write the markdown table here instead of stdout.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Settings of the in-process ceiling.
#[derive(Debug, clap::Args)]
struct CeilingOptions {
    /// Path of libonnxruntime.so.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    onnxruntime_library: Option<PathBuf>,

    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    batch_sizes: Vec<usize>,

    /// Seconds each batch size is timed.
    #[arg(long, default_value_t = 3.0)]
    seconds_per_size: f64,

    /// Threads of the global intra-op pool [default: cores, as the server].
    #[arg(long)]
    intra_op_threads: Option<usize>,

    /// Decode threads [default: cores, as the server].
    #[arg(long)]
    decode_threads: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct CeilingArgs {
    /// Models to measure.
    #[arg(long = "model", required = true)]
    models: Vec<String>,

    #[command(flatten)]
    data: DataArgs,

    #[command(flatten)]
    ceiling: CeilingOptions,

    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EFFNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Sweep(args) => sweep::sweep(args),
        Command::Ceiling(args) => ceiling_only(args),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args.load)?;
    let pacing = match (args.concurrency, args.rate) {
        (_, Some(rate)) if rate > 0.0 && rate.is_finite() => Pacing::Open {
            rate,
            max_outstanding: args.load.max_outstanding,
        },
        (_, Some(rate)) => bail!("--rate {rate} is not a positive number"),
        (concurrency, None) => Pacing::Closed {
            concurrency: concurrency.unwrap_or(1).max(1),
        },
    };

    // The ceiling and the server both need the whole CPU: measure the
    // ceiling first, then the server, never both at once.
    let ceilings = if args.with_ceiling {
        let names = prepared.workload.mix.names().to_vec();
        ceiling::measure(
            &args.ceiling.settings(&args.load.data)?,
            &names,
            &prepared.images,
        )?
    } else {
        Vec::new()
    };

    let limits = args.load.limits()?;
    let workload = prepared.workload.clone();
    let outcome = runtime(args.load.client_threads)?
        .block_on(async move { load::run(workload, pacing, &limits).await });

    let mut report = outcome.report(prepared.addr, args.load.protocol, pacing);
    if !ceilings.is_empty() {
        let rates: Vec<f64> = ceilings.iter().map(|c| c.best().1).collect();
        report.ceiling = ceilings
            .iter()
            .map(|c| (c.model.clone(), c.best().1))
            .collect();
        let mix = ceiling::mix_ceiling(&prepared.workload.mix.shares(), &rates);
        report.ceiling_ratio = Some(report.total.throughput / mix);
    }
    write_report(&report, &args.output)?;
    Ok(())
}

fn ceiling_only(args: CeilingArgs) -> anyhow::Result<()> {
    let images = ceiling::load_images(&args.data.images, args.data.max_images)
        .with_context(|| format!("failed to read images from {}", args.data.images.display()))?;
    anyhow::ensure!(
        !images.is_empty(),
        "no images in {}",
        args.data.images.display()
    );
    let settings = args.ceiling.settings(&args.data)?;
    let results = ceiling::measure(&settings, &args.models, &images)?;

    println!(
        "in-process ceiling: {} images, intra-op threads {}, decode threads {}\n",
        images.len(),
        settings.intra_op_threads,
        settings.decode_threads
    );
    print!("| model |");
    for size in &settings.batch_sizes {
        print!(" batch {size} |");
    }
    println!(" best |");
    println!(
        "| --- |{} ---: |",
        " ---: |".repeat(settings.batch_sizes.len())
    );
    for result in &results {
        print!("| {} |", result.model);
        for (_, rate) in &result.batches {
            print!(" {rate:.1} |");
        }
        let (size, rate) = result.best();
        println!(" {rate:.1} (batch {size}) |");
    }
    if let Some(path) = &args.json {
        write_json(path, &results)?;
    }
    Ok(())
}

/// The workload and what it was built from.
pub(crate) struct Prepared {
    pub(crate) addr: SocketAddr,
    pub(crate) images: Vec<Bytes>,
    pub(crate) workload: Arc<Workload>,
}

pub(crate) fn prepare(args: &LoadArgs) -> anyhow::Result<Prepared> {
    let addr = target::resolve(&args.target, args.allow_remote)?;
    let mix = ModelMix::parse(&args.models)?;
    if !args.protocol.accepts(args.oip_input) {
        let input = match args.oip_input {
            OipInput::Bytes => "bytes",
            OipInput::Fp32 => "fp32",
        };
        bail!(
            "--protocol {} cannot carry --oip-input {input}: rest and grpc-classify take \
             encoded images, and oip-json takes only fp32 because a JSON string cannot \
             hold an encoded image",
            args.protocol.name()
        );
    }

    let data = &args.data;
    let images = ceiling::load_images(&data.images, data.max_images)
        .with_context(|| format!("failed to read images from {}", data.images.display()))?;
    anyhow::ensure!(!images.is_empty(), "no images in {}", data.images.display());

    let payloads = match (args.protocol, args.oip_input) {
        (_, OipInput::Bytes) => {
            let per_image: Vec<Payload> = images
                .iter()
                .map(|image| {
                    args.protocol
                        .payload(&args.oip_input_name, Tensor::Bytes(image))
                })
                .collect();
            vec![per_image; mix.names().len()]
        }
        (_, OipInput::Fp32) => fp32_payloads(args, &mix, &images)?,
    };
    let workload = Arc::new(Workload::new(args.protocol, mix, payloads, addr));
    Ok(Prepared {
        addr,
        images,
        workload,
    })
}

/// Preprocessed FP32 tensors of every image for every model, with the
/// server's preprocessing at each model's resolution.
fn fp32_payloads(
    args: &LoadArgs,
    mix: &ModelMix,
    images: &[Bytes],
) -> anyhow::Result<Vec<Vec<Payload>>> {
    let repository = effnet_repository::Repository::open(&args.data.model_repository)?;
    let mut payloads = Vec::new();
    for model in mix.names() {
        let entry = repository
            .models
            .get(model)
            .with_context(|| format!("model {model} is not in {}", repository.root.display()))?;
        let spec = ceiling::preprocess_spec(&entry.manifest);
        let mut per_image = Vec::with_capacity(images.len());
        for (index, image) in images.iter().enumerate() {
            let (tensor, _) =
                effnet_imaging::decode_and_preprocess(image, &Default::default(), &spec)
                    .with_context(|| format!("failed to preprocess image {index}"))?;
            let input = Tensor::Fp32 {
                data: &tensor,
                resolution: spec.resolution,
            };
            per_image.push(args.protocol.payload(&args.oip_input_name, input));
        }
        payloads.push(per_image);
    }
    Ok(payloads)
}

pub(crate) fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}

fn write_report(report: &Report, output: &OutputArgs) -> anyhow::Result<()> {
    let markdown = report.markdown();
    match &output.markdown {
        Some(path) => std::fs::write(path, &markdown)
            .with_context(|| format!("failed to write {}", path.display()))?,
        None => print!("{markdown}"),
    }
    if let Some(path) = &output.json {
        write_json(path, report)?;
    }
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("failed to write {}", path.display()))
}

// === impl LoadArgs ===

impl LoadArgs {
    pub(crate) fn limits(&self) -> anyhow::Result<RunLimits> {
        Ok(RunLimits {
            duration: seconds("--duration", self.duration)?,
            warmup: seconds("--warmup", self.warmup)?,
            max_requests: self.requests,
            timeout: seconds("--timeout", self.timeout)?,
        })
    }
}

// === impl CeilingOptions ===

impl CeilingOptions {
    fn settings(&self, data: &DataArgs) -> anyhow::Result<CeilingSettings> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // NOTE: the server also caps its default threads by the container's
        // CPU quota; here the default is the CPUs the process may run on,
        // the same where no quota is set.
        let library = self
            .onnxruntime_library
            .clone()
            .context("the ceiling needs --onnxruntime-library or ORT_DYLIB_PATH")?;
        Ok(CeilingSettings {
            library,
            repository: data.model_repository.clone(),
            intra_op_threads: self.intra_op_threads.unwrap_or(cores),
            decode_threads: self.decode_threads.unwrap_or(cores),
            batch_sizes: self.batch_sizes.clone(),
            seconds_per_size: seconds("--seconds-per-size", self.seconds_per_size)?,
        })
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{flag} {value} is not a number of seconds"))
}
