//! Prometheus metrics: the state behind `/metrics` (documented in `docs/metrics.md`).
//!
//! Everything is kept in plain Rust state behind mutexes (including an LRU of label sets) and
//! turned into [`prometheus::proto::MetricFamily`] values at scrape time, which the crate's
//! [`TextEncoder`] writes in the text exposition format 0.0.4. Building the families by hand
//! (a custom collector, in effect) has three benefits over registering stock metric types:
//!
//! * the LRU that caps `oomwatch_oom_kills_total` is the only copy of those series, so the
//!   cap, the series and `oomwatch_metric_label_sets` can never disagree;
//! * counters read from the kernel's per-CPU map are exposed with `counter` type although
//!   their value comes from outside: each scrape adds the delta since the previous read;
//! * nothing here can fail at run time, so [`Metrics::new`] needs no `Result` and no panic.
//!
//! Label sets are capped at `max_label_sets`: when a new label set would exceed
//! the cap, the least-recently-updated pair is dropped and
//! `oomwatch_metric_label_sets_evicted_total` goes up; `oomwatch_oom_kills_all_total` has no
//! labels and is never evicted, so totals survive.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::TextEncoder;

use crate::event::OomEvent;
use crate::sink::missed::MissedKills;

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label value used when the victim's comm or cgroup is not known.
pub const UNKNOWN: &str = "unknown";

/// What `oomwatch_build_info` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    /// Crate version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// Git commit the binary was built from (`"unknown"` if not known).
    pub git_commit: &'static str,
}

/// Cumulative counters kept by the eBPF programs (summed over CPUs by the caller).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EbpfCounters {
    /// Ring-buffer reservations that failed: records the kernel side had to drop.
    pub ringbuf_drops: u64,
    /// Reads of kernel memory (`bpf_probe_read*`) that failed inside the programs.
    pub read_errors: u64,
}

/// Reads the eBPF counters; called once per scrape.
type CountersReader = Box<dyn Fn() -> EbpfCounters + Send + Sync>;

/// Extra metric families rendered at each scrape (the host collectors).
type FamiliesReader = Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync>;

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

/// A label set of `oomwatch_oom_kills_total`, values in [`KILL_LABELS`] order.
type SeriesKey = [String; 7];

/// The label set of a victim. Kubernetes victims whose pod is named are keyed by
/// namespace/pod/container with an empty `cgroup` (the path holds the container id, which
/// changes at every restart); others by their cgroup path, with empty Kubernetes labels.
fn series_key(ev: &OomEvent) -> SeriesKey {
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

/// One labelled series: its count, the last victim's badness, and when it was last updated
/// (an LRU tick).
#[derive(Debug)]
struct Series {
    kills: u64,
    last: Last,
    tick: u64,
}

/// What the last kill of a label set said.
#[derive(Clone, Copy, Debug, Default)]
struct Last {
    /// Unix seconds.
    time: f64,
    badness: Option<i64>,
    /// Bytes: anon, file, shmem.
    rss: [Option<u64>; 3],
}

/// Everything [`Metrics::observe`] touches, under one lock so a scrape sees it consistent.
#[derive(Debug)]
struct KillState {
    /// Maximum number of labelled series (at least 1).
    cap: usize,
    series: HashMap<SeriesKey, Series>,
    /// LRU order: tick of last update → series. The first entry is the least recent.
    lru: BTreeMap<u64, SeriesKey>,
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
    kernel_counted: u64,
    /// Records rebuilt from the kernel log.
    replayed: u64,
}

impl KillState {
    fn observe(&mut self, key: SeriesKey, last: Last, oom_id: Option<u64>) {
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
        } else {
            while self.series.len() >= self.cap {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.series.remove(&oldest);
                self.evicted += 1;
            }
            self.series.insert(
                key.clone(),
                Series {
                    kills: 1,
                    last,
                    tick,
                },
            );
        }
        self.lru.insert(tick, key);
        self.kills_all += 1;
        self.emitted += 1;
        if unix_seconds > self.last_kill {
            self.last_kill = unix_seconds;
        }
    }
}

/// Kernel counters as exposed: running totals built from deltas between reads.
#[derive(Default)]
struct EbpfState {
    reader: Option<CountersReader>,
    /// The raw values at the previous read.
    last_raw: EbpfCounters,
    /// What is exposed; only ever grows.
    total: EbpfCounters,
}

