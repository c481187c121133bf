//! `cargo xtask bench [--smoke]`: the agent under an OOM storm, idle, and scraped under load,
//! side by side with Debian's prometheus-node-exporter. Results go to
//! `target/bench/bench-<timestamp>.json` and (full run only) `docs/benchmarks.md`.
//!
//! Timings are reported against their targets, never enforced; the bench fails only when a
//! correctness check fails (records ≠ kernel kills, dropped records). `--smoke` is the short
//! version `cargo xtask test` runs.

mod agent;
mod big_node;
mod big_node_tree;
mod diagnostic_storms;
mod http;
mod json;
mod kernel_log;
mod killer_hold;
mod markdown;
mod phases;
mod report;
mod sigkill_storm;
mod stalls;
mod stats;
mod storm;
mod sys;
mod tools;

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use agent::Agent;
use report::{NodeExporterReport, Report};
pub use tools::NODE_EXPORTER;

/// How much of everything.
struct Config {
    cgroups: usize,
    kills_per_cgroup: u64,
    limit: u64,
    idle_secs: u64,
    /// Idle windows tried at most when other work disturbs them.
    idle_tries: u32,
    scrapes: usize,
    synthetic_sets: u64,
    wrk_secs: u64,
    /// Kills per cgroup at most while wrk runs.
    wrk_kills_per_cgroup: u64,
    vmstat_kills: usize,
    /// Kills per cgroup of each diagnostic storm (0: none run).
    variant_kills_per_cgroup: u64,
    /// Section 5: the node built for real.
    big_node: big_node::Size,
}

const FULL: Config = Config {
    cgroups: 4,
    kills_per_cgroup: 250,
    limit: 16 << 20,
    idle_secs: 60,
    idle_tries: 3,
    scrapes: 200,
    synthetic_sets: 10_000,
    wrk_secs: 30,
    wrk_kills_per_cgroup: u64::MAX,
    vmstat_kills: 20,
    variant_kills_per_cgroup: 50,
    big_node: big_node::FULL,
};

const SMOKE: Config = Config {
    cgroups: 2,
    kills_per_cgroup: 5,
    limit: 16 << 20,
    idle_secs: 5,
    idle_tries: 1,
    scrapes: 20,
    synthetic_sets: 1000,
    wrk_secs: 3,
    wrk_kills_per_cgroup: 5,
    vmstat_kills: 2,
    variant_kills_per_cgroup: 0,
    big_node: big_node::SMOKE,
};

/// What the harness (`cargo xtask bench`) prepared: the agent built with the test knobs, the
/// tools installed (or noted missing), where results go.
pub struct Setup {
    pub smoke: bool,
    /// The agent binary to benchmark (built with `--features test-knobs`).
    pub binary: PathBuf,
    /// `target/bench/`: the JSON results.
    pub out_dir: PathBuf,
    /// The repository: its commit is recorded, the full run rewrites its `docs/benchmarks.md`.
    pub repo: PathBuf,
    /// Whether `wrk` and Debian's `prometheus-node-exporter` are installed.
    pub have_wrk: bool,
    pub have_node_exporter: bool,
    /// Notes on what could not be set up, carried into the results.
    pub notes: Vec<String>,
}

/// The whole bench (or its `smoke` version, or the phase `OOMWATCH_BENCH_ONLY` names).
pub fn bench(setup: Setup) -> Result<()> {
    let Setup {
        smoke,
        binary,
        out_dir,
        repo,
        have_wrk,
        have_node_exporter: have_ne,
        notes,
    } = setup;
    let cfg = if smoke { SMOKE } else { FULL };
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let (date, stamp) = sys::utc_now();
    let mut r = Report {
        smoke,
        date,
        commit: sys::git_commit(&repo),
        machine: sys::machine(),
        agent: binary.display().to_string(),
        load_before: sys::loadavg(),
        storm_plan: (cfg.cgroups, cfg.kills_per_cgroup),
        synthetic_sets: cfg.synthetic_sets,
        ..Report::default()
    };
    // The console set-up explains much of the latency; the full run also times one line.
    r.console = kernel_log::Console::probe(!smoke);
    let cpu0 = sys::cpu_times();
    let run = Run {
        cfg: &cfg,
        binary: &binary,
        out_dir: &out_dir,
        stamp: &stamp,
    };
    if let Some(only) = only_phase()? {
        r.only = Some(only.to_string());
        match only {
            "sigkills" => {
                run.storm_alone(&mut r)?;
                run.sigkills(&mut r)?;
            }
            _ => run.big_node(&mut r)?,
        }
        return finish(r, cpu0, notes, &out_dir, &repo, &stamp);
    }
    run.default_agent(&mut r, have_ne)?;
    run.stacks_off(&mut r)?;
    run.sigkills(&mut r)?;
    // Where the latency goes: the same kind of storm with one thing changed at a time.
    if cfg.variant_kills_per_cgroup > 0 {
        r.variants = diagnostic_storms::variants(&binary, &out_dir, &stamp, |tag, a| {
            phases::storm(
                a,
                tag,
                cfg.cgroups,
                cfg.variant_kills_per_cgroup,
                cfg.limit,
                None,
            )
        })?;
    }
    run.label_sets(&mut r, have_wrk, smoke)?;
    run.big_node(&mut r)?;
    finish(r, cpu0, notes, &out_dir, &repo, &stamp)
}

