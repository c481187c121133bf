//! The kill-lifecycle metrics (`docs/metrics.md`), rendered at scrape time through
//! `Metrics::add_collector`.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use crate::sink::metrics::prom::{self, counter, f, family, gauge};
use crate::source::probe::loader::read_counter;

use super::sender::Refusal;

/// Upper bounds (seconds) of the kill→exit and kill→reaped histograms: 1 ms to 60 s. An exit
/// within a few ms is a healthy kill; seconds mean the victim was blocked in the kernel.
pub const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One histogram's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist {
    /// Per bucket of [`BUCKETS`], not cumulative.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Hist {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    fn metric(&self, labels: &[(&str, &str)]) -> Metric {
        let mut cumulative = 0;
        let buckets = BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(&le, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = Histogram::default();
        h.set_sample_count(self.count);
        h.set_sample_sum(self.sum);
        h.set_bucket(buckets);
        let mut m = Metric::from_label(prom::labels(labels));
        m.set_histogram(h);
        m
    }
}

/// Everything the lifecycle tracker counts.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// By killer (`kernel` or a userspace killer's comm).
    pub to_exit: BTreeMap<String, Hist>,
    pub to_reaped: Hist,
    pub reaper_skips: u64,
    pub stuck_now: u64,
    pub stuck_total: u64,
    /// Userspace kills by killer.
    pub userspace_kills: BTreeMap<String, u64>,
    /// Listed comms' SIGKILLs not reported, by why.
    pub userspace_dropped: BTreeMap<Refusal, u64>,
}

impl Stats {
    /// A finished kill: its kill→exit and kill→reaped times, if known.
    pub fn observe(&mut self, killer: &str, to_exit_ns: Option<u64>, to_reaped_ns: Option<u64>) {
        if let Some(ns) = to_exit_ns {
            self.to_exit
                .entry(killer.to_string())
                .or_default()
                .observe(ns as f64 / 1e9);
        }
        if let Some(ns) = to_reaped_ns {
            self.to_reaped.observe(ns as f64 / 1e9);
        }
    }

    pub fn userspace_kill(&mut self, killer: Option<&str>) {
        let k = killer.unwrap_or(crate::sink::metrics::UNKNOWN).to_string();
        *self.userspace_kills.entry(k).or_default() += 1;
    }

    pub fn userspace_dropped(&mut self, why: Refusal) {
        *self.userspace_dropped.entry(why).or_default() += 1;
    }

    /// The families, at scrape time.
    pub fn families(&self) -> Vec<MetricFamily> {
        let dropped = Refusal::ALL
            .iter()
            .map(|r| {
                let n = self.userspace_dropped.get(r).copied().unwrap_or(0);
                counter(&[("reason", r.label())], f(n))
            })
            .collect();
        let to_exit = self
            .to_exit
            .iter()
            .map(|(k, h)| h.metric(&[("killer", k)]))
            .collect();
        let userspace = self
            .userspace_kills
            .iter()
            .map(|(k, n)| counter(&[("killer", k)], f(*n)))
            .collect();
        vec![
            family(
                "oomwatch_oom_kill_to_exit_seconds",
                "Time from a kill (the kernel marking its OOM victim, or a userspace OOM \
                 killer's SIGKILL) to the killed task's exit, by killer.",
                MetricType::HISTOGRAM,
                to_exit,
            ),
            family(
                "oomwatch_oom_kill_to_reaped_seconds",
                "Time from an OOM kill to the OOM reaper having freed the victim's memory \
                 (oom:finish_task_reaping); only victims the reaper had to reap.",
                MetricType::HISTOGRAM,
                vec![self.to_reaped.metric(&[])],
            ),
            family(
                "oomwatch_oom_reaper_skips_total",
                "Victims the OOM reaper gave up on (oom:skip_task_reaping).",
                MetricType::COUNTER,
                vec![counter(&[], f(self.reaper_skips))],
            ),
            family(
                "oomwatch_oom_victims_stuck",
                "Killed tasks not exited --stuck-after-ms after the kill, now.",
                MetricType::GAUGE,
                vec![gauge(&[], f(self.stuck_now))],
            ),
            family(
                "oomwatch_oom_victims_stuck_total",
                "Killed tasks reported stuck (not exited --stuck-after-ms after the kill).",
                MetricType::COUNTER,
                vec![counter(&[], f(self.stuck_total))],
            ),
            family(
                "oomwatch_userspace_oom_kills_total",
                "SIGKILLs by userspace OOM killers (earlyoom, systemd-oomd, ...), by killer comm.",
                MetricType::COUNTER,
                userspace,
            ),
            family(
                "oomwatch_userspace_oom_kills_dropped_total",
                "SIGKILLs sent under a userspace OOM killer's comm that are not reported, by \
                 reason: executable (not that killer's root-owned executable), unprivileged \
                 (no CAP_KILL), sender_gone (exited before it was checked), rate_limited \
                 (beyond 20 at once, 5 a second, per sender).",
                MetricType::COUNTER,
                dropped,
            ),
        ]
    }
}

/// The collector for `Metrics::add_collector`.
pub fn collector(stats: Arc<Mutex<Stats>>) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || stats.lock().unwrap_or_else(|p| p.into_inner()).families())
}

/// The near-OOM counters kept by the eBPF programs in `counters` (the per-CPU `COUNTERS`
/// map): `attached` says whether the `reclaim_retry_zone` and `compact_retry` probes are; a
/// family is left out when its probe is not.
pub fn near_oom_collector(
    counters: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    attached: (bool, bool),
) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || {
        let c = counters.lock().unwrap_or_else(|p| p.into_inner());
        let one = |name: &str, help: &str, on: bool, index: u32| {
            let samples = match on {
                true => vec![counter(&[], f(read_counter(&c, index)))],
                false => Vec::new(),
            };
            family(name, help, MetricType::COUNTER, samples)
        };
        vec![
            one(
                "oomwatch_reclaim_retry_zone_total",
                "oom:reclaim_retry_zone events since the agent started: the page allocator \
                 retrying direct reclaim on a zone before giving up (a near-OOM signal).",
                attached.0,
                oomwatch_common::counter::RECLAIM_RETRY_ZONE,
            ),
            one(
                "oomwatch_compact_retry_total",
                "oom:compact_retry events since the agent started: the page allocator \
                 retrying compaction for a high-order allocation (a near-OOM signal).",
                attached.1,
                oomwatch_common::counter::COMPACT_RETRY,
            ),
        ]
    })
}
