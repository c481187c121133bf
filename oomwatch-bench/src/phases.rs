//! The measurements: start-up, idle, an OOM storm, scrapes, wrk with a storm, and how soon
//! node_exporter's `node_vmstat_oom_kill` shows a kill.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    agent::Agent,
    http::{self, Conn},
    stats::Pct,
    storm::{self, Cgroups},
    sys,
    tools::{self, NodeExporter, VmstatDelay},
};

/// Spawn → "probes ready; waiting for OOM kills".
#[derive(Clone, Copy, Debug, Default)]
pub struct Startup {
    pub ms: f64,
    /// `VmHWM` when ready.
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    /// Ready → no CPU used for a whole second (start-up work done).
    pub settled_after_ms: f64,
}

impl Startup {
    pub fn of(a: &Agent) -> Startup {
        Startup {
            ms: a.startup.as_secs_f64() * 1000.0,
            peak_rss_kib: a.startup_hwm_kib,
            rss_kib: a.ready_rss_kib,
            settled_after_ms: 0.0,
        }
    }
}

/// A process left alone for a while.
#[derive(Clone, Copy, Debug, Default)]
pub struct Idle {
    pub secs: f64,
    /// `VmRSS` at the end.
    pub rss_kib: u64,
    /// `VmHWM` over the window (reset at its start).
    pub peak_rss_kib: u64,
    pub cpu_ms: f64,
    /// CPU time over wall time, % of one core.
    pub cpu_pct: f64,
    /// Context switches (voluntary + involuntary) over all threads: each is a wake-up.
    pub wakeups: u64,
    pub wakeups_per_s: f64,
    pub threads: u64,
}

/// Waits until the process has used no CPU for a whole second (its start-up work done), at
/// most `max`; returns how long that took.
pub fn settle(pid: u32, max: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut last = sys::sample(pid)?;
    let mut quiet_since = Instant::now();
    while started.elapsed() < max {
        thread::sleep(Duration::from_millis(250));
        let now = sys::sample(pid)?;
        if last.cpu_ns_until(&now) > 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        last = now;
    }
    Ok(started.elapsed())
}

/// Samples each process at the start and the end of `secs` seconds of nothing happening.
/// Also returns how busy the whole machine was meanwhile (% of all CPUs).
pub fn idle(pids: &[u32], secs: u64) -> Result<(Vec<Idle>, f64)> {
    for pid in pids {
        sys::reset_peak_rss(*pid);
    }
    let cpu0 = sys::cpu_times();
    let before = pids
        .iter()
        .map(|p| sys::sample(*p))
        .collect::<Result<Vec<_>>>()?;
    eprintln!("[bench] idle: {secs} s with nothing happening...");
    thread::sleep(Duration::from_secs(secs));
    let busy = cpu0.busy_pct_until(&sys::cpu_times());
    let mut out = Vec::new();
    for (pid, b) in pids.iter().zip(before) {
        let a = sys::sample(*pid)?;
        let wall = (a.at_ns - b.at_ns) as f64 / 1e9;
        let cpu_ns = b.cpu_ns_until(&a);
        let wakeups = a.ctxsw.saturating_sub(b.ctxsw);
        out.push(Idle {
            secs: wall,
            rss_kib: a.rss_kib,
            peak_rss_kib: a.hwm_kib.max(a.rss_kib),
            cpu_ms: cpu_ns as f64 / 1e6,
            cpu_pct: 100.0 * cpu_ns as f64 / 1e9 / wall,
            wakeups,
            wakeups_per_s: wakeups as f64 / wall,
            threads: a.threads,
        });
    }
    Ok((out, busy))
}

