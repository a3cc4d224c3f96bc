//! Process metrics read from `/proc/self`, with the names of the
//! Prometheus client libraries' process collectors.
//!
//! The `prometheus` crate's own `process` feature pulls in `procfs` and its
//! dependency tree for four numbers, so this module reads them itself. On
//! systems without `/proc` the gauges stay at zero.

use prometheus::{Counter, IntGauge, Registry};

use super::register;

/// Clock ticks per second of the times in `/proc/self/stat`.
///
/// NOTE: this is the kernel's USER_HZ, which is 100 on every Linux
/// architecture except alpha and ia64; reading `sysconf(_SC_CLK_TCK)` would
/// need libc for that one value.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

pub struct ProcessMetrics {
    cpu_seconds: Counter,
    resident_memory: IntGauge,
    virtual_memory: IntGauge,
    threads: IntGauge,
    open_fds: IntGauge,
}

/// The fields of `/proc/self/stat` this module reads.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    threads: i64,
    virtual_bytes: i64,
}

// === impl ProcessMetrics ===

impl ProcessMetrics {
    pub fn register(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| register(registry, IntGauge::new(name, help));
        Self {
            cpu_seconds: register(
                registry,
                Counter::new(
                    "process_cpu_seconds_total",
                    "User and system CPU time in seconds.",
                ),
            ),
            resident_memory: gauge("process_resident_memory_bytes", "Resident memory in bytes."),
            virtual_memory: gauge("process_virtual_memory_bytes", "Virtual memory in bytes."),
            threads: gauge("process_threads", "Threads of the process."),
            open_fds: gauge("process_open_fds", "Open file descriptors."),
        }
    }

    /// Reads `/proc/self` and updates the metrics; values that cannot be
    /// read keep their last value.
    pub fn refresh(&self) {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_stat(&text))
        {
            // The counter only moves forward, by the CPU time since the last read.
            let delta = stat.cpu_seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.threads.set(stat.threads);
            self.virtual_memory.set(stat.virtual_bytes);
        }
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|text| parse_resident_bytes(&text))
        {
            self.resident_memory.set(bytes);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The count includes the descriptor of the directory being read.
            self.open_fds.set(entries.count() as i64 - 1);
        }
    }
}

/// Reads the `VmRSS:` line of `/proc/self/status`, which is in KiB.
fn parse_resident_bytes(text: &str) -> Option<i64> {
    let line = text.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses `/proc/self/stat`: the fields after the parenthesised command
/// name, whose own text may contain spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5), so field n is `fields[n - 3]`.
    let field = |n: usize| fields.get(n - 3)?.parse::<i64>().ok();

    let ticks = field(14)? + field(15)?;
    Some(Stat {
        cpu_seconds: ticks as f64 / CLOCK_TICKS_PER_SECOND,
        threads: field(20)?,
        virtual_bytes: field(23)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let text = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1234 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";

        let stat = parse_stat(text).unwrap();

        assert_eq!(stat.cpu_seconds, 3.0);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.virtual_bytes, 104857600);
    }

    #[test]
    fn resident_from_status() {
        let text = "Name:\teffnet-serve\nVmRSS:\t   2048 kB\nThreads:\t7\n";

        assert_eq!(parse_resident_bytes(text), Some(2048 * 1024));
    }

    #[test]
    fn stat_truncated_is_none() {
        assert_eq!(parse_stat("42 (name) S 1 2"), None);
    }

    #[test]
    fn refresh_reads_this_process() {
        let registry = Registry::new();
        let metrics = ProcessMetrics::register(&registry);

        metrics.refresh();

        assert!(metrics.threads.get() >= 1);
        assert!(metrics.resident_memory.get() > 0);
        assert!(metrics.open_fds.get() >= 3);
    }
}