/// The phases `OOMWATCH_BENCH_ONLY` may name (to run that one alone).
const ONLY_PHASES: [&str; 2] = ["big_node", "sigkills"];

/// `OOMWATCH_BENCH_ONLY=big_node` runs that phase alone: its results go to
/// `target/bench/bench-only-<phase>-<time>.json` and stderr, never to `docs/benchmarks.md`.
fn only_phase() -> Result<Option<&'static str>> {
    let Some(v) = std::env::var_os("OOMWATCH_BENCH_ONLY").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    match ONLY_PHASES.iter().find(|p| **p == v) {
        Some(p) => Ok(Some(p)),
        None => bail!(
            "[bench] OOMWATCH_BENCH_ONLY={v}: not a phase (one of: {})",
            ONLY_PHASES.join(", ")
        ),
    }
}

/// The run's closing numbers and notes, the results written, the targets printed.
fn finish(
    mut r: Report,
    cpu0: sys::CpuTimes,
    notes: Vec<String>,
    out_dir: &Path,
    repo: &Path,
    stamp: &str,
) -> Result<()> {
    r.load_after = sys::loadavg();
    r.busy_pct = cpu0.busy_pct_until(&sys::cpu_times());
    r.notes.extend(notes);
    r.notes.extend(diagnostic_storms::analysis(&r));
    write_results(&r, out_dir, repo, stamp)?;
    summarize(&r)
}

/// What every phase of one run shares.
struct Run<'a> {
    cfg: &'a Config,
    binary: &'a Path,
    out_dir: &'a Path,
    stamp: &'a str,
}

