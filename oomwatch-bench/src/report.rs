//! The bench's results: the JSON file under `target/bench/` and the markdown of
//! `docs/benchmarks.md` (a table with targets, the side-by-side with node_exporter, notes).

use super::{
    big_node::BigNode,
    diagnostic_storms::Variant,
    http::ScrapeStats,
    json::J,
    kernel_log::Console,
    phases::{Idle, Startup, Storm},
    stats::Pct,
    sys::Machine,
    tools::{VmstatDelay, WrkResult},
};

/// node_exporter's side of the comparison.
#[derive(Clone, Debug, Default)]
pub struct NodeExporterReport {
    pub version: String,
    pub idle: Idle,
    pub scrape: ScrapeStats,
    pub delay: VmstatDelay,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub smoke: bool,
    /// The one phase run (`OOMWATCH_BENCH_ONLY`), if not all.
    pub only: Option<String>,
    pub date: String,
    pub commit: Option<String>,
    pub machine: Machine,
    /// The agent binary benchmarked.
    pub agent: String,
    pub load_before: String,
    pub load_after: String,
    /// All CPUs, whole run, %.
    pub busy_pct: f64,
    /// All CPUs during the idle window, %.
    pub idle_busy_pct: f64,
    pub console: Console,
    /// During the idle window: kernel log records, of which OOM kills (host-wide), and the
    /// agent's records and ring-buffer batches.
    pub idle_activity: IdleActivity,
    pub startup: Startup,
    pub idle: Idle,
    pub storm: Storm,
    /// The same storm against a fresh agent with `--stacks none` (the main storm takes the
    /// triggers' stacks, the default): what the stacks cost.
    pub storm_stacks_off: Option<Storm>,
    /// The same storm against a fresh agent with `--sigkills false` (the main storm attributes
    /// every SIGKILL, the default): what SIGKILL attribution costs an OOM storm.
    pub storm_sigkills_off: Option<Storm>,
    /// A loop SIGKILLing 10,000 children during an OOM storm (`sigkill_storm`).
    pub sigkill_storm: Option<super::sigkill_storm::SigkillStorm>,
    pub storm_plan: (usize, u64),
    pub scrape: ScrapeStats,
    /// Diagnostic storms: the same kind of storm with one thing changed.
    pub variants: Vec<Variant>,
    pub synthetic_sets: u64,
    pub scrape_synthetic: ScrapeStats,
    /// A scrape with 10,000 series in all (synthetic_sets / 6 label sets).
    pub scrape_10k_series: Option<ScrapeStats>,
    pub wrk: Option<(WrkResult, Storm)>,
    pub node_exporter: Option<NodeExporterReport>,
    /// 5: a big node built for real.
    pub big_node: Option<BigNode>,
    pub notes: Vec<String>,
}

/// What happened on the host while the agent was meant to be idle.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdleActivity {
    pub kernel_log_lines: u64,
    pub kernel_oom_kills: u64,
    pub agent_records: usize,
    pub agent_ring_batches: usize,
    /// Which try this window was (the quietest of up to 3).
    pub attempts: u32,
}

impl IdleActivity {
    pub fn json(&self) -> J {
        J::obj(vec![
            ("kernel_log_lines", J::Num(self.kernel_log_lines as f64)),
            ("kernel_oom_kills", J::Num(self.kernel_oom_kills as f64)),
            ("agent_records", J::Num(self.agent_records as f64)),
            ("agent_ring_batches", J::Num(self.agent_ring_batches as f64)),
            ("window_try", J::Num(f64::from(self.attempts))),
        ])
    }
}

/// One number with a target.
pub struct Check {
    pub name: &'static str,
    pub value: String,
    pub target: &'static str,
    pub ok: bool,
    /// A correctness check (records, drops): fails the bench; timings never do.
    pub correctness: bool,
}

pub(super) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(super) fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2} ms"))
}

pub(super) fn pcts(p: &Option<Pct>) -> String {
    match p {
        Some(p) => format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms (n={})",
            p.p50, p.p95, p.p99, p.max, p.n
        ),
        None => "n/a".into(),
    }
}