impl EbpfState {
    /// Reads the kernel counters (if a reader is set) and folds them into the totals.
    fn refresh(&mut self) -> EbpfCounters {
        if let Some(read) = &self.reader {
            let raw = read();
            self.total.ringbuf_drops = self
                .total
                .ringbuf_drops
                .saturating_add(delta(self.last_raw.ringbuf_drops, raw.ringbuf_drops));
            self.total.read_errors = self
                .total
                .read_errors
                .saturating_add(delta(self.last_raw.read_errors, raw.read_errors));
            self.last_raw = raw;
        }
        self.total
    }
}

/// Increase of a monotonic kernel counter between two reads. A smaller value means the map
/// was recreated (counting restarted from zero), so all of `new` is new.
fn delta(last: u64, new: u64) -> u64 {
    if new >= last {
        new - last
    } else {
        new
    }
}

/// The agent's Prometheus metrics. Cheap to update, rendered on demand; `Send + Sync`.
pub struct Metrics {
    build: BuildInfo,
    kills: Mutex<KillState>,
    probes: Mutex<BTreeMap<String, bool>>,
    ebpf: Mutex<EbpfState>,
    collectors: Mutex<Vec<FamiliesReader>>,
    missed: Mutex<Option<(KernelKillsReader, MissedKills)>>,
}

/// Reads the kernel's count of OOM kills (`oom_kill` in `/proc/vmstat`).
type KernelKillsReader = Box<dyn Fn() -> Option<u64> + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("build", &self.build)
            .finish_non_exhaustive()
    }
}

