//! Latency recording and the run report (JSON and a markdown table).
//!
//! Each worker owns a [`Recorder`]; recorders are merged once at the end, so
//! the hot path takes no lock. Latencies are stored in microseconds in HDR
//! histograms with three significant digits (at most 0.1 % error).

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold, in microseconds (10 minutes);
/// longer ones are clamped to it.
const MAX_LATENCY_US: u64 = 600_000_000;

/// The percentiles every report lists.
pub const PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

/// Outcomes of one worker's requests, per model.
#[derive(Debug, Clone)]
pub struct Recorder {
    models: BTreeMap<String, ModelRecord>,
}

#[derive(Debug, Clone)]
struct ModelRecord {
    /// Latency of successful requests, microseconds.
    latency: Histogram<u64>,
    /// Failed requests by kind (`http 429`, `transport timeout`, ...).
    errors: BTreeMap<String, u64>,
}

/// Latency summary of a set of successful requests, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// `(percentile, milliseconds)` for each of [`PERCENTILES`].
    pub percentiles_ms: Vec<(f64, f64)>,
}

/// Results of one model, or of all models together.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub model: String,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second of the measured window.
    pub throughput: f64,
    pub latency: LatencySummary,
}

/// The whole run: settings, totals and per-model sections.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub protocol: String,
    /// `closed` or `open`.
    pub mode: String,
    pub concurrency: Option<usize>,
    pub requested_rate: Option<f64>,
    /// Requests sent per second of the measured window.
    pub achieved_rate: f64,
    /// Open loop: requests not sent because the outstanding cap was reached.
    pub schedule_misses: u64,
    pub window_s: f64,
    pub total: Section,
    pub models: Vec<Section>,
    /// Images per second of the in-process ceiling, per model, when measured.
    pub ceiling: BTreeMap<String, f64>,
    /// Server throughput over the ceiling of the same model mix.
    pub ceiling_ratio: Option<f64>,
}

// === impl Recorder ===

impl Recorder {
    pub fn new() -> Self {
        Self {
            models: BTreeMap::new(),
        }
    }

    pub fn success(&mut self, model: &str, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.model(model).latency.saturating_record(micros);
    }

    pub fn error(&mut self, model: &str, kind: String) {
        *self.model(model).errors.entry(kind).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (name, record) in &other.models {
            let mine = self.model(name);
            // NOTE: both histograms have the same bounds, so adding cannot fail.
            let _ = mine.latency.add(&record.latency);
            for (kind, count) in &record.errors {
                *mine.errors.entry(kind.clone()).or_insert(0) += count;
            }
        }
    }

    /// One section per model and one for all together. `window` is the
    /// measured time that throughput is computed over.
    pub fn sections(&self, window: Duration) -> (Section, Vec<Section>) {
        let mut all = ModelRecord::new();
        let mut models = Vec::new();
        for (name, record) in &self.models {
            let _ = all.latency.add(&record.latency);
            for (kind, count) in &record.errors {
                *all.errors.entry(kind.clone()).or_insert(0) += count;
            }
            models.push(record.section(name, window));
        }
        (all.section("all", window), models)
    }

    fn model(&mut self, name: &str) -> &mut ModelRecord {
        if !self.models.contains_key(name) {
            self.models.insert(name.to_string(), ModelRecord::new());
        }
        self.models.get_mut(name).expect("inserted above")
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

// === impl ModelRecord ===

impl ModelRecord {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
        }
    }

    fn section(&self, model: &str, window: Duration) -> Section {
        let ok = self.latency.len();
        let seconds = window.as_secs_f64();
        Section {
            model: model.to_string(),
            ok,
            errors: self.errors.clone(),
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            latency: summarize(&self.latency),
        }
    }
}

/// Percentiles of a histogram of microseconds, in milliseconds; all zero
/// when it is empty.
pub fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    let empty = histogram.is_empty();
    LatencySummary {
        count: histogram.len(),
        mean_ms: if empty {
            0.0
        } else {
            histogram.mean() / 1000.0
        },
        max_ms: if empty { 0.0 } else { ms(histogram.max()) },
        percentiles_ms: PERCENTILES
            .iter()
            .map(|&p| {
                (
                    p,
                    if empty {
                        0.0
                    } else {
                        ms(histogram.value_at_quantile(p / 100.0))
                    },
                )
            })
            .collect(),
    }
}

// === impl LatencySummary ===

impl LatencySummary {
    /// Milliseconds at `percentile`, one of [`PERCENTILES`].
    pub fn at(&self, percentile: f64) -> Option<f64> {
        self.percentiles_ms
            .iter()
            .find(|(p, _)| *p == percentile)
            .map(|&(_, ms)| ms)
    }
}

// === impl Section ===

