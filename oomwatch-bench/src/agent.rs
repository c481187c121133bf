//! The agent under test: started as `oomwatch run ... --log-format json --log-level debug`,
//! its event lines (stdout) and its log (stderr) collected by two threads.

use std::{
    collections::{HashSet, VecDeque},
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{http, sys};

/// One event line of the agent's stdout.
#[derive(Clone, Debug)]
pub struct Record {
    pub pid: i64,
    pub cgroup: String,
    /// The kernel's timestamp of the kill (`bpf_ktime_get_ns` at `mark_victim`).
    pub ktime_ns: u64,
    pub replayed: bool,
    /// `CLOCK_MONOTONIC` when this bench read the line.
    pub read_ns: u64,
}

/// The agent's own measurement: one `event written` debug line.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub pid: i64,
    pub latency_us: u64,
}

#[derive(Default)]
struct Collected {
    records: Vec<Record>,
    written: Vec<Written>,
    /// `age_us` of each `ring buffer drained` trace line: kernel → user-space wake-up.
    drain_age_us: Vec<u64>,
    /// `kill_to_exit_ns` of `oom_kill_lifecycle` lines, when the agent writes them.
    kill_to_exit_ns: Vec<u64>,
    /// `sigkill` lines: the sender's tgid, the signal's `ktime_ns`, when this bench read it.
    sigkills: Vec<(i64, u64, u64)>,
    bad_lines: u64,
    first_bad: Option<String>,
    log_tail: VecDeque<String>,
}

pub struct Agent {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// Spawn → "probes ready" line.
    pub startup: Duration,
    /// `VmHWM` when ready: the peak RSS of start-up.
    pub startup_hwm_kib: u64,
    pub ready_rss_kib: u64,
    state_dir: PathBuf,
    data: Arc<Mutex<Collected>>,
}

/// Where the collected data stand; phases measure between two marks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mark {
    records: usize,
    written: usize,
    drains: usize,
    exits: usize,
}

impl Agent {
    pub fn start(binary: &Path, state_dir: PathBuf, extra: &[String]) -> Result<Agent> {
        Agent::start_wrapped(&[], binary, state_dir, extra)
    }

    /// Starts the agent through `wrapper` (e.g. `chrt -f 10`, which execs it: same pid).
    pub fn start_wrapped(
        wrapper: &[&str],
        binary: &Path,
        state_dir: PathBuf,
        extra: &[String],
    ) -> Result<Agent> {
        let port = sys::free_port()?;
        let _ = fs::remove_dir_all(&state_dir);
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("create {}", state_dir.display()))?;
        let mut cmd = command(wrapper, binary, port, &state_dir, extra);
        eprintln!("[bench] $ {}", oomwatch_testkit::command::describe(&cmd));
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id();
        let data = Arc::new(Mutex::new(Collected::default()));
        let out = child.stdout.take().context("agent stdout")?;
        let d = Arc::clone(&data);
        thread::spawn(move || read_events(out, d));
        let err = child.stderr.take().context("agent stderr")?;
        let d = Arc::clone(&data);
        let (ready_tx, ready_rx) = mpsc::channel();
        let copy = log_copy(pid)?;
        thread::spawn(move || read_log(err, d, ready_tx, copy));
        let mut agent = Agent {
            child,
            pid,
            port,
            startup: Duration::ZERO,
            startup_hwm_kib: 0,
            ready_rss_kib: 0,
            state_dir,
            data,
        };
        agent.startup = agent.wait_ready(&ready_rx)?.duration_since(spawned);
        let s = sys::sample(pid)?;
        agent.startup_hwm_kib = s.hwm_kib;
        agent.ready_rss_kib = s.rss_kib;
        // /metrics answers once the server task runs: wait for it.
        for _ in 0..100 {
            if http::get_text(port, "/healthz").is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    /// When the agent logged "probes ready"; an error with its log if it exits or takes
    /// over 120 s.
    fn wait_ready(&mut self, ready: &mpsc::Receiver<Instant>) -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match ready.recv_timeout(Duration::from_millis(200)) {
                Ok(at) => return Ok(at),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = self.child.try_wait()? {
                        bail!(
                            "the agent exited ({status}) before it was ready; log:\n{}",
                            self.log_tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "the agent did not log \"probes ready\" within 120 s; log:\n{}",
                    self.log_tail()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    thread::sleep(Duration::from_millis(100));
                    bail!(
                        "the agent exited ({status}) before it was ready; log:\n{}",
                        self.log_tail()
                    );
                }
            }
        }
    }