pub(super) fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

impl Report {
    pub fn checks(&self) -> Vec<Check> {
        if self.only.is_some() {
            return self.big_node.as_ref().map_or(Vec::new(), big_node_checks);
        }
        let s = &self.storm;
        let mut c = vec![
            Check {
                name: "storm: records = kernel kills, none dropped",
                value: format!(
                    "{} records / {} kills, {} dropped, {} replayed",
                    s.records,
                    s.kernel_kills,
                    s.dropped.map_or("?".into(), |d| d.to_string()),
                    s.replayed
                ),
                target: "equal, 0 dropped",
                ok: s.lossless(),
                correctness: true,
            },
            Check {
                name: "storm: kill → record p99",
                value: ms(s.latency_ms.map(|p| p.p99)),
                target: "≤ 5 ms",
                ok: s.latency_ms.is_some_and(|p| p.p99 <= 5.0),
                correctness: false,
            },
            Check {
                name: "idle RSS",
                value: format!("{:.2} MiB", mib(self.idle.rss_kib)),
                target: "≤ 10 MiB",
                ok: self.idle.rss_kib <= 10 * 1024,
                correctness: false,
            },
            Check {
                name: "idle CPU",
                value: format!("{:.4} % of a core", self.idle.cpu_pct),
                target: "≤ 0.1 %",
                ok: self.idle.cpu_pct <= 0.1,
                correctness: false,
            },
            Check {
                name: "scrape p99",
                value: ms(self.scrape_synthetic.latency_ms.map(|p| p.p99)),
                target: "≤ 25 ms",
                ok: self
                    .scrape_synthetic
                    .latency_ms
                    .is_some_and(|p| p.p99 <= 25.0),
                correctness: false,
            },
            Check {
                name: "label sets present for the scrape",
                value: format!("{:?}", self.scrape_synthetic.label_sets),
                target: "≥ synthetic sets",
                ok: self
                    .scrape_synthetic
                    .label_sets
                    .is_some_and(|n| n >= self.synthetic_sets as f64),
                correctness: true,
            },
        ];
        if let Some((_, w)) = &self.wrk {
            c.push(Check {
                name: "wrk + storm: records = kernel kills, none dropped",
                value: format!(
                    "{} records / {} kills, {} dropped",
                    w.records,
                    w.kernel_kills,
                    w.dropped.map_or("?".into(), |d| d.to_string())
                ),
                target: "equal, 0 dropped",
                ok: w.lossless(),
                correctness: true,
            });
        }
        c.extend(self.big_node.as_ref().map_or(Vec::new(), big_node_checks));
        c
    }

    pub fn json(&self) -> J {
        J::obj(vec![
            ("mode", J::str(if self.smoke { "smoke" } else { "full" })),
            ("only_phase", self.only.clone().map_or(J::Null, J::Str)),
            ("date", J::str(&self.date)),
            ("git_commit", self.commit.clone().map_or(J::Null, J::Str)),
            ("agent_binary", J::str(&self.agent)),
            ("machine", self.machine_json()),
            ("console", self.console.json()),
            ("startup", startup_json(&self.startup)),
            ("idle", idle_json(&self.idle)),
            ("idle_host_activity", self.idle_activity.json()),
            ("storm", storm_json(&self.storm)),
            (
                "storm_stacks_off",
                self.storm_stacks_off.as_ref().map_or(J::Null, storm_json),
            ),
            (
                "storm_sigkills_off",
                self.storm_sigkills_off.as_ref().map_or(J::Null, storm_json),
            ),
            (
                "sigkill_storm",
                self.sigkill_storm
                    .as_ref()
                    .map_or(J::Null, |s| s.json(storm_json)),
            ),
            ("scrape_default_state", self.scrape.json()),
            (
                "diagnostic_storms",
                J::Arr(
                    self.variants
                        .iter()
                        .map(|v| v.json(storm_json(&v.storm)))
                        .collect(),
                ),
            ),
            ("synthetic_label_sets", J::Num(self.synthetic_sets as f64)),
            ("scrape_synthetic", self.scrape_synthetic.json()),
            (
                "scrape_10000_series",
                self.scrape_10k_series
                    .as_ref()
                    .map_or(J::Null, |s| s.json()),
            ),
            (
                "wrk_with_storm",
                self.wrk.as_ref().map_or(J::Null, |(w, s)| {
                    J::obj(vec![("wrk", w.json()), ("storm", storm_json(s))])
                }),
            ),
            (
                "node_exporter",
                self.node_exporter.as_ref().map_or(J::Null, |n| {
                    J::obj(vec![
                        ("version", J::str(&n.version)),
                        ("idle", idle_json(&n.idle)),
                        ("scrape", n.scrape.json()),
                        ("kill_visibility", n.delay.json()),
                    ])
                }),
            ),
            (
                "big_node",
                self.big_node
                    .as_ref()
                    .map_or(J::Null, |b| b.json(storm_json)),
            ),
            (
                "targets",
                J::Arr(self.checks().iter().map(Check::json).collect()),
            ),
            (
                "notes",
                J::Arr(self.notes.iter().map(|n| J::str(n.as_str())).collect()),
            ),
        ])
    }

