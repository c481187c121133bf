//! The state behind `oomwatch_oom_kills_total` and its companions: the capped, LRU-evicted
//! label sets (each with its label text rendered once, when it is first seen) and the
//! totals, plus the [`Snapshot`] a scrape copies out of it.
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::labels::{push_label, UNKNOWN};
use crate::record::OomEvent;

/// Label names of `oomwatch_oom_kills_total`, sorted (the order of [`SeriesKey`]'s values).
const KILL_LABELS: [&str; 7] = [
    "cgroup",
    "comm",
    "constraint",
    "container",
    "namespace",
    "oom_domain",
    "pod",
];

/// Where `kind` goes among [`KILL_LABELS`] (in `oomwatch_oom_victim_rss_bytes`) to keep the
/// names sorted: before `namespace`.
const KIND_AT: usize = 4;

/// A label set of `oomwatch_oom_kills_total`, values in [`KILL_LABELS`] order.
pub(super) type SeriesKey = [String; 7];

/// The label set of a victim. Kubernetes victims whose pod is named are keyed by
/// namespace/pod/container with an empty `cgroup` (the path holds the container id, which
/// changes at every restart); others by their cgroup path, with empty Kubernetes labels.
pub(super) fn series_key(ev: &OomEvent) -> SeriesKey {
    let w = &ev.workload;
    let named = w.pod.is_some();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        if named {
            String::new()
        } else {
            label_or_unknown(&ev.cgroup)
        },
        label_or_unknown(&ev.comm),
        label_or_unknown(&ev.oom.constraint),
        opt(&w.container),
        opt(&w.namespace),
        w.oom_domain
            .map(|d| d.as_str().to_owned())
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        opt(&w.pod),
    ]
}

/// The label value for an optional field: the value, or [`UNKNOWN`] if absent or empty.
fn label_or_unknown(v: &Option<String>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.clone(),
        _ => UNKNOWN.to_owned(),
    }
}

/// A label set with its exposition text, rendered once when the label set is created.
#[derive(Debug)]
pub(super) struct LabelSet {
    key: SeriesKey,
    /// `cgroup="…",…,pod="…"`, escaped, without the braces.
    text: Box<str>,
    /// Where `,kind="…"` goes in `text`: the comma before `namespace`.
    kind_at: usize,
}

impl LabelSet {
    fn new(key: SeriesKey) -> LabelSet {
        let mut text = String::with_capacity(key.iter().map(|v| v.len() + 16).sum());
        let mut kind_at = 0;
        for (i, (name, value)) in KILL_LABELS.iter().zip(&key).enumerate() {
            if i == KIND_AT {
                kind_at = text.len();
            }
            push_label(&mut text, name, value);
        }
        LabelSet {
            key,
            text: text.into_boxed_str(),
            kind_at,
        }
    }

    /// All labels, escaped, without braces.
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// The labels before and after the place of `kind` (the second part starts with a
    /// comma).
    pub(super) fn split_for_kind(&self) -> (&str, &str) {
        self.text.split_at(self.kind_at)
    }

    /// Bytes of `text`.
    pub(super) fn len(&self) -> usize {
        self.text.len()
    }
}

/// A map key ordered by the label values (the order a registry gathers series in), so the
/// map iterates in exposition order and a scrape needs no sort.
#[derive(Debug, Clone)]
struct ByKey(Arc<LabelSet>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl Borrow<SeriesKey> for ByKey {
    fn borrow(&self) -> &SeriesKey {
        &self.0.key
    }
}

/// One labelled series: its count, what its last kill said, and when it was last updated
/// (an LRU tick).
#[derive(Debug)]
struct Series {
    labels: Arc<LabelSet>,
    kills: u64,
    last: Last,
    tick: u64,
}

/// What the last kill of a label set said.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Last {
    /// Unix seconds.
    pub time: f64,
    pub badness: Option<i64>,
    /// Bytes: anon, file, shmem.
    pub rss: [Option<u64>; 3],
}

/// One label set as a scrape sees it.
#[derive(Debug)]
pub(super) struct Row {
    pub labels: Arc<LabelSet>,
    pub kills: u64,
    pub last: Last,
}

/// Everything a scrape needs from [`KillState`], copied under the lock and rendered after.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// Sorted by label values.
    pub rows: Vec<Row>,
    /// Sum of the label texts' lengths (to size the output).
    pub label_bytes: usize,
    /// [`KillState::generation`] of the rows.
    pub generation: u64,
    /// Label sets kept (also when `rows` was left empty).
    pub label_sets: usize,
    pub invocations: Vec<(String, u64)>,
    pub kills_all: u64,
    pub evicted: u64,
    pub emitted: u64,
    pub last_kill: f64,
    pub replayed: u64,
}