    pub fn mark(&self) -> Mark {
        let d = self.lock();
        Mark {
            records: d.records.len(),
            written: d.written.len(),
            drains: d.drain_age_us.len(),
            exits: d.kill_to_exit_ns.len(),
        }
    }

    /// Records since `from` whose cgroup is one of `cgroups`.
    pub fn records_since(&self, from: Mark, cgroups: &HashSet<String>) -> Vec<Record> {
        self.lock().records[from.records..]
            .iter()
            .filter(|r| cgroups.contains(&r.cgroup))
            .cloned()
            .collect()
    }

    /// Records since `from` (any cgroup) and ring-buffer batches drained since `from`.
    pub fn activity_since(&self, from: Mark) -> (usize, usize) {
        let d = self.lock();
        (
            d.records.len() - from.records,
            d.drain_age_us.len() - from.drains,
        )
    }

    /// The agent's latencies (ms) since `from` for records of these pids.
    pub fn latencies_since(&self, from: Mark, pids: &HashSet<i64>) -> Vec<f64> {
        self.lock().written[from.written..]
            .iter()
            .filter(|w| pids.contains(&w.pid))
            .map(|w| w.latency_us as f64 / 1000.0)
            .collect()
    }

    /// The agent's `event written` lines since `from`.
    pub fn written_since(&self, from: Mark) -> Vec<Written> {
        self.lock().written[from.written..].to_vec()
    }

    /// Latency of each pid's record as the agent measured it (ms), since `from`.
    pub fn latency_of(&self, from: Mark, pid: i64) -> Option<f64> {
        self.lock().written[from.written..]
            .iter()
            .find(|w| w.pid == pid)
            .map(|w| w.latency_us as f64 / 1000.0)
    }

    /// Ring-buffer drain ages (ms) since `from`.
    pub fn drain_ages_since(&self, from: Mark) -> Vec<f64> {
        self.lock().drain_age_us[from.drains..]
            .iter()
            .map(|us| *us as f64 / 1000.0)
            .collect()
    }

    /// Victims' kill → exit times (ms) since `from`, from the agent's lifecycle lines.
    pub fn kill_to_exit_since(&self, from: Mark) -> Vec<f64> {
        self.lock().kill_to_exit_ns[from.exits..]
            .iter()
            .map(|ns| *ns as f64 / 1e6)
            .collect()
    }

    /// `sigkill` lines of `sender` so far: (signal `ktime_ns`, read by this bench).
    pub fn sigkills_of(&self, sender: i64) -> Vec<(u64, u64)> {
        self.lock()
            .sigkills
            .iter()
            .filter(|(s, _, _)| *s == sender)
            .map(|(_, k, r)| (*k, *r))
            .collect()
    }

    /// Stdout lines that are neither events nor another typed line, and the first of them.
    pub fn bad_lines(&self) -> (u64, Option<String>) {
        let d = self.lock();
        (d.bad_lines, d.first_bad.clone())
    }

    pub fn log_tail(&self) -> String {
        self.lock()
            .log_tail
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn metrics(&self) -> Result<String> {
        http::get_text(self.port, "/metrics")
    }

    pub fn sample(&self) -> Result<sys::Sample> {
        sys::sample(self.pid)
    }

    /// SIGTERM, then waits (SIGKILL after 15 s); an exit other than 0 is an error.
    pub fn stop(mut self) -> Result<()> {
        sys::signal(self.pid, sys::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the agent exited with {status} after SIGTERM; log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the agent did not exit within 15 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.state_dir);
    }
}

/// `oomwatch run` on `port` with `state_dir`, JSON debug logs, stdout and stderr piped.
fn command(
    wrapper: &[&str],
    binary: &Path,
    port: u16,
    state_dir: &Path,
    extra: &[String],
) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--log-format", "json"])
        // debug: the per-record `event written` latency; trace for the run loop only:
        // `ring buffer drained` with the kernel → user-space age of each batch.
        .args(["--log-level", LOG_LEVEL])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// debug: the per-record `event written` latency; trace for the event loop only: `ring buffer
/// drained` with the kernel → user-space age of each batch.
pub const LOG_LEVEL: &str = "debug,oomwatch::agent::event_loop=trace";

fn read_events(out: impl std::io::Read, data: Arc<Mutex<Collected>>) {
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        let read_ns = sys::monotonic_ns();
        let mut d = data.lock().unwrap_or_else(|e| e.into_inner());
        let v = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
        // OOM events have no `type`; other kinds of line (lifecycle, ...) name theirs.
        if v.get("type").is_some() {
            if let Some(ns) = v.get("kill_to_exit_ns").and_then(Value::as_u64) {
                d.kill_to_exit_ns.push(ns);
            }
            if v["type"] == "sigkill" {
                let sender = v["sender"]["tgid"].as_i64().unwrap_or(0);
                let ktime = v["ktime_ns"].as_u64().unwrap_or(0);
                d.sigkills.push((sender, ktime, read_ns));
            }
            continue;
        }
        match record_of(&v, read_ns) {
            Some(r) => d.records.push(r),
            None => {
                d.bad_lines += 1;
                d.first_bad.get_or_insert(line);
            }
        }
    }
}

