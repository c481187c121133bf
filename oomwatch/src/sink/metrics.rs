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
//! Label sets are capped at `max_label_sets`: when a new `(comm, cgroup)` pair would exceed
//! the cap, the least-recently-updated pair is dropped and
//! `oomwatch_metric_label_sets_evicted_total` goes up; `oomwatch_oom_kills_all_total` has no
//! labels and is never evicted, so totals survive.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::TextEncoder;

use crate::event::OomEvent;

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

/// A `(comm, cgroup)` label set of `oomwatch_oom_kills_total`.
type SeriesKey = (String, String);

/// One labelled series: its count and when it was last updated (an LRU tick).
#[derive(Debug)]
struct Series {
    kills: u64,
    tick: u64,
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
}

impl KillState {
    fn observe(&mut self, key: SeriesKey, unix_seconds: f64) {
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(s) = self.series.get_mut(&key) {
            self.lru.remove(&s.tick);
            s.kills += 1;
            s.tick = tick;
        } else {
            while self.series.len() >= self.cap {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.series.remove(&oldest);
                self.evicted += 1;
            }
            self.series.insert(key.clone(), Series { kills: 1, tick });
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
}

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
    /// Empty metrics. `max_label_sets` caps the `(comm, cgroup)` label sets of
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
            }),
            probes: Mutex::new(BTreeMap::new()),
            ebpf: Mutex::new(EbpfState::default()),
        }
    }

    /// Records one victim (call once per record written).
    pub fn observe(&self, ev: &OomEvent) {
        let key = (label_or_unknown(&ev.comm), label_or_unknown(&ev.cgroup));
        lock(&self.kills).observe(key, ev.unix_seconds());
    }

    /// Sets `oomwatch_probe_attached{probe}` to 1 or 0.
    pub fn set_probe_attached(&self, probe: &str, attached: bool) {
        lock(&self.probes).insert(probe.to_owned(), attached);
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
            let mut rows: Vec<(&SeriesKey, u64)> =
                k.series.iter().map(|(key, s)| (key, s.kills)).collect();
            // Same order as a registry gathers: by label values in label-name order.
            rows.sort_unstable_by(|a, b| (&a.0 .1, &a.0 .0).cmp(&(&b.0 .1, &b.0 .0)));
            let series = rows
                .into_iter()
                .map(|((comm, cgroup), n)| counter(&[("cgroup", cgroup), ("comm", comm)], n as f64))
                .collect();
            fams.push(family(
                "oomwatch_oom_kills_total",
                "OOM kills by victim comm and memory cgroup (\"unknown\" when not known); \
                 label sets are capped, the least recently updated is evicted first.",
                MetricType::COUNTER,
                series,
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    const BUILD: BuildInfo = BuildInfo {
        version: "0.1.0",
        git_commit: "abc1234",
    };

    fn event(comm: Option<&str>, cgroup: Option<&str>, secs: u64) -> OomEvent {
        OomEvent {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            ktime_ns: 0,
            host: "h".into(),
            pid: 1,
            tgid: None,
            comm: comm.map(str::to_owned),
            uid: None,
            total_vm: None,
            anon_rss: None,
            file_rss: None,
            shmem_rss: None,
            pgtables: None,
            oom_score_adj: None,
            cgroup: cgroup.map(str::to_owned),
            cgroup_id: None,
            trigger: None,
            already_exiting: None,
            panic_on_oom: None,
            oom_kill_allocating_task: None,
            allocating_task_kill: None,
            oom_id: None,
            oom: crate::event::OomContext::default(),
            sources: Default::default(),
        }
    }

    /// The value of the sample line starting with `series` (name plus labels), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }

    #[test]
    fn observe_increments_the_right_series() {
        let m = Metrics::new(10, BUILD);
        m.observe(&event(Some("python3"), Some("/a"), 100));
        m.observe(&event(Some("python3"), Some("/a"), 200));
        m.observe(&event(Some("java"), Some("/a"), 150));
        m.observe(&event(None, None, 50));
        m.observe(&event(Some(""), Some("/b"), 60));
        let t = m.render();
        let kills = |l: &str| sample(&t, &format!("oomwatch_oom_kills_total{{{l}}}"));
        assert_eq!(kills(r#"cgroup="/a",comm="python3""#), Some(2.0));
        assert_eq!(kills(r#"cgroup="/a",comm="java""#), Some(1.0));
        assert_eq!(kills(r#"cgroup="unknown",comm="unknown""#), Some(1.0));
        assert_eq!(kills(r#"cgroup="/b",comm="unknown""#), Some(1.0));
        assert_eq!(sample(&t, "oomwatch_oom_kills_all_total"), Some(5.0));
        assert_eq!(sample(&t, "oomwatch_events_emitted_total"), Some(5.0));
        assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(4.0));
        // The latest event time, not the last observed.
        assert_eq!(
            sample(&t, "oomwatch_last_oom_kill_timestamp_seconds"),
            Some(200.0)
        );
    }

    #[test]
    fn lru_evicts_least_recently_updated_and_counts_evictions() {
        let m = Metrics::new(2, BUILD);
        let kills = |t: &str, comm: &str| {
            sample(
                t,
                &format!(r#"oomwatch_oom_kills_total{{cgroup="/x",comm="{comm}"}}"#),
            )
        };
        m.observe(&event(Some("a"), Some("/x"), 1));
        m.observe(&event(Some("b"), Some("/x"), 2));
        // Touch `a`: now `b` is the least recently updated.
        m.observe(&event(Some("a"), Some("/x"), 3));
        m.observe(&event(Some("c"), Some("/x"), 4));
        let t = m.render();
        assert_eq!(kills(&t, "a"), Some(2.0));
        assert_eq!(kills(&t, "b"), None);
        assert_eq!(kills(&t, "c"), Some(1.0));
        assert_eq!(
            sample(&t, "oomwatch_metric_label_sets_evicted_total"),
            Some(1.0)
        );
        assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(2.0));
        assert_eq!(sample(&t, "oomwatch_oom_kills_all_total"), Some(4.0));

        // `b` comes back as a new series starting from 1, evicting `a` (older than `c`).
        m.observe(&event(Some("b"), Some("/x"), 5));
        let t = m.render();
        assert_eq!(kills(&t, "b"), Some(1.0));
        assert_eq!(kills(&t, "a"), None);
        assert_eq!(kills(&t, "c"), Some(1.0));
        assert_eq!(
            sample(&t, "oomwatch_metric_label_sets_evicted_total"),
            Some(2.0)
        );
        assert_eq!(sample(&t, "oomwatch_oom_kills_all_total"), Some(5.0));
    }

    #[test]
    fn zero_cap_keeps_one_label_set() {
        let m = Metrics::new(0, BUILD);
        m.observe(&event(Some("a"), None, 1));
        m.observe(&event(Some("b"), None, 1));
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(1.0));
        assert_eq!(
            sample(&t, "oomwatch_metric_label_sets_evicted_total"),
            Some(1.0)
        );
    }

    #[test]
    fn reader_counters_keep_counter_type_and_only_move_forward() {
        let m = Metrics::new(10, BUILD);
        let t = m.render();
        // Exposed (as 0) before any reader is set, so `increase()` sees the first drop.
        assert!(t.contains("# TYPE oomwatch_events_dropped_total counter\n"));
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(0.0));

        let drops = Arc::new(AtomicU64::new(5));
        let errors = Arc::new(AtomicU64::new(2));
        let (d, e) = (drops.clone(), errors.clone());
        m.set_ebpf_counters_reader(Box::new(move || EbpfCounters {
            ringbuf_drops: d.load(Ordering::SeqCst),
            read_errors: e.load(Ordering::SeqCst),
        }));
        let t = m.render();
        assert!(t.contains("# TYPE oomwatch_events_dropped_total counter\n"));
        assert!(t.contains("# TYPE oomwatch_ebpf_read_errors_total counter\n"));
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(5.0));
        assert_eq!(sample(&t, "oomwatch_ebpf_read_errors_total"), Some(2.0));

        // Read at every scrape; unchanged kernel values add nothing.
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(5.0));

        drops.store(9, Ordering::SeqCst);
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(9.0));

        // The kernel map was recreated: counting restarts at 0 there, never goes back here.
        drops.store(3, Ordering::SeqCst);
        errors.store(0, Ordering::SeqCst);
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(12.0));
        assert_eq!(sample(&t, "oomwatch_ebpf_read_errors_total"), Some(2.0));
        drops.store(4, Ordering::SeqCst);
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_events_dropped_total"), Some(13.0));
    }

    #[test]
    fn every_family_has_help_and_type() {
        let m = Metrics::new(10, BUILD);
        m.observe(&event(Some("a"), Some("/x"), 1));
        m.set_probe_attached("tracepoint/oom/mark_victim", true);
        let t = m.render();
        let names = [
            ("oomwatch_oom_kills_total", "counter"),
            ("oomwatch_oom_kills_all_total", "counter"),
            ("oomwatch_metric_label_sets_evicted_total", "counter"),
            ("oomwatch_metric_label_sets", "gauge"),
            ("oomwatch_last_oom_kill_timestamp_seconds", "gauge"),
            ("oomwatch_events_emitted_total", "counter"),
            ("oomwatch_events_dropped_total", "counter"),
            ("oomwatch_ebpf_read_errors_total", "counter"),
            ("oomwatch_probe_attached", "gauge"),
            ("oomwatch_build_info", "gauge"),
        ];
        for (name, kind) in names {
            assert!(t.contains(&format!("# HELP {name} ")), "no HELP for {name}");
            assert!(
                t.contains(&format!("# TYPE {name} {kind}\n")),
                "no TYPE {kind} for {name}"
            );
        }
        assert_eq!(t.matches("# HELP ").count(), names.len());
        assert_eq!(t.matches("# TYPE ").count(), names.len());
        let build = r#"oomwatch_build_info{git_commit="abc1234",version="0.1.0"}"#;
        assert_eq!(sample(&t, build), Some(1.0));
        let probe = r#"oomwatch_probe_attached{probe="tracepoint/oom/mark_victim"}"#;
        assert_eq!(sample(&t, probe), Some(1.0));
        m.set_probe_attached("tracepoint/oom/mark_victim", false);
        assert_eq!(sample(&m.render(), probe), Some(0.0));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(10, BUILD);
        m.observe(&event(Some("a\"b\\c"), Some("/x\ny"), 1));
        let t = m.render();
        assert!(t.contains(r#"oomwatch_oom_kills_total{cgroup="/x\ny",comm="a\"b\\c"} 1"#));
    }

    #[test]
    fn render_10k_label_sets_timing() {
        let n = 10_000;
        let m = Metrics::new(n, BUILD);
        for i in 0..n {
            let comm = format!("worker-{}", i % 100);
            let cgroup = format!("/kubepods.slice/pod-{i:05}/container");
            m.observe(&event(Some(&comm), Some(&cgroup), i as u64));
        }
        // One more than the cap: eviction at full size is O(log n) too.
        m.observe(&event(Some("extra"), Some("/extra"), 1));
        let start = Instant::now();
        let t = m.render();
        let took = start.elapsed();
        println!(
            "render of {n} label sets: {took:?} ({} bytes, {} lines)",
            t.len(),
            t.lines().count()
        );
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("oomwatch_oom_kills_total{"))
                .count(),
            n
        );
    }
}