    fn machine_json(&self) -> J {
        let m = &self.machine;
        J::obj(vec![
            ("cpu_model", J::str(&m.cpu_model)),
            ("cores", J::Num(m.cores as f64)),
            ("ram_mib", J::Num(m.ram_mib as f64)),
            ("kernel", J::str(&m.kernel)),
            ("config_hz", J::opt(m.hz.map(|h| h as f64))),
            ("loadavg_before", J::str(&self.load_before)),
            ("loadavg_after", J::str(&self.load_after)),
            ("all_cpus_busy_pct_whole_run", J::Num(self.busy_pct)),
            ("all_cpus_busy_pct_idle_window", J::Num(self.idle_busy_pct)),
        ])
    }
}

impl Check {
    fn json(&self) -> J {
        J::obj(vec![
            ("name", J::str(self.name)),
            ("value", J::str(&self.value)),
            ("target", J::str(self.target)),
            ("met", J::Bool(self.ok)),
            ("correctness", J::Bool(self.correctness)),
        ])
    }
}

fn startup_json(s: &Startup) -> J {
    J::obj(vec![
        ("to_probes_ready_ms", J::Num(s.ms)),
        ("peak_rss_kib", J::Num(s.peak_rss_kib as f64)),
        ("rss_when_ready_kib", J::Num(s.rss_kib as f64)),
        ("quiet_after_ready_ms", J::Num(s.settled_after_ms)),
    ])
}

fn idle_json(i: &Idle) -> J {
    J::obj(vec![
        ("seconds", J::Num(i.secs)),
        ("rss_kib", J::Num(i.rss_kib as f64)),
        ("peak_rss_kib", J::Num(i.peak_rss_kib as f64)),
        ("cpu_ms", J::Num(i.cpu_ms)),
        ("cpu_pct_of_core", J::Num(i.cpu_pct)),
        ("wakeups", J::Num(i.wakeups as f64)),
        ("wakeups_per_s", J::Num(i.wakeups_per_s)),
        ("threads", J::Num(i.threads as f64)),
    ])
}