/// What one storm measured.
#[derive(Clone, Debug, Default)]
pub struct Storm {
    pub cgroups: usize,
    pub limit_mib: u64,
    pub secs: f64,
    /// Victims this bench saw die of SIGKILL.
    pub sigkilled: u64,
    /// Victims that ended without SIGKILL (should be 0).
    pub other_exits: u64,
    /// `oom_kill` of the bench cgroups, as the kernel counts them.
    pub kernel_kills: u64,
    /// Live records of the bench cgroups.
    pub records: u64,
    /// Records of the bench cgroups rebuilt from the kernel log (should be 0).
    pub replayed: u64,
    /// `oomwatch_events_dropped_total` (ring-buffer drops) at the end.
    pub dropped: Option<f64>,
    /// `oomwatch_oom_kills_missed_total` at the end.
    pub missed: Option<f64>,
    /// Kill → record written, as the agent measures it (ms).
    pub latency_ms: Option<Pct>,
    /// Kill → ring buffer drained by the agent (ms, per batch): the kernel → user-space part.
    pub drain_ms: Option<Pct>,
    /// Victim killed → exited (ms), from the agent's lifecycle lines when it writes them.
    pub kill_to_exit_ms: Option<Pct>,
    /// `mark_victim` → the killer's first switch-out or SIGKILL delivered (ms), over the kills no
    /// steal overlapped, from the kernel's tracepoints: how long each killer kept its CPU after
    /// its kill without a break ([`super::killer_hold`]).
    pub killer_hold_ms: Option<Pct>,
    /// Kill → record over the kills no hypervisor steal or CPU stall overlapped (ms), and how
    /// many did ([`sys::StealWatch`], [`super::stalls::StallWatch`]): what the host and the
    /// agent do, without the hypervisor's stalls.
    pub latency_unrobbed_ms: Option<Pct>,
    pub robbed_kills: u64,
    /// Kill → this bench read the line from the agent's stdout (ms): the cross-check.
    pub read_ms: Option<Pct>,
    pub cpu_ms: f64,
    pub cpu_us_per_record: Option<f64>,
    pub peak_rss_kib: u64,
    pub wakeups: u64,
    /// Time the agent's threads spent runnable but waiting for a CPU, per wake-up (µs).
    pub runq_wait_us_per_wakeup: Option<f64>,
    /// Times the agent moved its event loop off a CPU it was queued on after a wake-up
    /// (`oomwatch_event_loop_moves_total` over the storm).
    pub loop_moves: Option<f64>,
    /// % of all CPUs busy during the storm (everything on the machine).
    pub machine_busy_pct: f64,
    /// CPU time the hypervisor stole during the storm, all CPUs (ms).
    pub steal_ms: f64,
    /// OOM kills the kernel logged meanwhile outside the bench cgroups (others' work).
    pub other_host_kills: u64,
}

impl Storm {
    /// One line on stderr: what the storm counted and its latency.
    fn log(&self, tag: &str) {
        let s = self;
        eprintln!(
            "[bench] storm {tag}: {} kernel kills, {} records, {} replayed, dropped {:?}, \
             latency p50/p99 {:?}/{:?} ms, event loop moved {:?} times, {:.1} s",
            s.kernel_kills,
            s.records,
            s.replayed,
            s.dropped,
            s.latency_ms.map(|p| p.p50),
            s.latency_ms.map(|p| p.p99),
            s.loop_moves,
            s.secs
        );
    }

    /// Records equal kernel kills, none replayed, none dropped.
    pub fn lossless(&self) -> bool {
        self.kernel_kills > 0
            && self.records == self.kernel_kills
            && self.replayed == 0
            && self.dropped == Some(0.0)
    }
}

/// What the bench records beside a storm: each killer's hold of its CPU (tracefs), the
/// hypervisor's steals, and the CPU stalls the steal counter misses.
struct Instruments {
    hold: Option<super::killer_hold::KillerHold>,
    steal: sys::StealWatch,
    stalls: super::stalls::StallWatch,
}

impl Instruments {
    fn start(tag: &str) -> Instruments {
        Instruments {
            hold: super::killer_hold::KillerHold::start(tag),
            steal: sys::StealWatch::start(),
            stalls: super::stalls::StallWatch::start(),
        }
    }