/// Locks, ignoring poisoning: every update leaves the state valid, so a panic elsewhere
/// while holding the lock cannot leave it half-written in a way that matters.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Empty metrics. `max_label_sets` caps the label sets of
    /// `oomwatch_oom_kills_total`; 0 is treated as 1.
    pub fn new(max_label_sets: usize, build: BuildInfo) -> Metrics {
        Metrics {
            build,
            kills: Mutex::new(KillState {
                cap: max_label_sets.max(1),
                series: HashMap::new(),
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
            }),
            probes: Mutex::new(BTreeMap::new()),
            ebpf: Mutex::new(EbpfState::default()),
            collectors: Mutex::new(Vec::new()),
            missed: Mutex::new(None),
        }
    }

    /// Records one victim (call once per record written).
    pub fn observe(&self, ev: &OomEvent) {
        // The kernel does not count a victim it only marks because it is already exiting.
        if ev.replayed {
            lock(&self.kills).replayed += 1;
        } else if ev.already_exiting != Some(true) {
            lock(&self.kills).kernel_counted += 1;
        }
        let last = Last {
            time: ev.unix_seconds(),
            badness: ev.oom.badness,
            rss: [ev.anon_rss, ev.file_rss, ev.shmem_rss],
        };
        lock(&self.kills).observe(series_key(ev), last, ev.oom_id);
    }

    /// Benchmark knob (`--synthetic-label-sets`): adds `n` fake Kubernetes-style label sets
    /// of `oomwatch_oom_kills_total` (with the gauges a real kill leaves), within the cap. They
    /// count in no total (`oomwatch_oom_kills_all_total`, emitted, invocations).
    pub fn add_synthetic_label_sets(&self, n: usize) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let time = now.map_or(0.0, |d| d.as_secs_f64());
        let rss = [Some(64 << 20), Some(1 << 20), Some(0)];
        let mut k = lock(&self.kills);
        for i in 0..n.min(k.cap.saturating_sub(k.series.len())) {
            let key: SeriesKey = [
                String::new(),
                "bench-worker".into(),
                "CONSTRAINT_MEMCG".into(),
                "worker".into(),
                format!("bench-namespace-{:03}", i / 100),
                "container".into(),
                format!("bench-app-{i:05}-7d9f8b6c5-x2x4q"),
            ];
            let badness = Some(1000 + i as i64);
            let (kills, last, tick) = (1, Last { time, badness, rss }, k.next_tick);
            k.next_tick += 1;
            k.series.insert(key.clone(), Series { kills, last, tick });
            k.lru.insert(tick, key);
        }
    }

    /// Starts counting kernel OOM kills without a record: `read` gives the kernel's count;
    /// call it once the probes are attached.
    pub fn set_kernel_kills_reader(&self, read: KernelKillsReader) {
        let Some(start) = read() else {
            return;
        };
        *lock(&self.missed) = Some((read, MissedKills::new(start, Instant::now())));
    }

    /// Adds families produced at each scrape by `f` (e.g. the host collectors); names must
    /// not clash with the agent's own.
    pub fn add_collector(&self, f: Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync>) {
        lock(&self.collectors).push(f);
    }

    /// Sets `oomwatch_probe_attached{probe}` to 1 or 0.
    pub fn set_probe_attached(&self, probe: &str, attached: bool) {
        lock(&self.probes).insert(probe.to_owned(), attached);
    }

    /// Each probe and whether it is attached, sorted by name (as `oomwatch_probe_attached`).
    pub fn probes(&self) -> Vec<(String, bool)> {
        lock(&self.probes)
            .iter()
            .map(|(p, &up)| (p.clone(), up))
            .collect()
    }

    /// Called at every scrape (no polling) to read the eBPF per-CPU counters.
    ///
    /// The values must be the kernel's cumulative counts; the exposed counters grow by the
    /// difference from the previous read. Replacing the reader keeps the totals.
    pub fn set_ebpf_counters_reader(&self, f: Box<dyn Fn() -> EbpfCounters + Send + Sync>) {
        lock(&self.ebpf).reader = Some(f);
    }

    /// All metrics in the Prometheus text exposition format 0.0.4 (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let families = self.families();
        let mut out = String::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            // Unreachable: `families` skips empty families and every name is set. A comment
            // keeps the output parseable if it ever happens.
            let _ = writeln!(out, "# oomwatch: encoding metrics failed: {e}");
        }
        out
    }

    /// The metric families, sorted by name, with empty families left out.
    fn families(&self) -> Vec<MetricFamily> {
        let ebpf = lock(&self.ebpf).refresh();
        let mut fams = Vec::with_capacity(10);

        {
            let k = lock(&self.kills);
            let mut rows: Vec<(&SeriesKey, &Series)> = k.series.iter().collect();
            // Same order as a registry gathers: by label values in label-name order.
            rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
            fn labels_of(key: &SeriesKey) -> Vec<(&'static str, &str)> {
                KILL_LABELS
                    .iter()
                    .zip(key.iter())
                    .map(|(n, v)| (*n, v.as_str()))
                    .collect()
            }
            let series = rows
                .iter()
                .map(|(key, s)| counter(&labels_of(key), s.kills as f64))
                .collect();
            fams.push(family(
                "oomwatch_oom_kills_total",
                "OOM kills by victim (namespace, pod, container for Kubernetes victims; cgroup \
                 otherwise), comm, OOM constraint and domain (\"unknown\" when not known); label \
                 sets are capped, the least recently updated is evicted first.",
                MetricType::COUNTER,
                series,
            ));
            let badness = rows
                .iter()
                .filter_map(|(key, s)| s.last.badness.map(|b| gauge(&labels_of(key), b as f64)))
                .collect();
            fams.push(family(
                "oomwatch_oom_victim_badness",
                "Badness points of the task the killer chose, at the last kill of this label set \
                 (same label sets as oomwatch_oom_kills_total).",
                MetricType::GAUGE,
                badness,
            ));
            let last_time = rows
                .iter()
                .map(|(key, s)| gauge(&labels_of(key), s.last.time))
                .collect();
            fams.push(family(
                "oomwatch_oom_last_kill_timestamp_seconds",
                "Time of the last kill of this label set, Unix seconds (same label sets as \
                 oomwatch_oom_kills_total).",
                MetricType::GAUGE,
                last_time,
            ));
            let mut rss = Vec::new();
            for (key, s) in &rows {
                for (kind, v) in ["anon", "file", "shmem"].iter().zip(s.last.rss) {
                    if let Some(v) = v {
                        let mut l = labels_of(key);
                        l.insert(4, ("kind", kind)); // keeps the names sorted
                        rss.push(gauge(&l, v as f64));
                    }
                }
            }
            fams.push(family(
                "oomwatch_oom_victim_rss_bytes",
                "Resident memory of the victim at the last kill of this label set, by kind \
                 (anon, file, shmem; same label sets as oomwatch_oom_kills_total).",
                MetricType::GAUGE,
                rss,
            ));
            let invocations = k
                .invocations
                .iter()
                .map(|(c, n)| counter(&[("constraint", c)], *n as f64))
                .collect();
            fams.push(family(
                "oomwatch_oom_invocations_total",
                "OOM killer invocations that killed, by constraint; a memory.oom.group kill is \
                 one invocation with several victims.",
                MetricType::COUNTER,
                invocations,
            ));
            fams.push(family(
                "oomwatch_oom_kills_all_total",
                "All OOM kills observed, never evicted.",
                MetricType::COUNTER,
                vec![counter(&[], k.kills_all as f64)],
            ));
            fams.push(family(
                "oomwatch_metric_label_sets_evicted_total",
                "Label sets of oomwatch_oom_kills_total removed to stay within the cap.",
                MetricType::COUNTER,
                vec![counter(&[], k.evicted as f64)],
            ));
            fams.push(family(
                "oomwatch_metric_label_sets",
                "Label sets of oomwatch_oom_kills_total currently kept.",
                MetricType::GAUGE,
                vec![gauge(&[], k.series.len() as f64)],
            ));
            fams.push(family(
                "oomwatch_last_oom_kill_timestamp_seconds",
                "Time of the most recent OOM kill, Unix seconds (0 before the first).",
                MetricType::GAUGE,
                vec![gauge(&[], k.last_kill)],
            ));
            fams.push(family(
                "oomwatch_oom_kills_replayed_total",
                "OOM kills recorded from the kernel log after the fact: logged while the agent \
                 was down, or never reported by the probes (marked replayed).",
                MetricType::COUNTER,
                vec![counter(&[], k.replayed as f64)],
            ));
            fams.push(family(
                "oomwatch_events_emitted_total",
                "OOM records written.",
                MetricType::COUNTER,
                vec![counter(&[], k.emitted as f64)],
            ));
        }

        fams.push(family(
            "oomwatch_events_dropped_total",
            "Records the eBPF programs dropped because the ring buffer was full.",
            MetricType::COUNTER,
            vec![counter(&[], ebpf.ringbuf_drops as f64)],
        ));
        fams.push(family(
            "oomwatch_ebpf_read_errors_total",
            "Kernel memory reads that failed inside the eBPF programs.",
            MetricType::COUNTER,
            vec![counter(&[], ebpf.read_errors as f64)],
        ));

        let probes = lock(&self.probes)
            .iter()
            .map(|(p, &up)| gauge(&[("probe", p)], if up { 1.0 } else { 0.0 }))
            .collect();
        fams.push(family(
            "oomwatch_probe_attached",
            "Whether each eBPF probe is attached (1) or not (0).",
            MetricType::GAUGE,
            probes,
        ));

        fams.push(family(
            "oomwatch_build_info",
            "Build information of the running oomwatch; the value is always 1.",
            MetricType::GAUGE,
            vec![gauge(
                &[
                    ("git_commit", self.build.git_commit),
                    ("version", self.build.version),
                ],
                1.0,
            )],
        ));

        let counted = lock(&self.kills).kernel_counted;
        if let Some((read, state)) = lock(&self.missed).as_mut() {
            let missed = match read() {
                Some(k) => state.update(Instant::now(), k, counted),
                None => state.missed(),
            };
            fams.push(family(
                "oomwatch_oom_kills_missed_total",
                "Kernel OOM kills since the agent started (oom_kill in /proc/vmstat) that \
                 produced no record; should stay 0.",
                MetricType::COUNTER,
                vec![counter(&[], missed as f64)],
            ));
        }
        for collect in lock(&self.collectors).iter() {
            fams.extend(collect());
        }

        fams.retain(|f| !f.get_metric().is_empty());
        fams.sort_unstable_by(|a, b| a.name().cmp(b.name()));
        fams
    }
}

/// The label value for an optional field: the value, or [`UNKNOWN`] if absent or empty.
fn label_or_unknown(v: &Option<String>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.clone(),
        _ => UNKNOWN.to_owned(),
    }
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// A sample's labels; `labels` must be sorted by name.
fn labels(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut lp = LabelPair::default();
            lp.set_name((*name).to_owned());
            lp.set_value((*value).to_owned());
            lp
        })
        .collect()
}

fn counter(l: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels(l));
    m.set_counter(c);
    m
}

fn gauge(l: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(l));
    m.set_gauge(g);
    m
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