fn storm_json(s: &Storm) -> J {
    J::obj(vec![
        ("cgroups", J::Num(s.cgroups as f64)),
        ("limit_mib", J::Num(s.limit_mib as f64)),
        ("seconds", J::Num(s.secs)),
        ("victims_sigkilled", J::Num(s.sigkilled as f64)),
        ("victims_not_sigkilled", J::Num(s.other_exits as f64)),
        ("kernel_kills", J::Num(s.kernel_kills as f64)),
        ("records", J::Num(s.records as f64)),
        ("records_replayed", J::Num(s.replayed as f64)),
        ("records_dropped", J::opt(s.dropped)),
        ("kills_missed", J::opt(s.missed)),
        ("lossless", J::Bool(s.lossless())),
        ("kill_to_record_ms", Pct::json(&s.latency_ms)),
        ("kill_to_ringbuf_drain_ms", Pct::json(&s.drain_ms)),
        ("kill_to_stdout_read_ms", Pct::json(&s.read_ms)),
        ("victim_kill_to_exit_ms", Pct::json(&s.kill_to_exit_ms)),
        ("killer_mark_to_sigkill_ms", Pct::json(&s.killer_hold_ms)),
        (
            "latency_ms_kills_no_steal_overlapped",
            Pct::json(&s.latency_unrobbed_ms),
        ),
        ("kills_a_steal_overlapped", J::Num(s.robbed_kills as f64)),
        ("agent_cpu_ms", J::Num(s.cpu_ms)),
        ("agent_cpu_us_per_record", J::opt(s.cpu_us_per_record)),
        ("agent_peak_rss_kib", J::Num(s.peak_rss_kib as f64)),
        ("agent_wakeups", J::Num(s.wakeups as f64)),
        (
            "agent_runqueue_wait_us_per_wakeup",
            J::opt(s.runq_wait_us_per_wakeup),
        ),
        ("agent_event_loop_moves", J::opt(s.loop_moves)),
        ("all_cpus_busy_pct", J::Num(s.machine_busy_pct)),
        ("steal_ms", J::Num(s.steal_ms)),
        ("other_oom_kills_on_host", J::Num(s.other_host_kills as f64)),
    ])
}

pub(super) fn opt_num(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v}"))
}

/// Section 5's targets: scrape p99 and CPU, `/healthz` under the flood, kills not delayed by
/// scrapes, and (correctness) both storms recorded in full.
fn big_node_checks(b: &BigNode) -> Vec<Check> {
    let p99 = |p: &Option<Pct>| p.map(|p| p.p99);
    let lossless = b.quiet.lossless() && b.flood_storm.lossless();
    vec![
        Check {
            name: "big node: scrape p99",
            value: ms(p99(&b.scrape.latency_ms)),
            target: "≤ 50 ms",
            ok: p99(&b.scrape.latency_ms).is_some_and(|v| v <= 50.0),
            correctness: false,
        },
        Check {
            name: "big node: CPU per scrape at a 15 s interval",
            value: format!("{:.3} % of a core", b.core_pct_at_interval()),
            target: "≤ 1 % of a core",
            ok: b.scrape.latency_ms.is_some() && b.core_pct_at_interval() <= 1.0,
            correctness: false,
        },
        Check {
            name: "big node: /healthz p99 during the scrape flood (no OOM storm)",
            value: ms(p99(&b.flood_alone.healthz_ms)),
            target: "≤ 5 ms",
            ok: p99(&b.flood_alone.healthz_ms).is_some_and(|v| v <= 5.0),
            correctness: false,
        },
        Check {
            name: "big node: kill → record p99, flood − no scrapes",
            value: match (b.p99_delay_ms(), b.robbed()) {
                (None, _) => "n/a".into(),
                (Some(d), false) => format!("{d:+.2} ms"),
                (Some(d), true) => format!(
                    "{d:+.2} ms, not conclusive: hypervisor steals overlapped more than a \
                     quarter of a storm's kills (see their rows)"
                ),
            },
            target: "≤ +1 ms",
            ok: !b.robbed() && b.p99_delay_ms().is_some_and(|d| d <= 1.0),
            correctness: false,
        },
        Check {
            name: "big node: storms' records = kernel kills, none dropped",
            value: format!(
                "{} / {} and {} / {} (no scrapes, flood), {} / {} dropped",
                b.quiet.records,
                b.quiet.kernel_kills,
                b.flood_storm.records,
                b.flood_storm.kernel_kills,
                opt_num(b.quiet.dropped),
                opt_num(b.flood_storm.dropped)
            ),
            target: "equal, 0 dropped",
            ok: lossless,
            correctness: true,
        },
    ]
}