    /// Stops them all: the killers' holds over the kills no steal window overlapped, and kill →
    /// record (ms) over the kills no steal or stall window overlapped, and how many records one
    /// did. A stall that a killer's hold covers is the kernel's own (a killer keeps its CPU
    /// from the watcher too): it excludes nothing.
    fn finish(
        self,
        agent: &Agent,
        mark: super::agent::Mark,
        live: &[&super::agent::Record],
    ) -> (Option<Pct>, Option<Pct>, u64) {
        let holds = self.hold.map(|h| h.finish()).unwrap_or_default();
        let hold_spans: Vec<(u64, u64)> = holds
            .iter()
            .map(|(at, ms)| (*at, at + (ms * 1e6) as u64))
            .collect();
        let mut windows = self.steal.finish();
        let clean_holds: Vec<f64> = holds
            .iter()
            .zip(&hold_spans)
            .filter(|(_, &(a, b))| !sys::overlaps(&windows, a, b))
            .map(|((_, ms), _)| *ms)
            .collect();
        let stalls = self.stalls.finish();
        windows.extend(stalls.into_iter().filter(|&w| !covered(&hold_spans, w)));
        let (latency, robbed) = unrobbed(agent, mark, live, &windows);
        (Pct::of(&clean_holds), latency, robbed)
    }
}

/// Whether one of `spans` covers the stall `(from, to)` but for its watcher's 2 ms (the last
/// wake-up before it and the late one).
fn covered(spans: &[(u64, u64)], (from, to): (u64, u64)) -> bool {
    const SLACK: u64 = 2_000_000;
    spans
        .iter()
        .any(|&(a, b)| a <= from + SLACK && to <= b + SLACK)
}

/// Kill → record (ms) of the kills whose span (kernel timestamp → line written) overlaps no
/// steal or stall window, and how many did.
fn unrobbed(
    agent: &Agent,
    mark: super::agent::Mark,
    live: &[&super::agent::Record],
    windows: &[(u64, u64)],
) -> (Option<Pct>, u64) {
    let ktime: std::collections::HashMap<i64, u64> =
        live.iter().map(|r| (r.pid, r.ktime_ns)).collect();
    let (mut clean, mut robbed) = (Vec::new(), 0);
    for w in agent.written_since(mark) {
        let Some(&k) = ktime.get(&w.pid) else {
            continue;
        };
        if sys::overlaps(windows, k, k + w.latency_us * 1000) {
            robbed += 1;
        } else {
            clean.push(w.latency_us as f64 / 1000.0);
        }
    }
    (Pct::of(&clean), robbed)
}

const MOVES: &str = "oomwatch_event_loop_moves_total";

/// `oomwatch_event_loop_moves_total` now (none with a single CPU).
fn loop_moves(agent: &Agent) -> Option<f64> {
    http::metric(&agent.metrics().ok()?, MOVES)
}

