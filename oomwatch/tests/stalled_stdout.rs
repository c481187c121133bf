//! A stdout nobody reads (a full log pipe, a stopped collector) does not stop the agent: the
//! HTTP server keeps answering and every OOM kill still reaches the metrics and `/events`,
//! while the JSON lines wait in a bounded queue (`oomwatch_stdout_lines_queued`). The kills
//! whose lines still wait there when the agent is `kill -9`ed are replayed by the next start.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, kill_pid, metric_value, real_kernel_or_skip, Agent, TestCgroup};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `path` within `timeout`: the whole answer, or what failed.
fn get(port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(out)
}

#[test]
fn a_stalled_stdout_stops_neither_http_nor_records() {
    if !real_kernel_or_skip() {
        return;
    }
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let (agent, stdout) = start_stalled(state.path(), port);

    let cg = TestCgroup::new(32 << 20);
    let mut victims = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        victims.push(cg.oom_kill(0));
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let h = get(port, "/healthz", Duration::from_secs(2));
        assert!(
            h.as_deref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
            "/healthz with stdout stalled after {} kills: {h:?}",
            victims.len()
        );
        slowest = slowest.max(t.elapsed());
    }
    let events = get(port, "/events", Duration::from_secs(2)).unwrap();
    let metrics = get(port, "/metrics", Duration::from_secs(5)).unwrap();
    let queued = metric_value(&metrics, "oomwatch_stdout_lines_queued");
    eprintln!(
        "stdout stalled: {} kills, /healthz slowest {slowest:?}, lines queued {queued:?}",
        victims.len()
    );
    for v in &victims {
        assert!(
            events.contains(&format!("\"pid\":{v},")),
            "kill {v} not in /events"
        );
    }
    assert!(queued >= Some(1.0), "nothing queued: {queued:?}");
    assert_eq!(cg.oom_kills(), victims.len() as u64);

    // SIGTERM with lines still queued: out within the 2 s the queue gets, and a bit.
    let t = Instant::now();
    let mut agent = agent;
    // SAFETY: kill with our own child's pid.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    while agent.0.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.0.try_wait().unwrap().is_some(), "agent did not exit");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        t.elapsed()
    );
    drop(stdout);
}

/// The agent with `--state-dir state`, its stdout a one-page pipe nobody reads; returns once it
/// is ready.
fn start_stalled(state: &std::path::Path, port: u16) -> (Killed, std::process::ChildStdout) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own.
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if l.contains("waiting for OOM kills") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("agent ready");
    (Killed(child), stdout)
}

/// Lines queued for stdout when the agent is `kill -9`ed never made it out: the kernel-log
/// position must not count their kills as recorded, so the next start replays every one of
/// them. (The position used to be written right after a line was queued: those kills were
/// lost, as `tests/resilience.rs` once saw under CI load.)
#[test]
fn kills_whose_lines_were_still_queued_at_kill_9_are_replayed() {
    if !real_kernel_or_skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut agent, stdout) = start_stalled(state.path(), port);
    let cg = TestCgroup::new(32 << 20);
    let mut victims = Vec::new();
    // Each line is a few KiB: the page-sized pipe fills after one or two, the rest queue.
    for _ in 0..5 {
        victims.push(cg.oom_kill(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = get(port, "/metrics", Duration::from_secs(5)).unwrap();
    let queued = metric_value(&metrics, "oomwatch_stdout_lines_queued");
    assert!(queued >= Some(3.0), "lines queued: {queued:?}");
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    // What agent 1 wrote: the complete lines in the pipe.
    let mut written = String::new();
    BufReader::new(stdout).read_to_string(&mut written).unwrap();
    let out: Vec<i32> = written
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter_map(|v| kill_pid(&v))
        .collect();
    let unwritten: Vec<i32> = victims
        .iter()
        .copied()
        .filter(|v| !out.contains(v))
        .collect();
    assert!(unwritten.len() >= 3, "written {out:?} of {victims:?}");
    eprintln!("kill -9 with {queued:?} lines queued: kills {out:?} written, {unwritten:?} not");

    let dir = state.path().to_str().unwrap();
    let mut next = Agent::start(&["--state-dir", dir]);
    for pid in &unwritten {
        let ev = next.wait_event(Duration::from_secs(10), |v| kill_pid(v) == Some(*pid));
        assert_eq!(ev["replayed"], true, "kill {pid}: {ev}");
    }
    next.drain(Duration::from_millis(500));
    for pid in &out {
        let again = next
            .seen
            .iter()
            .filter(|v| kill_pid(v) == Some(*pid))
            .count();
        assert_eq!(
            again, 0,
            "kill {pid} was written by the first agent and replayed too"
        );
    }
}