impl Section {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

// === impl Report ===

impl Report {
    /// The report as a markdown table, one row per model and a total row
    /// when several models were loaded, followed by errors and the ceiling.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let load = match (self.concurrency, self.requested_rate) {
            (Some(c), _) => format!("closed loop, concurrency {c}"),
            (None, Some(r)) => format!(
                "open loop, requested {r:.1}/s, achieved {:.1}/s, {} schedule misses",
                self.achieved_rate, self.schedule_misses
            ),
            _ => self.mode.clone(),
        };
        out.push_str(&format!(
            "{} {} ({load}), {:.1} s measured\n\n",
            self.protocol, self.target, self.window_s
        ));
        out.push_str(
            "| model | ok | errors | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n",
        );
        out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let mut rows: Vec<&Section> = self.models.iter().collect();
        if self.models.len() != 1 {
            rows.push(&self.total);
        }
        for section in rows {
            let p = |q: f64| section.latency.at(q).unwrap_or(0.0);
            out.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                section.model,
                section.ok,
                section.error_count(),
                section.throughput,
                p(50.0),
                p(90.0),
                p(99.0),
                p(99.9),
                section.latency.max_ms,
            ));
        }
        if !self.total.errors.is_empty() {
            out.push_str("\nerrors: ");
            let kinds: Vec<String> = self
                .total
                .errors
                .iter()
                .map(|(kind, count)| format!("{kind} x{count}"))
                .collect();
            out.push_str(&kinds.join(", "));
            out.push('\n');
        }
        if !self.ceiling.is_empty() {
            out.push_str("\n| model | ceiling images/s |\n| --- | ---: |\n");
            for (model, rate) in &self.ceiling {
                out.push_str(&format!("| {model} | {rate:.1} |\n"));
            }
        }
        if let Some(ratio) = self.ceiling_ratio {
            out.push_str(&format!("\nserver / ceiling: {ratio:.3}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder_with(latencies_ms: impl IntoIterator<Item = u64>) -> Recorder {
        let mut recorder = Recorder::new();
        for ms in latencies_ms {
            recorder.success("m", Duration::from_millis(ms));
        }
        recorder
    }

    #[test]
    fn percentiles_uniform() {
        let recorder = recorder_with(1..=1000);
        let (total, _) = recorder.sections(Duration::from_secs(10));

        // One rank of 1 ms plus the histogram's 0.1 % precision.
        let near = |q: f64, expected: f64| {
            let p = total.latency.at(q).unwrap();
            assert!(
                (p - expected).abs() <= 1.0 + expected * 0.001,
                "p{q} {p}, expected {expected}"
            );
        };
        near(50.0, 500.0);
        near(90.0, 900.0);
        near(99.0, 990.0);
        near(99.9, 999.0);
    }

    #[test]
    fn throughput_over_window() {
        let recorder = recorder_with(std::iter::repeat_n(5, 200));
        let (total, _) = recorder.sections(Duration::from_secs(4));

        assert_eq!(total.ok, 200);
        assert_eq!(total.throughput, 50.0);
    }

    #[test]
    fn merge_adds() {
        let mut a = recorder_with([1, 2]);
        let mut b = recorder_with([3]);
        b.error("m", "http 429".into());
        b.error("other", "timeout".into());
        a.merge(&b);
        let (total, models) = a.sections(Duration::from_secs(1));

        assert_eq!(total.ok, 3);
        assert_eq!(total.errors["http 429"], 1);
        assert_eq!(total.errors["timeout"], 1);
        assert_eq!(models.len(), 2);
    }

    #[test]
    fn empty_summary() {
        let summary = summarize(&Histogram::new(3).unwrap());

        assert_eq!(summary.count, 0);
        assert_eq!(summary.at(99.0), Some(0.0));
    }

    #[test]
    fn clamps_long_latency() {
        let recorder = {
            let mut r = Recorder::new();
            r.success("m", Duration::from_secs(3600));
            r
        };
        let (total, _) = recorder.sections(Duration::from_secs(1));

        assert!(total.latency.max_ms <= 600_000.0 * 1.001);
    }

    #[test]
    fn markdown_rows() {
        let mut recorder = recorder_with([10, 20]);
        recorder.error("m", "http 503".into());
        let (total, models) = recorder.sections(Duration::from_secs(1));
        let report = Report {
            target: "127.0.0.1:8000".into(),
            protocol: "rest".into(),
            mode: "closed".into(),
            concurrency: Some(2),
            requested_rate: None,
            achieved_rate: 3.0,
            schedule_misses: 0,
            window_s: 1.0,
            total,
            models,
            ceiling: BTreeMap::new(),
            ceiling_ratio: None,
        };
        let text = report.markdown();

        assert!(text.contains("| m | 2 | 1 | 2.0 |"), "{text}");
        assert!(text.contains("http 503 x1"), "{text}");
    }
}