/// Kills in `n` fresh cgroups of `limit` bytes, `per_cgroup` each (or until `stop`), and
/// measures the agent meanwhile.
pub fn storm(
    agent: &Agent,
    tag: &str,
    n: usize,
    per_cgroup: u64,
    limit: u64,
    stop: Option<Arc<AtomicBool>>,
) -> Result<Storm> {
    let cgs = Cgroups::create(tag, n, limit)?;
    let mark = agent.mark();
    sys::reset_peak_rss(agent.pid);
    let s0 = agent.sample()?;
    let moves0 = loop_moves(agent);
    let c0 = sys::cpu_times();
    let mut kmsg = super::kernel_log::KmsgCounter::open();
    let instruments = Instruments::start(tag);
    eprintln!(
        "[bench] storm {tag}: {n} cgroups of {} MiB, {} kills each...",
        limit >> 20,
        if per_cgroup == u64::MAX {
            "until stopped".to_string()
        } else {
            per_cgroup.to_string()
        }
    );
    let outcome = storm::storm(&cgs, per_cgroup, stop, Duration::from_secs(600))?;
    let c1 = sys::cpu_times();
    let (busy, steal_ms) = (c0.busy_pct_until(&c1), c0.steal_ms_until(&c1));
    let kernel_kills = wait_for_records(agent, mark, &cgs)?;
    let s1 = agent.sample()?;
    let (_, logged_kills) = kmsg.count();
    let recs = agent.records_since(mark, &cgs.paths);
    let live: Vec<_> = recs.iter().filter(|r| !r.replayed).collect();
    let pids: HashSet<i64> = live.iter().map(|r| r.pid).collect();
    let read: Vec<f64> = live
        .iter()
        .map(|r| r.read_ns.saturating_sub(r.ktime_ns) as f64 / 1e6)
        .collect();
    let metrics = agent.metrics().unwrap_or_default();
    let moves = http::metric(&metrics, MOVES)
        .zip(moves0)
        .map(|(b, a)| b - a);
    let cpu_ns = s0.cpu_ns_until(&s1);
    let wakeups = s1.ctxsw.saturating_sub(s0.ctxsw);
    let records = live.len() as u64;
    let (killer_hold_ms, latency_unrobbed_ms, robbed_kills) =
        instruments.finish(agent, mark, &live);
    let drains = agent.drain_ages_since(mark);
    if records > 0 && drains.is_empty() {
        anyhow::bail!(
            "[bench] storm {tag}: {records} records but no `ring buffer drained` trace line \
             (did the line or its module move? the agent is run with --log-level {})",
            super::agent::LOG_LEVEL
        );
    }
    let s = Storm {
        cgroups: n,
        limit_mib: limit >> 20,
        secs: outcome.elapsed.as_secs_f64(),
        sigkilled: outcome.sigkilled,
        other_exits: outcome.other_exits,
        kernel_kills,
        records,
        replayed: (recs.len() - live.len()) as u64,
        dropped: http::metric(&metrics, "oomwatch_events_dropped_total"),
        missed: http::metric(&metrics, "oomwatch_oom_kills_missed_total"),
        latency_ms: Pct::of(&agent.latencies_since(mark, &pids)),
        drain_ms: Pct::of(&drains),
        read_ms: Pct::of(&read),
        kill_to_exit_ms: Pct::of(&agent.kill_to_exit_since(mark)),
        killer_hold_ms,
        latency_unrobbed_ms,
        robbed_kills,
        cpu_ms: cpu_ns as f64 / 1e6,
        cpu_us_per_record: (records > 0).then(|| cpu_ns as f64 / 1e3 / records as f64),
        peak_rss_kib: s1.hwm_kib.max(s1.rss_kib),
        wakeups,
        loop_moves: moves,
        runq_wait_us_per_wakeup: (wakeups > 0)
            .then(|| s1.wait_ns.saturating_sub(s0.wait_ns) as f64 / 1e3 / wakeups as f64),
        machine_busy_pct: busy,
        steal_ms,
        other_host_kills: logged_kills.saturating_sub(kernel_kills),
    };
    s.log(tag);
    Ok(s)
}