impl Run<'_> {
    fn start(&self, name: &str, args: &[String]) -> Result<Agent> {
        let state = self.out_dir.join(format!("state-{}-{name}", self.stamp));
        Agent::start(self.binary, state, args)
    }

    /// 1, 2 and 4: one agent with default flags, node_exporter beside it.
    fn default_agent(&self, r: &mut Report, have_ne: bool) -> Result<()> {
        let cfg = self.cfg;
        let a = self.start("a", &[])?;
        r.startup = phases::Startup::of(&a);
        eprintln!(
            "[bench] agent ready in {:.0} ms (peak RSS {} KiB)",
            r.startup.ms, r.startup.peak_rss_kib
        );
        let ne = if have_ne {
            Some(tools::NodeExporter::start()?)
        } else {
            None
        };
        // Let both settle (the agent's first kernel-log read, node_exporter's start).
        thread::sleep(Duration::from_secs(1));
        let settled = phases::settle(a.pid, Duration::from_secs(30))?;
        r.startup.settled_after_ms = (settled.as_secs_f64() + 1.0) * 1000.0;
        eprintln!(
            "[bench] agent idle {:.0} ms after ready",
            r.startup.settled_after_ms
        );
        let mut pids = vec![a.pid];
        pids.extend(ne.as_ref().map(|n| n.pid));
        let (idle, busy, act) = quietest_idle(&a, &pids, cfg)?;
        r.idle_activity = act;
        r.idle = idle[0];
        r.idle_busy_pct = busy;
        r.storm = phases::storm(
            &a,
            "storm",
            cfg.cgroups,
            cfg.kills_per_cgroup,
            cfg.limit,
            None,
        )?;
        r.scrape = http::scrape_series(a.port, cfg.scrapes)?;
        if let Some(ne) = &ne {
            let scrape = http::scrape_series(ne.port, cfg.scrapes)?;
            let delay = phases::vmstat_delay(&a, ne, cfg.vmstat_kills, cfg.limit)?;
            r.node_exporter = Some(NodeExporterReport {
                version: ne.version.clone(),
                idle: idle[1],
                scrape,
                delay,
            });
        }
        drop(ne);
        check_agent_output(&a)?;
        a.stop()
    }

    /// 1b: the same storm with `--stacks none`, against which the main storm's stacks are
    /// weighed (kill → record, CPU per record, peak RSS with the symbol caches warm).
    fn stacks_off(&self, r: &mut Report) -> Result<()> {
        let args = ["--stacks".to_string(), "none".to_string()];
        r.storm_stacks_off = Some(self.settled_storm("stacks-off", &args)?);
        Ok(())
    }

    /// Section 1's storm alone on a default agent (the reference of `OOMWATCH_BENCH_ONLY=sigkills`).
    fn storm_alone(&self, r: &mut Report) -> Result<()> {
        r.storm = self.settled_storm("storm", &[])?;
        Ok(())
    }

    /// Section 1's storm on a fresh agent started with `args`, once it has settled; the agent
    /// is stopped after its output is checked. (`tag` names the agent and the storm's cgroups;
    /// the default agent is named `a`.)
    fn settled_storm(&self, tag: &str, args: &[String]) -> Result<phases::Storm> {
        let cfg = self.cfg;
        let a = self.start(if args.is_empty() { "a" } else { tag }, args)?;
        thread::sleep(Duration::from_secs(1));
        phases::settle(a.pid, Duration::from_secs(30))?;
        let storm = phases::storm(&a, tag, cfg.cgroups, cfg.kills_per_cgroup, cfg.limit, None)?;
        check_agent_output(&a)?;
        a.stop()?;
        Ok(storm)
    }

    /// 1c: the storm with `--sigkills false`, then a SIGKILL storm during an OOM storm on a
    /// default agent (`sigkill_storm`).
    fn sigkills(&self, r: &mut Report) -> Result<()> {
        let cfg = self.cfg;
        let a = self.start(
            "sigkills-off",
            &["--sigkills".to_string(), "false".to_string()],
        )?;
        thread::sleep(Duration::from_secs(1));
        phases::settle(a.pid, Duration::from_secs(30))?;
        let (n, per) = (cfg.cgroups, cfg.kills_per_cgroup);
        r.storm_sigkills_off = Some(phases::storm(&a, "sigkills-off", n, per, cfg.limit, None)?);
        check_agent_output(&a)?;
        a.stop()?;
        let a = self.start("sigkill-storm", &[])?;
        thread::sleep(Duration::from_secs(1));
        phases::settle(a.pid, Duration::from_secs(30))?;
        r.sigkill_storm = Some(sigkill_storm::run(&a, n, cfg.limit)?);
        check_agent_output(&a)?;
        a.stop()
    }

    /// 3: many label sets, scraped alone, then under wrk while a storm runs; the full run
    /// also scrapes 10,000 series in all.
    fn label_sets(&self, r: &mut Report, have_wrk: bool, smoke: bool) -> Result<()> {
        let cfg = self.cfg;
        let n = cfg.synthetic_sets;
        let b = self.start("b", &synthetic_args(n))?;
        r.scrape_synthetic = http::scrape_series(b.port, cfg.scrapes)?;
        eprintln!(
            "[bench] scrape of {n} label sets: {:?} ms p99, {} bytes",
            r.scrape_synthetic.latency_ms.map(|p| p.p99),
            r.scrape_synthetic.bytes
        );
        if have_wrk {
            r.wrk = Some(phases::wrk_with_storm(
                &b,
                cfg.wrk_secs,
                cfg.cgroups,
                cfg.wrk_kills_per_cgroup,
                cfg.limit,
            )?);
        }
        check_agent_output(&b)?;
        b.stop()?;
        // The same with 10,000 series in all: every label set is 6 series (the counter,
        // badness, last-kill time and 3 RSS gauges).
        if !smoke {
            let c = self.start("c", &synthetic_args(n / 6))?;
            r.scrape_10k_series = Some(http::scrape_series(c.port, cfg.scrapes)?);
            c.stop()?;
        }
        Ok(())
    }

    /// 5: a default agent on a big node built for real (`big_node`).
    fn big_node(&self, r: &mut Report) -> Result<()> {
        let base = self.out_dir.join(format!("state-{}-bignode", self.stamp));
        let b = big_node::run(self.cfg.big_node, &base, |name, args| {
            self.start(name, args)
        })?;
        r.big_node = Some(b);
        Ok(())
    }
}