/// The record of one OOM event line (parsed).
pub fn record_of(v: &Value, read_ns: u64) -> Option<Record> {
    Some(Record {
        pid: v.get("pid")?.as_i64()?,
        cgroup: v
            .get("cgroup")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        ktime_ns: v.get("ktime_ns")?.as_u64()?,
        replayed: v.get("replayed").and_then(Value::as_bool) == Some(true),
        read_ns,
    })
}

/// `OOMWATCH_BENCH_AGENT_LOGS=DIR`: each agent's whole log (JSON lines, trace level for the
/// event loop) is also written to `DIR/agent-<pid>.log`, to look into a slow record.
fn log_copy(pid: u32) -> Result<Option<std::io::BufWriter<fs::File>>> {
    let Some(dir) = std::env::var_os("OOMWATCH_BENCH_AGENT_LOGS") else {
        return Ok(None);
    };
    let path = Path::new(&dir).join(format!("agent-{pid}.log"));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", path.display()))?;
    let file = fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    eprintln!("[bench] agent {pid}'s log: {}", path.display());
    Ok(Some(std::io::BufWriter::new(file)))
}

fn read_log(
    err: impl std::io::Read,
    data: Arc<Mutex<Collected>>,
    ready: mpsc::Sender<Instant>,
    mut copy: Option<std::io::BufWriter<fs::File>>,
) {
    for line in BufReader::new(err).lines().map_while(Result::ok) {
        if let Some(f) = copy.as_mut() {
            use std::io::Write;
            // A copy for reading later: a failed write only shortens it.
            let _ = writeln!(f, "{line}");
        }
        if line.contains("probes ready; waiting for OOM kills") {
            let _ = ready.send(Instant::now());
        }
        let mut d = data.lock().unwrap_or_else(|e| e.into_inner());
        let v = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
        if let Some(fields) = v.get("fields") {
            match fields.get("message").and_then(Value::as_str) {
                Some("event written") => {
                    let num = |k| fields.get(k).and_then(Value::as_u64);
                    if let (Some(pid), Some(latency_us)) = (num("pid"), num("latency_us")) {
                        d.written.push(Written {
                            pid: pid as i64,
                            latency_us,
                        });
                    }
                    continue;
                }
                Some("ring buffer drained") => {
                    if let Some(age) = fields.get("age_us").and_then(Value::as_u64) {
                        d.drain_age_us.push(age);
                    }
                    continue;
                }
                _ => {}
            }
        }
        if line.contains("relocating") {
            continue;
        }
        if d.log_tail.len() >= 40 {
            d.log_tail.pop_front();
        }
        d.log_tail.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_line_is_parsed() {
        let line = r#"{"time":"x","ktime_ns":7911792382174,"host":"vm","pid":3724,"trigger":{"pid":1,"cgroup":"/t"},"cgroup":"/oomwatch-bench-1-storm-0","replayed":false}"#;
        let r = record_of(&serde_json::from_str(line).unwrap(), 5).unwrap();
        assert_eq!(r.pid, 3724);
        assert_eq!(r.ktime_ns, 7911792382174);
        assert_eq!(r.cgroup, "/oomwatch-bench-1-storm-0");
        assert!(!r.replayed);
    }
}
