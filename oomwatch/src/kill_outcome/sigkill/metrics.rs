//! SIGKILL attribution's metrics (`docs/metrics.md`), rendered at scrape time through
//! `Metrics::add_collector`: `oomwatch_container_sigkills_total` (label sets capped like the
//! OOM kill series), `oomwatch_container_ends_total`, `oomwatch_sigkills_dropped_total`.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use oomwatch_common::counter as ebpf_counter;
use prometheus::proto::{MetricFamily, MetricType};

use super::kind::SenderKind;
use super::lines::{ContainerKilledLine, SigkillLine};
use crate::sink::metrics::capped::CappedCounts;
use crate::sink::metrics::prom::{counter, f, family};
use crate::source::probe::loader::read_counter;

/// namespace, pod, container, sender_kind.
type Key = [String; 4];

#[derive(Debug)]
pub struct SigkillStats {
    sigkills: CappedCounts<Key>,
    /// Container ends by (sender_kind, runtime_reason).
    ends: BTreeMap<(SenderKind, &'static str), u64>,
    /// Records of targets in the root memory cgroup or whose cgroup could not be found.
    pub filtered: u64,
}

impl SigkillStats {
    pub fn new(cap: usize) -> Self {
        Self {
            sigkills: CappedCounts::new(cap),
            ends: BTreeMap::new(),
            filtered: 0,
        }
    }

    pub fn observe(&mut self, line: &SigkillLine) {
        let [ns, pod, c] = line.target.labels();
        self.sigkills
            .add([ns, pod, c, line.sender_kind.as_str().to_string()]);
    }

    pub fn container_ended(&mut self, line: &ContainerKilledLine) {
        *self
            .ends
            .entry((line.sender_kind, line.runtime_reason))
            .or_default() += 1;
    }

    fn families(&self) -> Vec<MetricFamily> {
        let sigkills = self
            .sigkills
            .rows()
            .map(|(k, n)| {
                let l = [
                    ("container", &*k[2]),
                    ("namespace", &*k[0]),
                    ("pod", &*k[1]),
                    ("sender_kind", &*k[3]),
                ];
                counter(&l, f(n))
            })
            .collect();
        let ends = self
            .ends
            .iter()
            .map(|((k, r), n)| {
                counter(&[("runtime_reason", r), ("sender_kind", k.as_str())], f(*n))
            })
            .collect();
        vec![
            family(
                "oomwatch_container_sigkills_total",
                "SIGKILLs sent to tasks in non-root memory cgroups, by the target's container \
                 and the sender's kind (oom_kernel, oom_group, oom_userspace, kubelet, runtime, \
                 self, other).",
                MetricType::COUNTER,
                sigkills,
            ),
            family(
                "oomwatch_container_ends_total",
                "Containers whose init exited after a SIGKILL, by the sender's kind and what the \
                 runtime reports (OOMKilled or Error).",
                MetricType::COUNTER,
                ends,
            ),
            family(
                "oomwatch_container_sigkills_label_sets_evicted_total",
                "Label sets of oomwatch_container_sigkills_total removed to stay within the cap.",
                MetricType::COUNTER,
                vec![counter(&[], f(self.sigkills.evicted))],
            ),
        ]
    }
}

/// The stats' families and the eBPF side's drops (`counters`, when the program is attached).
pub fn collector(
    stats: Arc<Mutex<SigkillStats>>,
    counters: Option<Arc<Mutex<PerCpuArray<MapData, u64>>>>,
) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || {
        let mut out = stats.lock().unwrap_or_else(|p| p.into_inner()).families();
        if let Some(c) = &counters {
            let c = c.lock().unwrap_or_else(|p| p.into_inner());
            let rate = read_counter(&c, ebpf_counter::SIGKILL_RATE_DROPS);
            let ring = read_counter(&c, ebpf_counter::SIGKILL_RING_DROPS);
            out.push(family(
                "oomwatch_sigkills_dropped_total",
                "SIGKILL records not written: the sender was over its rate (rate_limited: 64 at \
                 once, then 32 a second per sender; the kernel's own kills are never limited) \
                 or the SIGKILLS ring was full (ring_full). OOM victim records have their own \
                 ring and are never dropped for these.",
                MetricType::COUNTER,
                vec![
                    counter(&[("reason", "rate_limited")], f(rate)),
                    counter(&[("reason", "ring_full")], f(ring)),
                ],
            ));
        }
        out
    })
}
