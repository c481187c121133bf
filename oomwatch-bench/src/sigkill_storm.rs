//! 1c: what attributing every SIGKILL costs. The OOM storm again with `--sigkills false`
//! (against the main storm, where it is on), and a SIGKILL storm: a loop that forks and
//! SIGKILLs 10,000 children while an OOM storm runs, on the default agent. Every OOM kill must
//! still be recorded; the loop's records beyond its sender's rate are dropped and counted.
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::agent::Agent;
use super::http;
use super::json::J;
use super::phases::{self, Storm};
use super::stats::Pct;
use super::storm::Cgroups;

/// SIGKILLs the loop sends.
pub const KILLS: u64 = 10_000;

/// Forks `n` children that sleep and SIGKILLs each at once; prints `n` when done.
const LOOP: &str = r#"
import os, sys, time
n = int(sys.argv[1])
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(n, flush=True)
"#;

/// What the SIGKILL storm measured.
#[derive(Clone, Debug, Default)]
pub struct SigkillStorm {
    pub kills: u64,
    pub secs: f64,
    /// `sigkill` lines of the loop's process.
    pub recorded: u64,
    /// `oomwatch_sigkills_dropped_total` by reason, over the phase.
    pub dropped_rate_limited: Option<f64>,
    pub dropped_ring_full: Option<f64>,
    /// Signal → line read by this bench (ms), for the loop's recorded SIGKILLs.
    pub read_ms: Option<Pct>,
    /// The agent's CPU over the whole phase (ms), and per SIGKILL sent (µs).
    pub cpu_ms: f64,
    pub cpu_us_per_kill: f64,
    /// The OOM storm run meanwhile.
    pub oom: Storm,
}

impl SigkillStorm {
    pub fn json(&self, storm_json: fn(&Storm) -> J) -> J {
        let opt = |v: Option<f64>| v.map_or(J::Null, J::Num);
        J::obj(vec![
            ("sigkills_sent", J::Num(self.kills as f64)),
            ("secs", J::Num(self.secs)),
            ("sigkill_records", J::Num(self.recorded as f64)),
            ("dropped_rate_limited", opt(self.dropped_rate_limited)),
            ("dropped_ring_full", opt(self.dropped_ring_full)),
            ("signal_to_read_ms", Pct::json(&self.read_ms)),
            ("agent_cpu_ms", J::Num(self.cpu_ms)),
            ("agent_cpu_us_per_sigkill", J::Num(self.cpu_us_per_kill)),
            ("oom_storm", storm_json(&self.oom)),
        ])
    }
}

fn dropped(metrics: &str, reason: &str) -> Option<f64> {
    let series = format!("oomwatch_sigkills_dropped_total{{reason=\"{reason}\"}}");
    http::metric(metrics, &series)
}

/// The loop in a cgroup of its own, an OOM storm in `n` cgroups for as long as it runs.
pub fn run(agent: &Agent, n: usize, limit: u64) -> Result<SigkillStorm> {
    let home = Cgroups::create("sigkill-loop", 1, 512 << 20)?;
    let procs = home.dirs()[0].join("cgroup.procs");
    let m0 = agent.metrics().unwrap_or_default();
    let s0 = agent.sample()?;
    let t0 = Instant::now();
    eprintln!("[bench] sigkill storm: a loop SIGKILLs {KILLS} children, an OOM storm meanwhile");
    let script = format!(
        "echo $$ > {} && exec python3 -c \"$0\" {KILLS}",
        procs.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script, LOOP])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn the SIGKILL loop (python3)")?;
    let sender = i64::from(child.id());
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        stopper.store(true, Ordering::Relaxed);
        out
    });
    let oom = phases::storm(agent, "sigkill-storm", n, u64::MAX, limit, Some(stop))?;
    let out = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the loop's waiter panicked"))??;
    if String::from_utf8_lossy(&out.stdout).trim() != KILLS.to_string() {
        bail!("the SIGKILL loop did not finish: {:?}", out.status);
    }
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let s1 = agent.sample()?;
    let m1 = agent.metrics().unwrap_or_default();
    let lines = agent.sigkills_of(sender);
    let read: Vec<f64> = lines
        .iter()
        .map(|(k, r)| r.saturating_sub(*k) as f64 / 1e6)
        .collect();
    let delta = |r| Some(dropped(&m1, r)? - dropped(&m0, r).unwrap_or(0.0));
    let cpu_ns = s0.cpu_ns_until(&s1) as f64;
    let s = SigkillStorm {
        kills: KILLS,
        secs,
        recorded: lines.len() as u64,
        dropped_rate_limited: delta("rate_limited"),
        dropped_ring_full: delta("ring_full"),
        read_ms: Pct::of(&read),
        cpu_ms: cpu_ns / 1e6,
        cpu_us_per_kill: cpu_ns / 1e3 / KILLS as f64,
        oom,
    };
    eprintln!(
        "[bench] sigkill storm: {} sent, {} recorded, {:?} rate-limited, {:?} ring full; OOM \
         storm {} kills / {} records, p99 {:?} ms",
        s.kills,
        s.recorded,
        s.dropped_rate_limited,
        s.dropped_ring_full,
        s.oom.kernel_kills,
        s.oom.records,
        s.oom.latency_ms.map(|p| p.p99)
    );
    Ok(s)
}