/// Waits until the agent has written as many records for `cgs` as the kernel counted kills
/// (at most 15 s), then a little longer to catch duplicates. Returns the kernel's count.
fn wait_for_records(agent: &Agent, mark: super::agent::Mark, cgs: &Cgroups) -> Result<u64> {
    // A record may be held up to 250 ms for its kernel-log context.
    thread::sleep(Duration::from_millis(400));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let kernel = cgs.kernel_kills()?;
        let records = agent.records_since(mark, &cgs.paths).len() as u64;
        if records >= kernel || Instant::now() > deadline {
            thread::sleep(Duration::from_millis(400));
            return cgs.kernel_kills();
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `wrk` on the agent's `/metrics` while a storm runs in `cgroups` cgroups until wrk is done
/// (or `max_per_cgroup` kills each).
pub fn wrk_with_storm(
    agent: &Agent,
    secs: u64,
    cgroups: usize,
    max_per_cgroup: u64,
    limit: u64,
) -> Result<(tools::WrkResult, Storm)> {
    let stop = Arc::new(AtomicBool::new(false));
    thread::scope(|s| {
        let storm_stop = stop.clone();
        let st = s.spawn(move || {
            storm(
                agent,
                "wrk",
                cgroups,
                max_per_cgroup,
                limit,
                Some(storm_stop),
            )
        });
        // Let the storm get going before the load starts.
        thread::sleep(Duration::from_millis(300));
        let w = tools::wrk(agent.port, secs, 4);
        stop.store(true, Ordering::Relaxed);
        let st = st
            .join()
            .map_err(|_| anyhow::anyhow!("the storm thread panicked"))?;
        Ok((w?, st?))
    })
}

/// Kills one victim at a time while polling node_exporter's `/metrics` every 10 ms, and
/// reports when `node_vmstat_oom_kill` moved after each kill, next to oomwatch's latency.
pub fn vmstat_delay(
    agent: &Agent,
    ne: &NodeExporter,
    kills: usize,
    limit: u64,
) -> Result<VmstatDelay> {
    let cgs = Cgroups::create("vmstat", 1, limit)?;
    let dir = cgs.dirs()[0].clone();
    let mark = agent.mark();
    let stop = AtomicBool::new(false);
    let mut kmsg = super::kernel_log::KmsgCounter::open();
    let changes: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let polls: Mutex<Vec<f64>> = Mutex::new(Vec::new());
    eprintln!("[bench] node_exporter: {kills} kills, polling node_vmstat_oom_kill every 10 ms...");
    thread::scope(|s| -> Result<()> {
        let poller = s.spawn(|| -> Result<()> {
            let mut conn = Conn::connect(ne.port)?;
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let body = conn.get("/metrics")?;
                let seen_ns = sys::monotonic_ns();
                polls
                    .lock()
                    .unwrap()
                    .push(t0.elapsed().as_secs_f64() * 1000.0);
                let v = http::metric(&String::from_utf8_lossy(&body), "node_vmstat_oom_kill");
                if last.is_some() && v != last {
                    changes.lock().unwrap().push(seen_ns);
                }
                last = v;
                sys::sleep_until(t0 + Duration::from_millis(10));
            }
            Ok(())
        });
        thread::sleep(Duration::from_millis(300));
        let mut result = Ok(());
        for _ in 0..kills {
            if let Err(e) = storm::kill_one(&dir) {
                result = Err(e);
                break;
            }
            thread::sleep(Duration::from_millis(400));
        }
        stop.store(true, Ordering::Relaxed);
        poller
            .join()
            .map_err(|_| anyhow::anyhow!("the poller panicked"))?
            .context("polling node_exporter")?;
        result
    })?;
    wait_for_records(agent, mark, &cgs)?;
    let (log_lines, _) = kmsg.count();
    let changes = changes.into_inner().unwrap();
    let mut delays = Vec::new();
    let mut ours = Vec::new();
    for r in agent.records_since(mark, &cgs.paths) {
        if let Some(t) = changes.iter().find(|t| **t > r.ktime_ns) {
            delays.push((t - r.ktime_ns) as f64 / 1e6);
        }
        if let Some(l) = agent.latency_of(mark, r.pid) {
            ours.push(l);
        }
    }
    Ok(VmstatDelay {
        kills: delays.len(),
        delay_ms: Pct::of(&delays),
        oomwatch_ms: Pct::of(&ours),
        poll_ms: Pct::of(&polls.into_inner().unwrap()),
        log_lines_per_kill: log_lines as f64 / kills.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::covered;

    #[test]
    fn only_a_stall_a_killers_hold_spans_is_the_kernels_own() {
        let ms = 1_000_000;
        let holds = [(100 * ms, 130 * ms), (200 * ms, 201 * ms)];
        // A 25 ms hold keeps the watcher of its CPU off it: that stall is the hold.
        assert!(covered(&holds, (101 * ms, 131 * ms)));
        // A 100 ms stall a 1 ms hold merely overlaps is not.
        assert!(!covered(&holds, (150 * ms, 250 * ms)));
        assert!(!covered(&[], (1, 2)));
    }
}
