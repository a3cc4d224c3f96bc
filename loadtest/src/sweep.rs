//! `sweep`: bisection for the highest open-loop rate whose p99 latency meets
//! a target.
//!
//! A short closed-loop probe measures the saturated throughput, which bounds
//! the search from above. Each step then runs the open loop at the middle of
//! the interval; a step passes when p99 is within the target, nothing
//! failed, no request missed its schedule and at least 95 % of the
//! requested rate was sent. The search stops after `--max-steps` steps, when
//! the interval is narrower than 2 % of its top, or when the next step would
//! pass `--max-total`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde::Serialize;

use crate::{
    LoadArgs,
    load::{self, Pacing},
    report::Report,
};

#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    load: LoadArgs,

    /// The p99 latency a rate must meet, in milliseconds.
    #[arg(long)]
    p99_target_ms: f64,

    /// Upper bound of the search in requests/s [default: the closed-loop
    /// saturated throughput].
    #[arg(long)]
    max_rate: Option<f64>,

    /// Clients of the closed-loop probe.
    #[arg(long, default_value_t = 8)]
    probe_concurrency: usize,

    /// Bisection steps at most.
    #[arg(long, default_value_t = 7)]
    max_steps: usize,

    /// Seconds the whole sweep may take at most.
    #[arg(long, default_value_t = 120.0)]
    max_total: f64,

    /// Write every step as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One measured rate.
#[derive(Debug, Serialize)]
struct Step {
    rate: f64,
    passed: bool,
    report: Report,
}

#[derive(Debug, Serialize)]
struct SweepResult {
    p99_target_ms: f64,
    saturated_throughput: Option<f64>,
    /// Highest rate that passed; `None` if none did.
    best_rate: Option<f64>,
    steps: Vec<Step>,
}

pub fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    // Rejects NaN as well.
    if args.p99_target_ms.is_nan() || args.p99_target_ms <= 0.0 {
        bail!("--p99-target-ms must be positive");
    }
    let prepared = crate::prepare(&args.load)?;
    let limits = args.load.limits()?;
    let runtime = crate::runtime(args.load.client_threads)?;
    let started = Instant::now();
    let step_time = limits.warmup + limits.duration;
    let max_total = Duration::try_from_secs_f64(args.max_total)?;

    let run = |pacing: Pacing| {
        let workload = Arc::clone(&prepared.workload);
        let outcome = runtime.block_on(load::run(workload, pacing, &limits));
        outcome.report(prepared.addr, args.load.protocol, pacing)
    };

    let (mut high, saturated) = match args.max_rate {
        Some(rate) => (rate, None),
        None => {
            let probe = run(Pacing::Closed {
                concurrency: args.probe_concurrency,
            });
            println!("closed-loop probe: {:.1} req/s", probe.total.throughput);
            (probe.total.throughput, Some(probe.total.throughput))
        }
    };
    if high.is_nan() || high <= 0.0 {
        bail!("no request succeeded in the closed-loop probe");
    }

    let mut low = 0.0;
    let mut best = None;
    let mut steps = Vec::new();
    let mut rate = high;
    for _ in 0..args.max_steps {
        if started.elapsed() + step_time > max_total || (high - low) < 0.02 * high {
            break;
        }
        let report = run(Pacing::Open {
            rate,
            max_outstanding: args.load.max_outstanding,
        });
        let p99 = report.total.latency.at(99.0).unwrap_or(f64::INFINITY);
        let passed = p99 <= args.p99_target_ms
            && report.total.error_count() == 0
            && report.schedule_misses == 0
            && report.achieved_rate >= 0.95 * rate;
        println!(
            "rate {rate:.1}/s: p99 {p99:.1} ms, {:.1} req/s, {} errors, {} misses: {}",
            report.total.throughput,
            report.total.error_count(),
            report.schedule_misses,
            if passed { "pass" } else { "fail" }
        );
        steps.push(Step {
            rate,
            passed,
            report,
        });

        if passed {
            low = rate;
            best = Some(rate);
        } else {
            high = rate;
        }
        rate = (low + high) / 2.0;
    }

    match best {
        Some(rate) => println!(
            "highest rate meeting p99 <= {} ms: {rate:.1}/s",
            args.p99_target_ms
        ),
        None => println!("no measured rate met p99 <= {} ms", args.p99_target_ms),
    }
    if let Some(path) = &args.json {
        crate::write_json(
            path,
            &SweepResult {
                p99_target_ms: args.p99_target_ms,
                saturated_throughput: saturated,
                best_rate: best,
                steps,
            },
        )?;
    }
    Ok(())
}
