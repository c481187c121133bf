//! Prometheus metrics: the state behind `/metrics` (documented in `docs/metrics.md`).
//!
//! Everything is kept in plain Rust state behind mutexes (including an LRU of label sets) and
//! written in the text exposition format 0.0.4 at scrape time. Building the output by hand
//! (a custom collector, in effect) has these benefits over registering stock metric types:
//!
//! * the LRU that caps `oomwatch_oom_kills_total` is the only copy of those series, so the
//!   cap, the series and `oomwatch_metric_label_sets` can never disagree;
//! * counters read from the kernel's per-CPU map are exposed with `counter` type although
//!   their value comes from outside: each scrape adds the delta since the previous read;
//! * nothing here can fail at run time, so [`Metrics::new`] needs no `Result` and no panic;
//! * a scrape is cheap and blocks kill records only briefly: each label set's text is
//!   rendered once, when the label set is created ([`state`]); a scrape copies a reference
//!   to it and a few numbers per label set under the lock, then writes the text outside it
//!   ([`render`]). Only the collectors' families go through `prometheus::TextEncoder`.
//!
//! Label sets are capped at `max_label_sets`: when a new label set would exceed
//! the cap, the least-recently-updated pair is dropped and
//! `oomwatch_metric_label_sets_evicted_total` goes up; `oomwatch_oom_kills_all_total` has no
//! labels and is never evicted, so totals survive.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus::proto::MetricFamily;

pub use labels::UNKNOWN;

use crate::record::{OomEvent, ProbeId};
use crate::sink::missed::MissedKills;
use crate::source::probe::silence::Silence;

pub mod capped;
mod labels;
mod partial;
pub(crate) mod prom;
mod render;
mod state;

use partial::PartialKills;
use render::{Family, Kind, PerLabelSet, Sample};
use state::{series_key, KillState, Last, Snapshot};

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// Reads the kernel's count of OOM kills (`oom_kill` in `/proc/vmstat`).
type KernelKillsReader = Box<dyn Fn() -> Option<u64> + Send + Sync>;

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
    partial: Mutex<PartialKills>,
    probes: Mutex<BTreeMap<String, bool>>,
    /// Rows that attached but stayed silent after an OOM kill.
    silence: Mutex<Silence>,
    ebpf: Mutex<EbpfState>,
    collectors: Mutex<Vec<FamiliesReader>>,
    missed: Mutex<Option<(KernelKillsReader, MissedKills)>>,
    /// Tasks marked as OOM victims without a kill (see `crate::correlate::marks`).
    marks_without_kill: std::sync::atomic::AtomicU64,
    /// The label sets' families as text, and the [`KillState::generation`] they show.
    label_set_text: Mutex<Option<LabelSetText>>,
}

