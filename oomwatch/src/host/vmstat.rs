//! `/proc/vmstat`'s `oom_kill`: the kernel's own count of OOM kills since boot (Linux 4.13+),
//! global and memory cgroup OOMs alike. Comparing its increase with the kills oomwatch
//! recorded tells how many were missed.
use std::path::Path;

use prometheus::proto::{MetricFamily, MetricType};

use super::read::{read_text, HostError};
use crate::sink::metrics::prom::{counter, f, family};

/// The value of the `oom_kill` line, if there is a valid one (the first wins).
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("oom_kill"), Some(v), None) => v.parse().ok(),
            _ => None,
        }
    })
}

/// The kernel's OOM kill count since boot, from `proc/vmstat` under `root`. Fails when the
/// file cannot be read or has no `oom_kill` line (kernels before 4.13).
pub fn kernel_oom_kills(root: &Path) -> Result<u64, HostError> {
    let path = root.join("proc/vmstat");
    parse_oom_kill(&read_text(&path)?)
        .ok_or_else(|| HostError::parse(&path, "no oom_kill line (kernel older than 4.13?)"))
}

/// The `vmstat` collector: `proc/vmstat` is required, its `oom_kill` line is not (old kernels).
pub fn read(root: &Path) -> Result<Option<u64>, HostError> {
    Ok(parse_oom_kill(&read_text(&root.join("proc/vmstat"))?))
}

pub(super) fn families(oom_kills: Option<u64>) -> Vec<MetricFamily> {
    oom_kills
        .map(|n| {
            family(
                "oomwatch_kernel_oom_kills_total",
                "OOM kills the kernel counted since boot (oom_kill in /proc/vmstat), whether \
                 or not oomwatch saw them.",
                MetricType::COUNTER,
                vec![counter(&[], f(n))],
            )
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_exact_key() {
        let text = "nr_free_pages 2085177\noom_kill_extra 7\noom_kill 955\noom_kill 1\n";
        assert_eq!(parse_oom_kill(text), Some(955));
        assert_eq!(parse_oom_kill("oom_kill\noom_kill x\noom_kill 1 2\n"), None);
        assert_eq!(parse_oom_kill(""), None);
    }

    #[test]
    fn missing_line_is_an_error_only_for_kernel_oom_kills() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/vmstat"), "pgfault 1\n").unwrap();
        assert!(kernel_oom_kills(dir.path()).is_err());
        assert_eq!(read(dir.path()).unwrap(), None);
        assert!(read(&dir.path().join("nowhere")).is_err());
    }
}