/// The agent flags for `n` synthetic label sets (with room for twice as many).
fn synthetic_args(n: u64) -> [String; 4] {
    [
        "--max-label-sets".to_string(),
        (2 * n).to_string(),
        "--synthetic-label-sets".into(),
        n.to_string(),
    ]
}

/// "Nothing happening" is the premise: when others' OOM kills land in the window (the
/// machine is shared), the window is repeated (full run: up to 3 tries, the quietest kept).
fn quietest_idle(
    a: &Agent,
    pids: &[u32],
    cfg: &Config,
) -> Result<(Vec<phases::Idle>, f64, report::IdleActivity)> {
    let mut best: Option<(Vec<phases::Idle>, f64, report::IdleActivity)> = None;
    for attempt in 1..=cfg.idle_tries {
        let (mark, mut kmsg) = (a.mark(), kernel_log::KmsgCounter::open());
        let (idle, busy) = phases::idle(pids, cfg.idle_secs)?;
        let (kernel_log_lines, kernel_oom_kills) = kmsg.count();
        let (agent_records, agent_ring_batches) = a.activity_since(mark);
        let act = report::IdleActivity {
            kernel_log_lines,
            kernel_oom_kills,
            agent_records,
            agent_ring_batches,
            attempts: attempt,
        };
        let quiet = kernel_oom_kills == 0 && agent_records == 0 && agent_ring_batches == 0;
        if !quiet {
            eprintln!(
                "[bench] idle window {attempt}: the host logged {kernel_log_lines} kernel lines \
                 ({kernel_oom_kills} OOM kills) meanwhile"
            );
        }
        if best
            .as_ref()
            .is_none_or(|(_, _, b)| kernel_log_lines < b.kernel_log_lines)
        {
            best = Some((idle, busy, act));
        }
        if quiet {
            break;
        }
    }
    best.context("no idle window")
}

/// The JSON under `target/bench/`, and the markdown: `docs/benchmarks.md` (full run) or
/// stderr (--smoke).
fn write_results(r: &Report, out_dir: &Path, repo: &Path, stamp: &str) -> Result<()> {
    let name = if let Some(only) = &r.only {
        format!("bench-only-{only}-{stamp}.json")
    } else if r.smoke {
        format!("bench-smoke-{stamp}.json")
    } else {
        format!("bench-{stamp}.json")
    };
    let json_path = out_dir.join(&name);
    fs::write(&json_path, r.json().render())
        .with_context(|| format!("write {}", json_path.display()))?;
    eprintln!("[bench] results: {}", json_path.display());
    let md = markdown::markdown(r, &format!("target/bench/{name}"));
    if r.smoke || r.only.is_some() {
        eprintln!("{md}");
    } else {
        let doc = repo.join("docs/benchmarks.md");
        fs::write(&doc, &md).with_context(|| format!("write {}", doc.display()))?;
        eprintln!("[bench] table: {}", doc.display());
    }
    Ok(())
}

/// Every stdout line of the agent must be an event.
fn check_agent_output(a: &Agent) -> Result<()> {
    if let (n @ 1.., first) = a.bad_lines() {
        bail!(
            "[bench] the agent wrote {n} stdout lines that are not events, the first: {}",
            first.unwrap_or_default()
        );
    }
    Ok(())
}

