//! Multi-threaded victims, on the real kernel: a process whose threads all allocate (like a
//! Java or Go service) is OOM-killed in a memory cgroup of the test's own, with its leader alive
//! or already exited (a zombie leader: the kernel then names another thread as the victim).
//!
//! The kernel marks the victim it kills and then, often, the process's other threads as they
//! allocate again before exiting: those marks are no kills (the kernel neither counts nor logs
//! them). Checked against the kernel's own record: exactly one event per "Killed process"
//! line, for the thread the line names, in the process the test started; the events equal the
//! cgroup's `oom_kill` count; the explanation names the chosen process.
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use oomwatch_testkit::oracle::{self, fields::KillCount};
use serde_json::Value;

use common::{metric_value, real_kernel_or_skip, Agent, KernelKill, Kmsg, TestCgroup};

const WAIT: Duration = Duration::from_secs(10);
const ROUNDS: usize = 8;
const THREADS: usize = 4;

/// `examples/alloc_threads`, which `cargo test` builds next to the test binaries.
fn helper() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join("examples/alloc_threads");
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build -p oomwatch --example alloc_threads` \
         (`cargo test` does)",
        path.display()
    );
    path
}

/// Runs the helper in `cg` until the OOM killer ends it: its pid and its threads' ids.
fn run_killed(cg: &TestCgroup, leader_exits: bool) -> (i32, Vec<i32>) {
    let mut cmd = Command::new(helper());
    cmd.arg(THREADS.to_string());
    if leader_exits {
        cmd.arg("leader-exits");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    let mut child = cmd.spawn().expect("spawn alloc_threads");
    let pid = child.id() as i32;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "helper {pid}");
    // The threads exist from "ready" on; they start allocating 200 ms later.
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "helper {pid}: {status:?}"
    );
    assert!(tids.len() > THREADS, "helper {pid}: threads {tids:?}");
    (pid, tids)
}

fn is_kill(v: &Value) -> bool {
    common::kill_pid(v).is_some()
}

#[test]
fn every_kill_of_a_multithreaded_process_is_one_event() {
    if !real_kernel_or_skip() {
        return;
    }
    one_event_per_kill(&[]);
}

/// With the tracepoint `signal_generate` program (where tp_btf cannot load): the SIGKILL's
/// target is the trace record's `pid`.
#[test]
fn with_the_signal_tracepoint() {
    if !real_kernel_or_skip() {
        return;
    }
    one_event_per_kill(&["--disable-probe", "tp_btf:signal_generate"]);
}

/// Without a `signal_generate` program (kernels without the tracepoint, or both rows
/// disabled), marks are told apart by the victim's pending SIGKILL and its process.
#[test]
fn without_the_signal_probe_too() {
    if !real_kernel_or_skip() {
        return;
    }
    one_event_per_kill(&[
        "--disable-probe",
        "tp_btf:signal_generate",
        "--disable-probe",
        "tracepoint:signal/signal_generate",
    ]);
}

fn one_event_per_kill(args: &[&str]) {
    let mut agent = Agent::start(args);
    let cg = TestCgroup::new(32 << 20);
    let mut kmsg = Kmsg::open();
    // (pid, the kernel's line) per round.
    let mut rounds: Vec<(i32, bool, KernelKill)> = Vec::new();
    for round in 0..ROUNDS {
        let leader_exits = round % 2 == 1;
        let (pid, tids) = run_killed(&cg, leader_exits);
        let (_, kill) = kmsg.invocation_of_any(&tids, WAIT);
        rounds.push((pid, leader_exits, kill));
    }
    let kernel_kills = cg.oom_kills();
    assert_eq!(kernel_kills, ROUNDS as u64, "the cgroup's oom_kill count");
    for (_, _, kill) in &rounds {
        agent.wait_event(WAIT, |v| is_kill(v) && v["pid"] == kill.pid);
    }
    // Marks of the other threads come within milliseconds of the kill.
    agent.drain(Duration::from_millis(1500));

    let ours: Vec<Value> = agent
        .seen
        .iter()
        .filter(|v| is_kill(v) && v["cgroup"] == cg.path.as_str())
        .cloned()
        .collect();
    // `vm-test`'s "threaded victims" and "memory.events" assertions: one live event per
    // "Killed process" line, for the thread it names, in a process the test started, with the
    // kernel's comm and anon-rss; the events equal the cgroup's oom_kill count.
    let kills: Vec<_> = rounds.iter().map(|(_, _, k)| k.record.clone()).collect();
    let killed: Vec<i64> = kills.iter().map(|k| k.pid).collect();
    let processes: Vec<i64> = rounds.iter().map(|(pid, _, _)| i64::from(*pid)).collect();
    let mut problems = oracle::threads::one_event_per_killed_thread(&kills, &processes, &ours);
    problems.extend(
        KillCount {
            cgroup: &cg.path,
            oom_kill: Some(i64::try_from(kernel_kills).unwrap()),
            killed: &killed,
            events: ours.len(),
        }
        .problems(),
    );
    let of_processes: Vec<String> = agent
        .seen
        .iter()
        .filter(|v| processes.iter().any(|p| v["tgid"] == *p))
        .map(|v| {
            format!(
                "type {} pid {} tgid {} ktime {} trigger {} cgroup {} sources {}",
                v["type"],
                v["pid"],
                v["tgid"],
                v["ktime_ns"],
                v["trigger"]["pid"],
                v["cgroup"],
                v["sources"]
            )
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{}\nkernel's victims {killed:?}; records of the processes: {of_processes:#?}",
        problems.join("\n")
    );
    for (pid, leader_exits, kill) in &rounds {
        let ev = ours.iter().find(|v| v["pid"] == kill.pid).unwrap();
        assert_eq!(ev["tgid"], *pid, "{ev}");
        if *leader_exits {
            assert_ne!(
                kill.pid, *pid,
                "the kernel chose a thread, not the zombie leader"
            );
        }
        if let Some(text) = ev["explanation"].as_str() {
            assert!(
                !text.contains("oom.group"),
                "not a group kill (cgroup v1 has none): {text}"
            );
            assert!(text.contains(&format!("(pid {})", kill.pid)), "{text}");
        }
    }
    let m = agent.get("/metrics");
    let marks = metric_value(&m, "oomwatch_oom_marks_without_kill_total");
    assert!(marks.is_some(), "{m}");
    println!(
        "agent {args:?}: {ROUNDS} kills of {THREADS}-thread processes ({} with the leader \
         exited): {} events; marks without a kill (other threads, no event): {marks:?}",
        ROUNDS / 2,
        ours.len()
    );
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}