/// See [`Metrics::label_set_text`].
type LabelSetText = (u64, Arc<Vec<(PerLabelSet, bytes::Bytes)>>);

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
            kills: Mutex::new(KillState::new(max_label_sets)),
            partial: Mutex::new(PartialKills::new(max_label_sets)),
            probes: Mutex::new(BTreeMap::new()),
            silence: Mutex::new(Silence::new()),
            ebpf: Mutex::new(EbpfState::default()),
            collectors: Mutex::new(Vec::new()),
            missed: Mutex::new(None),
            marks_without_kill: std::sync::atomic::AtomicU64::new(0),
            label_set_text: Mutex::new(None),
        }
    }

    /// The correlator's count of marks that were not kills.
    pub fn set_marks_without_kill(&self, n: u64) {
        self.marks_without_kill
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one victim (call once per record written).
    pub fn observe(&self, ev: &OomEvent) {
        let key = series_key(ev);
        let last = Last {
            time: ev.unix_seconds(),
            badness: ev.oom.badness,
            rss: [ev.anon_rss, ev.file_rss, ev.shmem_rss],
        };
        lock(&self.partial).observe(ev);
        let mut k = lock(&self.kills);
        if ev.replayed {
            k.replayed += 1;
        } else {
            k.kernel_counted += 1;
        }
        k.observe(key, last, ev.oom_id);
    }

    /// Benchmark knob (`--synthetic-label-sets`): adds `n` fake Kubernetes-style label sets
    /// of `oomwatch_oom_kills_total` (with the gauges a real kill leaves), within the cap. They
    /// count in no total (`oomwatch_oom_kills_all_total`, emitted, invocations).
    pub fn add_synthetic_label_sets(&self, n: usize) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let time = now.map_or(0.0, |d| d.as_secs_f64());
        lock(&self.kills).add_synthetic(n, time);
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
    pub fn set_probe_attached(&self, probe: ProbeId, attached: bool) {
        lock(&self.probes).insert(probe.name().to_owned(), attached);
    }

    /// Reads `oomwatch_probe_silent_total{probe}` from `silence` (the agent's, shared with the
    /// stages that notice a silent row).
    pub fn set_probe_silence(&self, silence: Silence) {
        *lock(&self.silence) = silence;
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

    /// All metrics in the Prometheus text exposition format 0.0.4 (see [`CONTENT_TYPE`]):
    /// families sorted by name, empty families left out.
    pub fn render(&self) -> String {
        let (fams, size) = self.families();
        render::render(fams, size + 64 * 1024)
    }

    /// [`Self::render`] as consecutive pieces to send one after the other: the label sets'
    /// families are shared buffers kept between scrapes (not copied).
    pub fn render_segments(&self) -> Vec<bytes::Bytes> {
        render::render_segments(self.families().0)
    }

    /// Every family, and the size of the label sets' text.
    fn families(&self) -> (Vec<Family>, usize) {
        let ebpf = lock(&self.ebpf).refresh();
        let (snap, texts) = self.label_set_texts();
        let mut fams = Vec::with_capacity(24);
        fams.extend(
            texts
                .iter()
                .map(|(f, text)| Family::Rendered(*f, text.clone())),
        );
        fams.extend(self.kill_families(&snap));
        fams.extend(pipeline_families(&snap, ebpf));
        fams.extend(self.agent_families());
        fams.extend(self.missed_family());
        for collect in lock(&self.collectors).iter() {
            fams.extend(collect().into_iter().map(Family::Collected));
        }

        (fams, texts.iter().map(|(_, t)| t.len()).sum())
    }

    /// A snapshot of the kill state, and the label sets' families as text.
    fn label_set_texts(&self) -> (Snapshot, Arc<Vec<(PerLabelSet, bytes::Bytes)>>) {
        // The only time the kills lock is held during a scrape. The label sets' text is
        // rendered again only when they changed since the last scrape (a kill): 10,000 label
        // sets are 13 MB of text.
        let (snap, cached) = {
            let kills = lock(&self.kills);
            let generation = kills.generation();
            let cached = lock(&self.label_set_text)
                .as_ref()
                .filter(|(g, _)| *g == generation)
                .map(|(_, t)| Arc::clone(t));
            (kills.snapshot_with(cached.is_none()), cached)
        };
        let texts = cached.unwrap_or_else(|| {
            let t = Arc::new(render::per_label_set(&snap.rows, snap.label_bytes));
            *lock(&self.label_set_text) = Some((snap.generation, Arc::clone(&t)));
            t
        });
        (snap, texts)
    }

    /// Kills and invocations: totals, the label-set cap, the last kill, replays, marks.
    fn kill_families(&self, snap: &Snapshot) -> [Family; 8] {
        let (partial, partial_evicted) = {
            let p = lock(&self.partial);
            let rows = p.rows().map(|(k, n)| {
                let labels = [
                    ("container", &*k[2]),
                    ("namespace", &*k[0]),
                    ("pod", &*k[1]),
                ];
                Sample::new(&labels, n as f64)
            });
            (rows.collect(), p.evicted())
        };
        let invocations = snap
            .invocations
            .iter()
            .map(|(c, n)| Sample::new(&[("constraint", c)], *n as f64))
            .collect();
        [
            Family::small(
                "oomwatch_oom_invocations_total",
                "OOM killer invocations that killed, by constraint; a memory.oom.group kill is \
                 one invocation with several victims.",
                Kind::Counter,
                invocations,
            ),
            Family::small(
                "oomwatch_oom_kills_all_total",
                "All OOM kills observed, never evicted.",
                Kind::Counter,
                one(snap.kills_all),
            ),
            Family::small(
                "oomwatch_metric_label_sets_evicted_total",
                "Label sets of oomwatch_oom_kills_total and oomwatch_oom_partial_kills_total \
                 removed to stay within the cap.",
                Kind::Counter,
                one(snap.evicted + partial_evicted),
            ),
            Family::small(
                "oomwatch_metric_label_sets",
                "Label sets of oomwatch_oom_kills_total currently kept.",
                Kind::Gauge,
                one(snap.label_sets as u64),
            ),
            Family::small(
                "oomwatch_last_oom_kill_timestamp_seconds",
                "Time of the most recent OOM kill, Unix seconds (0 before the first).",
                Kind::Gauge,
                vec![Sample::new(&[], snap.last_kill)],
            ),
            Family::small(
                "oomwatch_oom_partial_kills_total",
                "OOM kills in a container that left it running (the victim was not the \
                 container's init; no restart, no OOMKilled status), by container.",
                Kind::Counter,
                partial,
            ),
            Family::small(
                "oomwatch_oom_kills_replayed_total",
                "OOM kills recorded from the kernel log after the fact: logged while the agent \
                 was down, or never reported by the probes (marked replayed).",
                Kind::Counter,
                one(snap.replayed),
            ),
            Family::small(
                "oomwatch_oom_marks_without_kill_total",
                "Tasks the kernel marked as OOM victims without killing them (already exiting, \
                 e.g. other threads of a process just killed); they get no record.",
                Kind::Counter,
                one(self
                    .marks_without_kill
                    .load(std::sync::atomic::Ordering::Relaxed)),
            ),
        ]
    }

    /// The agent itself: its probes and its build.
    fn agent_families(&self) -> [Family; 3] {
        let probes = lock(&self.probes)
            .iter()
            .map(|(p, &up)| Sample::new(&[("probe", p)], if up { 1.0 } else { 0.0 }))
            .collect();
        [
            self.silent_family(),
            Family::small(
                "oomwatch_probe_attached",
                "Whether each eBPF probe is attached (1) or not (0).",
                Kind::Gauge,
                probes,
            ),
            Family::small(
                "oomwatch_build_info",
                "Build information of the running oomwatch; the value is always 1.",
                Kind::Gauge,
                vec![Sample::new(
                    &[
                        ("git_commit", self.build.git_commit),
                        ("version", self.build.version),
                    ],
                    1.0,
                )],
            ),
        ]
    }

    /// `oomwatch_probe_silent_total`: one series per row reported by `oomwatch_probe_attached`
    /// (0 until that row is found silent), and any other row found silent.
    fn silent_family(&self) -> Family {
        let silence = lock(&self.silence).clone();
        let listed = lock(&self.probes).keys().cloned().collect::<Vec<_>>();
        let samples = ProbeId::ALL
            .iter()
            .filter(|p| silence.count(**p) > 0 || listed.iter().any(|n| n == p.name()))
            .map(|p| Sample::new(&[("probe", p.name())], silence.count(*p) as f64))
            .collect();
        Family::small(
            "oomwatch_probe_silent_total",
            "OOM kills after which an attached probe had delivered nothing it must have (the \
             hook fires nowhere useful on this kernel); the fallback's data was used.",
            Kind::Counter,
            samples,
        )
    }

    /// `oomwatch_oom_kills_missed_total`, once the kernel's kill count is read.
    fn missed_family(&self) -> Option<Family> {
        let counted = lock(&self.kills).kernel_counted;
        let mut missed = lock(&self.missed);
        let (read, state) = missed.as_mut()?;
        let missed = match read() {
            Some(k) => state.update(Instant::now(), k, counted),
            None => state.missed(),
        };
        Some(Family::small(
            "oomwatch_oom_kills_missed_total",
            "Kernel OOM kills since the agent started (oom_kill in /proc/vmstat) that \
             produced no record; should stay 0.",
            Kind::Counter,
            one(missed),
        ))
    }
}

/// One unlabelled sample.
fn one(v: u64) -> Vec<Sample> {
    vec![Sample::new(&[], v as f64)]
}

/// Records through the pipeline: written, dropped by the ring buffer, failed kernel reads.
fn pipeline_families(snap: &Snapshot, ebpf: EbpfCounters) -> [Family; 3] {
    [
        Family::small(
            "oomwatch_events_emitted_total",
            "OOM records written.",
            Kind::Counter,
            one(snap.emitted),
        ),
        Family::small(
            "oomwatch_events_dropped_total",
            "Records the eBPF programs dropped because the ring buffer was full.",
            Kind::Counter,
            one(ebpf.ringbuf_drops),
        ),
        Family::small(
            "oomwatch_ebpf_read_errors_total",
            "Kernel memory reads that failed inside the eBPF programs.",
            Kind::Counter,
            one(ebpf.read_errors),
        ),
    ]
}

#[cfg(test)]
mod tests {
    //! Unit tests of the metrics sink.
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use crate::sink::metrics::prom::{counter, family, gauge};
    use prometheus::proto::MetricType;

    const BUILD: BuildInfo = BuildInfo {
        version: "0.1.0",
        git_commit: "abc1234",
    };

    fn event(comm: Option<&str>, cgroup: Option<&str>, secs: u64) -> OomEvent {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        OomEvent {
            comm: comm.map(str::to_owned),
            cgroup: cgroup.map(str::to_owned),
            ..OomEvent::new(1, 0, time, "h".into())
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
        let kills = |l: &str| {
            sample(
            &t,
            &format!("oomwatch_oom_kills_total{{{l},constraint=\"unknown\",container=\"\",namespace=\"\",oom_domain=\"unknown\",pod=\"\"}}"),
        )
        };
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
                &format!(
                    r#"oomwatch_oom_kills_total{{cgroup="/x",comm="{comm}",constraint="unknown",container="",namespace="",oom_domain="unknown",pod=""}}"#
                ),
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
        m.set_probe_attached(ProbeId::MarkVictimTp, true);
        let t = m.render();
        let names = [
            ("oomwatch_oom_kills_total", "counter"),
            ("oomwatch_oom_kills_all_total", "counter"),
            ("oomwatch_metric_label_sets_evicted_total", "counter"),
            ("oomwatch_metric_label_sets", "gauge"),
            ("oomwatch_last_oom_kill_timestamp_seconds", "gauge"),
            ("oomwatch_events_emitted_total", "counter"),
            ("oomwatch_oom_kills_replayed_total", "counter"),
            ("oomwatch_oom_marks_without_kill_total", "counter"),
            ("oomwatch_oom_last_kill_timestamp_seconds", "gauge"),
            ("oomwatch_oom_invocations_total", "counter"),
            ("oomwatch_events_dropped_total", "counter"),
            ("oomwatch_ebpf_read_errors_total", "counter"),
            ("oomwatch_probe_attached", "gauge"),
            ("oomwatch_probe_silent_total", "counter"),
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
        let probe = r#"oomwatch_probe_attached{probe="tracepoint:oom/mark_victim"}"#;
        assert_eq!(sample(&t, probe), Some(1.0));
        m.set_probe_attached(ProbeId::MarkVictimTp, false);
        assert_eq!(sample(&m.render(), probe), Some(0.0));
        // Every listed row has its silent count, 0 until the row is found silent.
        let silent = r#"oomwatch_probe_silent_total{probe="tracepoint:oom/mark_victim"}"#;
        assert_eq!(sample(&t, silent), Some(0.0));
        let silence = Silence::new();
        m.set_probe_silence(silence.clone());
        silence.observe(ProbeId::MarkVictimTp, "a record", "the kill line");
        silence.observe(ProbeId::ProcessExit, "an exit", "none");
        let t = m.render();
        assert_eq!(sample(&t, silent), Some(1.0));
        let exit = r#"oomwatch_probe_silent_total{probe="tracepoint:sched/sched_process_exit"}"#;
        assert_eq!(
            sample(&t, exit),
            Some(1.0),
            "a silent row is listed even if not reported"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(10, BUILD);
        m.observe(&event(Some("a\"b\\c"), Some("/x\ny"), 1));
        let t = m.render();
        assert!(t.contains(
        r#"oomwatch_oom_kills_total{cgroup="/x\ny",comm="a\"b\\c",constraint="unknown",container="",namespace="",oom_domain="unknown",pod=""} 1"#
    ));
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

    #[test]
    fn constraint_label_badness_and_invocations() {
        let m = Metrics::new(10, BUILD);
        let mut chosen = event(Some("dd"), Some("/g"), 1);
        chosen.oom_id = Some(4);
        chosen.oom.constraint = Some("CONSTRAINT_MEMCG".into());
        chosen.oom.badness = Some(16709);
        let mut member = event(Some("sleep"), Some("/g"), 1);
        member.oom_id = Some(4);
        member.oom.constraint = Some("CONSTRAINT_MEMCG".into());
        member.oom.badness = Some(16709);
        let mut global = event(Some("java"), Some("/"), 2);
        global.oom_id = Some(5);
        global.oom.constraint = Some("CONSTRAINT_NONE".into());
        for ev in [&chosen, &member, &global] {
            m.observe(ev);
        }
        let t = m.render();
        let memcg = r#"cgroup="/g",comm="dd",constraint="CONSTRAINT_MEMCG",container="",namespace="",oom_domain="unknown",pod="""#;
        assert_eq!(
            sample(&t, &format!("oomwatch_oom_kills_total{{{memcg}}}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, &format!("oomwatch_oom_victim_badness{{{memcg}}}")),
            Some(16709.0)
        );
        let inv = |c: &str| {
            sample(
                &t,
                &format!("oomwatch_oom_invocations_total{{constraint=\"{c}\"}}"),
            )
        };
        assert_eq!(
            inv("CONSTRAINT_MEMCG"),
            Some(1.0),
            "a group kill is one invocation"
        );
        assert_eq!(inv("CONSTRAINT_NONE"), Some(1.0));
        assert_eq!(sample(&t, "oomwatch_oom_kills_all_total"), Some(3.0));
    }

    #[test]
    fn kubernetes_victims_are_keyed_by_names_not_container_ids() {
        use crate::record::OomDomain;
        let m = Metrics::new(10, BUILD);
        // The same container restarted: a new container id (cgroup path) each time.
        for (i, id) in ["a1", "b2"].iter().enumerate() {
            let mut ev = event(
                Some("java"),
                Some(&format!("/kubepods/burstable/pod1/{id}")),
                i as u64,
            );
            ev.oom.constraint = Some("CONSTRAINT_MEMCG".into());
            ev.workload.namespace = Some("shop".into());
            ev.workload.pod = Some("cart-0".into());
            ev.workload.container = Some("app".into());
            ev.workload.container_id = Some((*id).into());
            ev.workload.oom_domain = Some(OomDomain::Container);
            m.observe(&ev);
        }
        let t = m.render();
        let series = r#"oomwatch_oom_kills_total{cgroup="",comm="java",constraint="CONSTRAINT_MEMCG",container="app",namespace="shop",oom_domain="container",pod="cart-0"}"#;
        assert_eq!(sample(&t, series), Some(2.0), "{t}");
        assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(1.0));
        assert!(!t.contains("a1") && !t.contains("b2"), "{t}");
    }

    #[test]
    fn collectors_add_their_families() {
        let m = Metrics::new(10, BUILD);
        m.add_collector(Box::new(|| {
            vec![family(
                "test_collector_family",
                "A test family.",
                MetricType::GAUGE,
                vec![gauge(&[], 7.0)],
            )]
        }));
        assert_eq!(sample(&m.render(), "test_collector_family"), Some(7.0));
    }

    #[test]
    fn last_kill_time_and_rss_split_per_label_set() {
        let m = Metrics::new(10, BUILD);
        let mut ev = event(Some("java"), Some("/app"), 100);
        ev.anon_rss = Some(3 << 20);
        ev.file_rss = Some(1 << 20);
        ev.shmem_rss = Some(0);
        m.observe(&ev);
        let mut later = event(Some("java"), Some("/app"), 160);
        later.anon_rss = Some(5 << 20);
        later.file_rss = Some(2 << 20);
        later.shmem_rss = None;
        m.observe(&later);
        let t = m.render();
        let l = r#"cgroup="/app",comm="java",constraint="unknown",container="""#;
        let rest = r#"namespace="",oom_domain="unknown",pod="""#;
        assert_eq!(
            sample(
                &t,
                &format!("oomwatch_oom_last_kill_timestamp_seconds{{{l},{rest}}}")
            ),
            Some(160.0)
        );
        let rss = |kind: &str| {
            sample(
                &t,
                &format!("oomwatch_oom_victim_rss_bytes{{{l},kind=\"{kind}\",{rest}}}"),
            )
        };
        // The last kill's values; a kind it did not report is left out, not kept from before.
        assert_eq!(rss("anon"), Some(f64::from(5u32 << 20)));
        assert_eq!(rss("file"), Some(f64::from(2u32 << 20)));
        assert_eq!(rss("shmem"), None);
    }

    /// Scrape cost at the bench's sizes: 10,000 synthetic label sets (about 60,000 series) and
    /// 1,667 (about 10,000 series). Prints timings; asserts only the shape.
    #[test]
    fn render_synthetic_label_sets_timing() {
        for n in [10_000, 1_667] {
            let m = Metrics::new(2 * n, BUILD);
            m.add_synthetic_label_sets(n);
            let mut times = Vec::new();
            let mut t = String::new();
            for _ in 0..20 {
                let start = Instant::now();
                t = m.render();
                times.push(start.elapsed());
            }
            times.sort();
            let start = Instant::now();
            let rows = lock(&m.kills).snapshot().rows.len();
            let locked = start.elapsed();
            let series = t.lines().filter(|l| !l.starts_with('#')).count();
            println!(
            "render of {n} synthetic label sets ({series} series, {} bytes): p50 {:?}, max {:?}; \
             kills lock held {locked:?} ({rows} rows copied)",
            t.len(),
            times[times.len() / 2],
            times[times.len() - 1]
        );
            assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(n as f64));
            assert_eq!(t.matches("oomwatch_oom_victim_rss_bytes{").count(), 3 * n);
        }
    }

    /// `observe` waits only for the copy a scrape takes under the lock, not for the rendering.
    /// Prints timings; asserts only that every kill landed.
    #[test]
    fn observe_during_scrapes_timing() {
        let m = Arc::new(Metrics::new(20_000, BUILD));
        m.add_synthetic_label_sets(10_000);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m2, s2) = (Arc::clone(&m), Arc::clone(&stop));
        let scraper = std::thread::spawn(move || {
            let mut n = 0;
            while !s2.load(Ordering::SeqCst) {
                std::hint::black_box(m2.render());
                n += 1;
            }
            n
        });
        let mut times = Vec::new();
        for i in 0..200u64 {
            let ev = event(Some("x"), Some(&format!("/c{}", i % 50)), i);
            let start = Instant::now();
            m.observe(&ev);
            times.push(start.elapsed());
            std::thread::sleep(Duration::from_micros(500));
        }
        stop.store(true, Ordering::SeqCst);
        let scrapes = scraper.join().unwrap();
        times.sort();
        println!(
            "observe during {scrapes} scrapes of 10000 label sets: p50 {:?}, p99 {:?}, max {:?}",
            times[100], times[197], times[199]
        );
        let t = m.render();
        assert_eq!(sample(&t, "oomwatch_oom_kills_all_total"), Some(200.0));
        assert_eq!(sample(&t, "oomwatch_metric_label_sets"), Some(10_050.0));
    }

    /// The hand-written text is what `prometheus::TextEncoder` writes for the same family:
    /// escaping and number formatting included.
    #[test]
    fn own_families_are_written_as_the_encoder_writes_them() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -3.0,
            1.5,
            1e-7,
            1_763_760_002.5,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            -9_007_199_254_740_993.0,
            1e20,
            u64::MAX as f64,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let label_values = ["", "plain", "a\"b\\c\nd", "\\n", "ünïcødé \"x\"", "\n\n"];
        let help = "Help with \\ backslash, \"quotes\" and\na newline.";
        for v in values {
            for lv in label_values {
                let mut want = String::new();
                let proto = family(
                    "x_total",
                    help,
                    MetricType::COUNTER,
                    vec![counter(&[("a", lv), ("b", "y")], v)],
                );
                prometheus::TextEncoder::new()
                    .encode_utf8(&[proto], &mut want)
                    .unwrap();
                let own = render::Family::small(
                    "x_total",
                    help,
                    render::Kind::Counter,
                    vec![render::Sample::new(&[("a", lv), ("b", "y")], v)],
                );
                assert_eq!(
                    render::render(vec![own], 0),
                    want,
                    "value {v:?}, label {lv:?}"
                );
            }
        }
    }

    #[test]
    fn the_label_sets_text_is_reused_until_a_kill_changes_it() {
        let m = Metrics::new(10, BUILD);
        m.observe(&event(Some("a"), Some("/x"), 1));
        let first = m.render();
        let joined: Vec<u8> = m.render_segments().concat();
        assert_eq!(String::from_utf8(joined).unwrap(), first, "segments = text");
        // Cached: the same text, the label-set count still right.
        assert_eq!(m.render(), first);
        assert_eq!(sample(&first, "oomwatch_metric_label_sets"), Some(1.0));
        // A kill of the same label set and one of a new one: both show at the next scrape.
        m.observe(&event(Some("a"), Some("/x"), 2));
        m.observe(&event(Some("b"), Some("/y"), 3));
        let next = m.render();
        assert_ne!(next, first);
        assert_eq!(sample(&next, "oomwatch_metric_label_sets"), Some(2.0));
        assert_eq!(sample(&next, "oomwatch_oom_kills_all_total"), Some(3.0));
        let joined: Vec<u8> = m.render_segments().concat();
        assert_eq!(String::from_utf8(joined).unwrap(), next);
    }
}