/// Prints the targets; fails on a correctness check only.
fn summarize(r: &Report) -> Result<()> {
    let mut failed = Vec::new();
    for c in r.checks() {
        let ok = report::mark(c.ok);
        let note = if r.smoke && !c.correctness {
            ", not checked in --smoke"
        } else {
            ""
        };
        eprintln!(
            "[bench] {ok} {}: {} (target {}{note})",
            c.name, c.value, c.target
        );
        if c.correctness && !c.ok {
            failed.push(c.name);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("[bench] correctness failed: {}", failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_lists_targets() {
        let r = Report::default();
        let md = markdown::markdown(&r, "target/bench/x.json");
        for t in ["≤ 5 ms", "≤ 10 MiB", "≤ 0.1 %", "≤ 25 ms"] {
            assert!(md.contains(t), "{t} missing");
        }
        assert!(r.json().render().contains("\"targets\""));
    }

    fn pct(base: f64) -> Option<stats::Pct> {
        Some(stats::Pct {
            n: 7,
            p50: base,
            p95: base * 1.5,
            p99: base * 2.0,
            max: base * 3.0,
            mean: base * 1.1,
        })
    }

    fn storm(base: f64) -> phases::Storm {
        phases::Storm {
            cgroups: 4,
            limit_mib: 16,
            secs: 12.5,
            sigkilled: 1000,
            kernel_kills: 1000,
            records: 1000,
            dropped: Some(0.0),
            missed: Some(0.0),
            latency_ms: pct(base),
            drain_ms: pct(base / 2.0),
            kill_to_exit_ms: pct(base / 4.0),
            killer_hold_ms: pct(base / 10.0),
            latency_unrobbed_ms: pct(base * 0.9),
            robbed_kills: 1,
            read_ms: pct(base * 1.2),
            cpu_ms: 321.5,
            cpu_us_per_record: Some(321.5),
            peak_rss_kib: 6000,
            wakeups: 4000,
            runq_wait_us_per_wakeup: Some(87.0),
            loop_moves: Some(120.0),
            machine_busy_pct: 93.0,
            steal_ms: 30.0,
            other_host_kills: 2,
            ..phases::Storm::default()
        }
    }

    fn idle() -> phases::Idle {
        phases::Idle {
            secs: 60.0,
            rss_kib: 5000,
            peak_rss_kib: 5200,
            cpu_ms: 12.0,
            cpu_pct: 0.02,
            wakeups: 120,
            wakeups_per_s: 2.0,
            threads: 3,
        }
    }

    fn scrape(n: usize) -> http::ScrapeStats {
        http::ScrapeStats {
            scrapes: 200,
            label_sets: Some(n as f64),
            samples: n * 6,
            bytes: n * 600,
            latency_ms: pct(1.0 + n as f64 / 1000.0),
        }
    }

    fn variants() -> Vec<diagnostic_storms::Variant> {
        [
            ("floor", "the floor", 1.0),
            ("floor+kmsg-context", "floor + kmsg", 2.0),
            ("floor+state-on-disk", "floor + disk", 1.5),
            ("floor+normal-priority", "floor + prio", 1.25),
        ]
        .map(|(key, what, base)| diagnostic_storms::Variant {
            key,
            what,
            storm: storm(base),
        })
        .to_vec()
    }

    fn wrk() -> (tools::WrkResult, phases::Storm) {
        let w = tools::WrkResult {
            secs: 30,
            threads: 1,
            connections: 4,
            requests: 3000,
            rps: 100.5,
            p50_ms: Some(9.5),
            p99_ms: None,
            max_ms: Some(40.0),
            errors: 0,
        };
        (w, storm(8.0))
    }

    fn node_exporter() -> report::NodeExporterReport {
        report::NodeExporterReport {
            version: "node_exporter, version 1.5.0 (branch: debian)".into(),
            idle: idle(),
            scrape: scrape(0),
            delay: tools::VmstatDelay {
                kills: 20,
                delay_ms: pct(12.0),
                oomwatch_ms: pct(2.0),
                poll_ms: pct(4.0),
                log_lines_per_kill: 40.0,
            },
        }
    }

    fn big_node() -> big_node::BigNode {
        big_node::BigNode {
            cgroups: 2000,
            processes: 10_000,
            pods: 110,
            bundles: 330,
            build_secs: 14.5,
            startup: phases::Startup {
                ms: 210.0,
                peak_rss_kib: 9000,
                rss_kib: 8500,
                settled_after_ms: 2500.0,
            },
            settled_rss_kib: 12_000,
            settled_peak_rss_kib: 30_000,
            scrape: scrape(20),
            cpu_ms_per_scrape: 12.5,
            walk_scanned: Some(2100.0),
            collector_ms: vec![("memcg_headroom".into(), 11.5), ("sysctl".into(), 0.4)],
            rss_after_scrapes_kib: 12_500,
            idle_host: storm(2.9),
            console_was: Some(4),
            quiet: storm(3.0),
            flood_alone: big_node::Flood {
                secs: 20.0,
                target_rps: 50.0,
                metrics_rps: 49.9,
                metrics_ms: pct(2.0),
                healthz_ms: pct(0.3),
                errors: 0,
                agent_cpu_pct: 16.0,
            },
            flood: big_node::Flood {
                secs: 20.0,
                target_rps: 50.0,
                metrics_rps: 49.5,
                metrics_ms: pct(12.0),
                healthz_ms: pct(0.5),
                errors: 0,
                agent_cpu_pct: 45.0,
            },
            flood_storm: storm(3.2),
        }
    }

    /// A report with every optional part present (and one without any: the default).
    fn full_report() -> Report {
        let mut r = Report {
            date: "2026-01-02T03:04:05Z".into(),
            commit: Some("abc123".into()),
            machine: sys::Machine {
                cpu_model: "Test CPU".into(),
                cores: 2,
                ram_mib: 4096,
                kernel: "6.1.0-test".into(),
                hz: Some(250),
            },
            agent: "/work/x/target/release/oomwatch".into(),
            load_before: "0.10 0.20 0.30".into(),
            load_after: "1.10 1.20 1.30".into(),
            busy_pct: 55.0,
            idle_busy_pct: 5.0,
            console: kernel_log::Console {
                consoles: vec!["ttyS0".into(), "tty0".into()],
                loglevel: Some(7),
                err_line_ms: Some(3.25),
                info_line_ms: Some(0.01),
            },
            idle_activity: report::IdleActivity {
                kernel_log_lines: 3,
                kernel_oom_kills: 1,
                agent_records: 1,
                agent_ring_batches: 1,
                attempts: 2,
            },
            startup: phases::Startup {
                ms: 120.0,
                peak_rss_kib: 7000,
                rss_kib: 6500,
                settled_after_ms: 1500.0,
            },
            idle: idle(),
            storm: storm(3.0),
            storm_stacks_off: Some(storm(2.5)),
            storm_sigkills_off: Some(storm(2.8)),
            sigkill_storm: Some(sigkill_storm::SigkillStorm {
                kills: 10_000,
                secs: 6.5,
                recorded: 240,
                dropped_rate_limited: Some(9760.0),
                dropped_ring_full: Some(0.0),
                read_ms: pct(1.5),
                cpu_ms: 900.0,
                cpu_us_per_kill: 90.0,
                oom: storm(3.5),
            }),
            storm_plan: (4, 250),
            scrape: scrape(1),
            variants: variants(),
            synthetic_sets: 10_000,
            scrape_synthetic: scrape(10_000),
            scrape_10k_series: Some(scrape(1666)),
            wrk: Some(wrk()),
            node_exporter: Some(node_exporter()),
            big_node: Some(big_node()),
            notes: vec!["wrk could not be installed: wrk not run".into()],
            ..Report::default()
        };
        let analysis = diagnostic_storms::analysis(&r);
        r.notes.extend(analysis);
        r
    }

    /// The bench's output, pinned: `docs/benchmarks.md`'s markdown, the JSON results and the
    /// notes, for a report with every part and for an empty one. `OOMWATCH_BLESS=1` rewrites
    /// them.
    #[test]
    fn rendered_results_are_pinned() {
        let full = full_report();
        let empty = Report::default();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pinned");
        let assert_pinned =
            |name: &str, actual: &str| oomwatch_testkit::command::assert_pinned(&dir, name, actual);
        assert_pinned(
            "bench-full.md",
            &markdown::markdown(&full, "target/bench/x.json"),
        );
        assert_pinned("bench-full.json", &full.json().render());
        assert_pinned(
            "bench-empty.md",
            &markdown::markdown(&empty, "target/bench/x.json"),
        );
        assert_pinned("bench-empty.json", &empty.json().render());
    }

    /// `OOMWATCH_BENCH_ONLY=big_node`: that phase's rows and targets only.
    #[test]
    fn only_big_node_renders_its_rows_alone() {
        let r = Report {
            only: Some("big_node".into()),
            big_node: Some(big_node()),
            ..Report::default()
        };
        let md = markdown::markdown(&r, "target/bench/x.json");
        assert!(md.contains("| 5 | big node built for real"));
        assert!(!md.contains("| 1 |") && !md.contains("node_exporter was not run"));
        assert!(r.checks().iter().all(|c| c.name.starts_with("big node")));
        // Kills no steal overlapped, p99: (3.2 − 3.0) × 0.9 × 2 = +0.36 ms: within the 1 ms.
        assert!(r.checks().iter().all(|c| c.ok), "{md}");
    }
}