/// Everything [`super::Metrics::observe`] touches, under one lock so a scrape sees it
/// consistent.
#[derive(Debug)]
pub(super) struct KillState {
    /// Maximum number of labelled series (at least 1).
    cap: usize,
    series: BTreeMap<ByKey, Series>,
    /// LRU order: tick of last update → series. The first entry is the least recent.
    lru: BTreeMap<u64, Arc<LabelSet>>,
    next_tick: u64,
    evicted: u64,
    kills_all: u64,
    emitted: u64,
    /// Unix seconds of the most recent kill; 0 before the first.
    last_kill: f64,
    /// OOM invocations by constraint (a handful of values: not capped).
    invocations: BTreeMap<String, u64>,
    /// The newest `oom_id` counted, so a group kill's victims count one invocation.
    last_oom_id: Option<u64>,
    /// Live records of kills the kernel counts (not replayed, not an already-exiting victim).
    pub kernel_counted: u64,
    /// Records rebuilt from the kernel log.
    pub replayed: u64,
}

impl KillState {
    /// Empty state keeping at most `cap` label sets (0 is treated as 1).
    pub fn new(cap: usize) -> KillState {
        KillState {
            cap: cap.max(1),
            series: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_tick: 0,
            evicted: 0,
            kills_all: 0,
            emitted: 0,
            last_kill: 0.0,
            invocations: BTreeMap::new(),
            last_oom_id: None,
            kernel_counted: 0,
            replayed: 0,
        }
    }

    /// Records one kill of label set `key`.
    pub fn observe(&mut self, key: SeriesKey, last: Last, oom_id: Option<u64>) {
        let unix_seconds = last.time;
        let new_invocation = match (oom_id, self.last_oom_id) {
            (Some(id), Some(last)) => id > last,
            _ => true,
        };
        if new_invocation {
            *self.invocations.entry(key[2].clone()).or_default() += 1;
            self.last_oom_id = oom_id.or(self.last_oom_id);
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(s) = self.series.get_mut(&key) {
            self.lru.remove(&s.tick);
            s.kills += 1;
            s.last = Last {
                badness: last.badness.or(s.last.badness),
                ..last
            };
            s.tick = tick;
            self.lru.insert(tick, Arc::clone(&s.labels));
        } else {
            while self.series.len() >= self.cap {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.series.remove(&oldest.key);
                self.evicted += 1;
            }
            self.insert(key, 1, last, tick);
        }
        self.kills_all += 1;
        self.emitted += 1;
        if unix_seconds > self.last_kill {
            self.last_kill = unix_seconds;
        }
    }

    /// Adds a label set that is not there yet.
    fn insert(&mut self, key: SeriesKey, kills: u64, last: Last, tick: u64) {
        let labels = Arc::new(LabelSet::new(key));
        self.lru.insert(tick, Arc::clone(&labels));
        let series = Series {
            labels: Arc::clone(&labels),
            kills,
            last,
            tick,
        };
        self.series.insert(ByKey(labels), series);
    }

    /// See [`super::Metrics::add_synthetic_label_sets`].
    pub fn add_synthetic(&mut self, n: usize, time: f64) {
        let rss = [Some(64 << 20), Some(1 << 20), Some(0)];
        for i in 0..n.min(self.cap.saturating_sub(self.series.len())) {
            let key: SeriesKey = [
                String::new(),
                "bench-worker".into(),
                "CONSTRAINT_MEMCG".into(),
                "worker".into(),
                format!("bench-namespace-{:03}", i / 100),
                "container".into(),
                format!("bench-app-{i:05}-7d9f8b6c5-x2x4q"),
            ];
            if self.series.contains_key(&key) {
                continue;
            }
            let badness = Some(1000 + i as i64);
            let tick = self.next_tick;
            self.next_tick += 1;
            self.insert(key, 1, Last { time, badness, rss }, tick);
        }
    }

    /// Changes with every change of the label sets (each observe and insert takes a tick).
    pub fn generation(&self) -> u64 {
        self.next_tick
    }

    /// Copies what a scrape renders: cheap (a reference count and a few numbers per label
    /// set), so `observe` waits as little as possible.
    #[cfg(test)]
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(true)
    }

    /// [`Self::snapshot`], without the label sets' rows unless `rows` (a scrape that has
    /// their text of this [`Self::generation`] already).
    pub fn snapshot_with(&self, rows: bool) -> Snapshot {
        let mut label_bytes = 0;
        let rows = self
            .series
            .values()
            .take(if rows { usize::MAX } else { 0 })
            .map(|s| {
                label_bytes += s.labels.len();
                Row {
                    labels: Arc::clone(&s.labels),
                    kills: s.kills,
                    last: s.last,
                }
            })
            .collect();
        Snapshot {
            rows,
            label_bytes,
            generation: self.next_tick,
            label_sets: self.series.len(),
            invocations: self
                .invocations
                .iter()
                .map(|(c, n)| (c.clone(), *n))
                .collect(),
            kills_all: self.kills_all,
            evicted: self.evicted,
            emitted: self.emitted,
            last_kill: self.last_kill,
            replayed: self.replayed,
        }
    }
}
