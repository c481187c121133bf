//! The state behind `oomwatch_oom_partial_kills_total{namespace,pod,container}`: partial OOM
//! kills (the victim was not the container's init and the container kept running), by
//! container, capped at the same number of label sets as `oomwatch_oom_kills_total` (the least
//! recently updated one goes first; evictions count in
//! `oomwatch_metric_label_sets_evicted_total`).
use super::capped::CappedCounts;
use crate::record::OomEvent;

/// namespace, pod, container (sorted by label name).
type Key = [String; 3];

#[derive(Debug)]
pub(super) struct PartialKills {
    counts: CappedCounts<Key>,
}

impl PartialKills {
    /// At most `cap` label sets (0 is treated as 1).
    pub fn new(cap: usize) -> Self {
        Self {
            counts: CappedCounts::new(cap),
        }
    }

    /// Label sets removed to stay within the cap.
    pub fn evicted(&self) -> u64 {
        self.counts.evicted
    }

    /// Counts the event if it is a partial kill.
    pub fn observe(&mut self, ev: &OomEvent) {
        if ev.container_kill.partial_kill != Some(true) {
            return;
        }
        let w = &ev.workload;
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        self.counts
            .add([opt(&w.namespace), opt(&w.pod), opt(&w.container)]);
    }

    /// Label sets in exposition order with their counts.
    pub fn rows(&self) -> impl Iterator<Item = (&Key, u64)> {
        self.counts.rows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ContainerKill;
    use std::time::SystemTime;

    fn ev(pod: &str, partial: Option<bool>) -> OomEvent {
        let mut e = OomEvent::new(1, 0, SystemTime::UNIX_EPOCH, "h".into());
        e.workload.namespace = Some("ns".into());
        e.workload.pod = Some(pod.into());
        e.workload.container = Some("c".into());
        e.container_kill = ContainerKill {
            partial_kill: partial,
            ..ContainerKill::default()
        };
        e
    }

    #[test]
    fn counts_only_partial_kills_and_evicts_the_oldest() {
        let mut p = PartialKills::new(2);
        p.observe(&ev("a", Some(true)));
        p.observe(&ev("a", Some(false)));
        p.observe(&ev("a", None));
        p.observe(&ev("b", Some(true)));
        p.observe(&ev("a", Some(true)));
        p.observe(&ev("c", Some(true)));
        let rows: Vec<_> = p.rows().map(|(k, n)| (k[1].clone(), n)).collect();
        assert_eq!(rows, [("a".to_string(), 2), ("c".to_string(), 1)]);
        assert_eq!(p.evicted(), 1);
    }
}
