//! The CPU budget of the process: the container's CFS quota when one is set
//! (cgroup v2 `cpu.max`, or cgroup v1 `cpu.cfs_quota_us` and
//! `cpu.cfs_period_us`), capped by the CPUs the process may run on.

use std::{fs, path::Path};

/// Cores this process may use, possibly fractional (a quota of 1.5 CPUs).
pub fn cpu_budget() -> f64 {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    match cgroup_quota(Path::new("/sys/fs/cgroup")) {
        Some(quota) => quota.min(available),
        None => available,
    }
}

/// Reads the CFS quota in cores below a cgroup filesystem root, or `None`
/// when no quota is set.
fn cgroup_quota(root: &Path) -> Option<f64> {
    if let Ok(text) = fs::read_to_string(root.join("cpu.max")) {
        return parse_cpu_max(&text);
    }
    let quota = fs::read_to_string(root.join("cpu/cpu.cfs_quota_us")).ok()?;
    let period = fs::read_to_string(root.join("cpu/cpu.cfs_period_us")).ok()?;
    quota_ratio(quota.trim(), period.trim())
}

/// Parses cgroup v2 `cpu.max`: `"max 100000"` (no quota) or `"150000 100000"`.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    let period = fields.next().unwrap_or("100000");
    quota_ratio(quota, period)
}

fn quota_ratio(quota: &str, period: &str) -> Option<f64> {
    // cgroup v1 writes -1 and v2 writes "max" for "no quota".
    let quota: i64 = quota.parse().ok()?;
    let period: i64 = period.parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_quota() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cpu.max"), "150000 100000\n").unwrap();

        assert_eq!(cgroup_quota(root.path()), Some(1.5));
    }

    #[test]
    fn cgroup_v2_unlimited() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cpu.max"), "max 100000\n").unwrap();

        assert_eq!(cgroup_quota(root.path()), None);
    }

    #[test]
    fn cgroup_v1_quota() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("cpu")).unwrap();
        fs::write(root.path().join("cpu/cpu.cfs_quota_us"), "400000\n").unwrap();
        fs::write(root.path().join("cpu/cpu.cfs_period_us"), "100000\n").unwrap();

        assert_eq!(cgroup_quota(root.path()), Some(4.0));
    }

    #[test]
    fn cgroup_v1_unlimited() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("cpu")).unwrap();
        fs::write(root.path().join("cpu/cpu.cfs_quota_us"), "-1\n").unwrap();
        fs::write(root.path().join("cpu/cpu.cfs_period_us"), "100000\n").unwrap();

        assert_eq!(cgroup_quota(root.path()), None);
    }

    #[test]
    fn no_cgroup_files() {
        let root = tempfile::tempdir().unwrap();

        assert_eq!(cgroup_quota(root.path()), None);
    }
}
