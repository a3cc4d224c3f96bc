//! What each request sends and, in the open loop, when.
//!
//! Both are pure functions of the request's sequence number, so every worker
//! can pick its next request from one shared counter and a run is
//! reproducible.

use std::time::{Duration, Instant};

/// A fixed-rate open-loop schedule: request `i` is due at
/// `start + i / rate`, whatever happened to earlier requests.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Seconds between two intended send times.
    period: f64,
}

/// Weighted model choice by sequence number (smooth weighted round robin):
/// within each cycle of `sum(weights)` requests, model `m` is chosen exactly
/// `weights[m]` times, spread evenly rather than in runs.
#[derive(Debug, Clone)]
pub struct ModelMix {
    names: Vec<String>,
    weights: Vec<u32>,
    /// One cycle of model indices, `sum(weights)` long.
    cycle: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    #[error("model {spec:?} has an invalid weight (expected NAME or NAME=WEIGHT with WEIGHT >= 1)")]
    Weight { spec: String },
    #[error("no models given")]
    Empty,
}

// === impl Schedule ===

impl Schedule {
    /// `rate` is in requests per second and must be positive.
    pub fn new(start: Instant, rate: f64) -> Self {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        Self {
            start,
            period: 1.0 / rate,
        }
    }

    /// Intended send time of request `i` (0-based).
    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 * self.period)
    }

    /// Requests due by `now`, i.e. the number of `i` with
    /// `intended(i) <= now`.
    pub fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        // Guard against rounding putting intended(n) just after now.
        let mut n = (elapsed / self.period).floor() as u64 + 1;
        while n > 0 && self.intended(n - 1) > now {
            n -= 1;
        }
        while self.intended(n) <= now {
            n += 1;
        }
        n
    }
}

// === impl ModelMix ===

impl ModelMix {
    /// Parses `NAME` or `NAME=WEIGHT` entries.
    pub fn parse(specs: &[String]) -> Result<Self, MixError> {
        let mut names = Vec::new();
        let mut weights = Vec::new();
        for spec in specs {
            let (name, weight) = match spec.rsplit_once('=') {
                Some((name, weight)) => {
                    let weight = weight
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=1000).contains(w))
                        .ok_or_else(|| MixError::Weight { spec: spec.clone() })?;
                    (name, weight)
                }
                None => (spec.as_str(), 1),
            };
            if name.is_empty() {
                return Err(MixError::Weight { spec: spec.clone() });
            }
            names.push(name.to_string());
            weights.push(weight);
        }
        if names.is_empty() {
            return Err(MixError::Empty);
        }
        Ok(Self::new(names, weights))
    }

    fn new(names: Vec<String>, weights: Vec<u32>) -> Self {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, &w) in current.iter_mut().zip(&weights) {
                *c += w as i64;
            }
            let best = (0..weights.len())
                .max_by_key(|&m| (current[m], std::cmp::Reverse(m)))
                .unwrap_or(0);
            current[best] -= total;
            cycle.push(best);
        }
        Self {
            names,
            weights,
            cycle,
        }
    }

    /// Index into [`names`](Self::names) of request `i`'s model.
    pub fn pick(&self, i: u64) -> usize {
        self.cycle[(i % self.cycle.len() as u64) as usize]
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Share of requests that go to each model, summing to 1.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.weights.iter().map(|&w| w as f64).sum();
        self.weights.iter().map(|&w| w as f64 / total).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 200.0);

        assert_eq!(schedule.intended(0), start);
        assert_eq!(schedule.intended(1) - start, Duration::from_millis(5));
        assert_eq!(schedule.intended(400) - start, Duration::from_secs(2));
    }

    #[test]
    fn intended_ignores_progress() {
        // The schedule is fixed: request 1000 is due at 10 s whatever the
        // server did with the first 999.
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0);

        assert_eq!(schedule.intended(1000) - start, Duration::from_secs(10));
    }

    #[test]
    fn due_by_counts() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 10.0);

        assert_eq!(schedule.due_by(start), 1);
        assert_eq!(schedule.due_by(start + Duration::from_millis(99)), 1);
        assert_eq!(schedule.due_by(start + Duration::from_millis(100)), 2);
        assert_eq!(schedule.due_by(start + Duration::from_millis(1050)), 11);
    }

    #[test]
    fn due_by_before_start() {
        let start = Instant::now() + Duration::from_secs(1);
        let schedule = Schedule::new(start, 10.0);

        assert_eq!(schedule.due_by(Instant::now()), 0);
    }

    #[test]
    fn mix_weights() {
        let mix = ModelMix::parse(&["a=3".into(), "b=1".into()]).unwrap();
        let picks: Vec<usize> = (0..8).map(|i| mix.pick(i)).collect();

        assert_eq!(picks.iter().filter(|&&m| m == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&m| m == 1).count(), 2);
        assert_eq!(mix.shares(), vec![0.75, 0.25]);
    }

    #[test]
    fn mix_interleaves() {
        let mix = ModelMix::parse(&["a=1".into(), "b=1".into()]).unwrap();

        assert_eq!(mix.pick(0), 0);
        assert_eq!(mix.pick(1), 1);
        assert_eq!(mix.pick(2), 0);
    }

    #[test]
    fn mix_default_weight() {
        let mix = ModelMix::parse(&["efficientnet-lite0-int8".into()]).unwrap();

        assert_eq!(mix.names(), ["efficientnet-lite0-int8"]);
        assert_eq!(mix.pick(7), 0);
    }

    #[test]
    fn mix_bad_weight() {
        let error = ModelMix::parse(&["a=0".into()]).unwrap_err();

        assert!(matches!(error, MixError::Weight { .. }));
    }

    #[test]
    fn mix_empty() {
        assert_eq!(ModelMix::parse(&[]).unwrap_err(), MixError::Empty);
    }
}
