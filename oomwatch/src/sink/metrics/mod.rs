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

use crate::record::{OomEvent, ProbeId};
use crate::sink::missed::MissedKills;

pub(crate) mod prom;
mod render;
mod state;

use render::{Family, Kind, PerLabelSet, Sample};
use state::{series_key, KillState, Last, Snapshot};

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
    probes: Mutex<BTreeMap<String, bool>>,
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
            probes: Mutex::new(BTreeMap::new()),
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
    fn kill_families(&self, snap: &Snapshot) -> [Family; 7] {
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
                "Label sets of oomwatch_oom_kills_total removed to stay within the cap.",
                Kind::Counter,
                one(snap.evicted),
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
    fn agent_families(&self) -> [Family; 2] {
        let probes = lock(&self.probes)
            .iter()
            .map(|(p, &up)| Sample::new(&[("probe", p)], if up { 1.0 } else { 0.0 }))
            .collect();
        [
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
mod tests;
