//! Every SIGKILL to a task in a memory cgroup, attributed on the real kernel (issue 15): a
//! shell's `kill -9`, `/bin/kill`, a process that names itself `earlyoom` (its executable is
//! Python: `other`), a process killing itself, and the kernel's OOM killer (`oom_kernel`, with
//! the OOM event's `oom_id`). Each is checked against the kernel's own account: the target's
//! wait status (killed by signal 9) and, for the OOM kill, `/dev/kmsg` and `memory.oom_control`.
//! Then a storm: a loop SIGKILLing 10,000 children while real OOM kills happen; every OOM kill
//! is still recorded and the storm's records beyond its sender's rate are counted as dropped.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, Kmsg, TestCgroup};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// `sh` in `cg` running `script` (with `$T` the cgroup's `cgroup.procs`); returns its status.
fn sh_in(cg: &TestCgroup, script: &str) -> std::process::ExitStatus {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]).stdin(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    cmd.status().expect("run sh")
}

/// The agent's `sigkill` line for target `pid`.
fn sigkill_of(agent: &mut Agent, pid: i32) -> Value {
    agent.wait_event(WAIT, |v| {
        v["type"] == "sigkill" && v["target"]["pid"] == pid
    })
}

/// A table row: the case, what the agent said, what the kernel said; a mismatch is a failure.
fn row(case: &str, got: &Value, want_kind: &str, kernel: &str, failures: &mut Vec<String>) {
    let kind = got["sender_kind"].as_str().unwrap_or("?");
    let verdict = if kind == want_kind { "PASS" } else { "FAIL" };
    eprintln!(
        "TABLE | sigkill | {case} | sender_kind={kind} sender.exe={} sender.comm={} oom_id={} | \
         {kernel} | {verdict}",
        got["sender"]["exe"], got["sender"]["comm"], got["oom_id"]
    );
    if verdict == "FAIL" {
        failures.push(format!(
            "{case}: sender_kind {kind}, want {want_kind}: {got}"
        ));
    }
}

/// A sleeping process in `cg`; returns it (the caller kills it).
fn sleeper(cg: &TestCgroup) -> std::process::Child {
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("600").stdin(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    cmd.spawn().expect("spawn sleep")
}

fn shell_kills(agent: &mut Agent, cg: &TestCgroup, failures: &mut Vec<String>) {
    for (case, killer) in [
        ("kill -9 from a shell", "kill -9"),
        ("/bin/kill -9", "/bin/kill -9"),
    ] {
        let mut s = sleeper(cg);
        let pid = s.id() as i32;
        let st = Command::new("/bin/sh")
            .args(["-c", &format!("{killer} {pid}")])
            .status()
            .unwrap();
        assert!(st.success());
        let status = s.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{case}: killed by SIGKILL");
        let got = sigkill_of(agent, pid);
        assert_eq!(got["target"]["cgroup"], cg.path.as_str(), "{got}");
        assert_eq!(got["si_code"], 0, "kill(2) is SI_USER: {got}");
        assert_eq!(got["delivered"], true, "{got}");
        let exe = got["sender"]["exe"].as_str().unwrap_or("");
        let want_exe = if killer.starts_with("/bin/kill") {
            "kill"
        } else {
            "sh"
        };
        if !exe.rsplit('/').next().unwrap_or("").contains(want_exe)
            && !exe.ends_with("dash")
            && !exe.ends_with("busybox")
        {
            failures.push(format!("{case}: sender.exe {exe}, want a {want_exe}"));
        }
        row(case, &got, "other", "wait status: signal 9", failures);
    }
}

/// Names itself earlyoom and SIGKILLs its child: a name, not the executable.
const FORGER: &str = r#"
import ctypes, os, time
ctypes.CDLL(None).prctl(15, b"earlyoom", 0, 0, 0)
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(0.2)
os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
print(status, flush=True)
"#;

fn forged_earlyoom(agent: &mut Agent, cg: &TestCgroup, failures: &mut Vec<String>) {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", FORGER]).stdin(Stdio::null());
    cg.enter_on_exec(&mut cmd);
    let out = cmd.output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let pid: i32 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .expect("child pid");
    let status: i32 = lines.next().and_then(|l| l.parse().ok()).expect("status");
    assert_eq!(status & 0x7f, 9, "the child died of SIGKILL");
    let got = sigkill_of(agent, pid);
    assert_eq!(got["sender"]["comm"], "earlyoom", "{got}");
    let exe = got["sender"]["exe"].as_str().unwrap_or("");
    assert!(
        exe.contains("python"),
        "the executable, not the name: {got}"
    );
    row(
        "renamed earlyoom kills its child",
        &got,
        "other",
        "waitpid: signal 9",
        failures,
    );
}

fn kills_itself(agent: &mut Agent, cg: &TestCgroup, failures: &mut Vec<String>) {
    // `exec` so that the shell's pid is the one that kills itself (no fork for the builtin).
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo $$; kill -9 $$"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cg.enter_on_exec(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.signal(), Some(9));
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let got = sigkill_of(agent, pid);
    row(
        "a shell kills itself",
        &got,
        "self",
        "wait status: signal 9",
        failures,
    );
}

/// The `oom_id` of the first OOM event seen.
fn got_first_oom_id(agent: &Agent) -> Value {
    let first = agent
        .seen
        .iter()
        .find(|v| v["type"].is_null() && v["oom_id"].is_u64());
    first.map_or(Value::Null, |v| v["oom_id"].clone())
}

fn oom_kill(agent: &mut Agent, cg: &TestCgroup, failures: &mut Vec<String>) {
    let mut kmsg = Kmsg::open();
    let before = cg.oom_kills();
    let pid = cg.oom_kill(0);
    let kernel = kmsg.killed(pid, WAIT);
    assert_eq!(cg.oom_kills(), before + 1, "memory.oom_control oom_kill");
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid && v["type"].is_null());
    let got = sigkill_of(agent, pid);
    assert_eq!(got["si_code"], 128, "the kernel's own SIGKILL: {got}");
    assert_eq!(
        got["oom_id"], ev["oom_id"],
        "linked to its OOM event: {got}"
    );
    assert!(got["oom_id"].is_u64(), "{got}");
    let says = format!("kmsg: Killed process {} ({})", kernel.pid, kernel.comm);
    row(
        "the kernel's OOM killer",
        &got,
        "oom_kernel",
        &says,
        failures,
    );
}

#[test]
fn every_sigkill_in_a_cgroup_is_attributed() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let cg = TestCgroup::new(48 << 20);
    let mut failures = Vec::new();
    shell_kills(&mut agent, &cg, &mut failures);
    forged_earlyoom(&mut agent, &cg, &mut failures);
    kills_itself(&mut agent, &cg, &mut failures);
    oom_kill(&mut agent, &cg, &mut failures);
    // A child allocating while its shell lives: still the kernel's.
    let before = cg.oom_kills();
    let old: Vec<Value> = agent.seen.iter().map(|v| v["pid"].clone()).collect();
    let st = sh_in(&cg, "tail /dev/zero; exit 0");
    assert!(st.success(), "the shell survived its child's kill");
    assert_eq!(cg.oom_kills(), before + 1);
    let ev = agent.wait_event(WAIT, |v| {
        v["type"].is_null() && v["cgroup"] == cg.path.as_str() && !old.contains(&v["pid"])
    });
    assert_ne!(ev["oom_id"], got_first_oom_id(&agent), "a new invocation");
    let got = sigkill_of(&mut agent, ev["pid"].as_i64().unwrap() as i32);
    let says = "memory.oom_control oom_kill +1";
    row(
        "OOM kill of a child, parent alive",
        &got,
        "oom_kernel",
        says,
        &mut failures,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Forks `n` children that sleep, SIGKILLing each at once; prints how many it killed.
const STORM: &str = r#"
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

#[test]
fn a_sigkill_storm_loses_no_oom_kill_and_counts_its_drops() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let dropped = |a: &Agent| {
        metric_value(
            &a.get("/metrics"),
            "oomwatch_sigkills_dropped_total{reason=\"rate_limited\"}",
        )
        .unwrap_or(0.0)
    };
    let dropped_before = dropped(&agent);
    let storm_cg = TestCgroup::new(256 << 20);
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", STORM, "10000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    storm_cg.enter_on_exec(&mut cmd);
    let storm = cmd.spawn().expect("python3");
    let storm_pid = storm.id() as i64;
    // Real OOM kills while the storm runs, in a cgroup of their own.
    let cg = TestCgroup::new(32 << 20);
    let victims: Vec<i32> = (0..5).map(|_| cg.oom_kill(0)).collect();
    let out = storm.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10000");
    for v in &victims {
        agent.wait_event(WAIT, |e| e["pid"] == *v && e["type"].is_null());
        agent.wait_event(WAIT, |e| e["type"] == "sigkill" && e["target"]["pid"] == *v);
    }
    assert_eq!(cg.oom_kills(), victims.len() as u64, "the kernel's count");
    agent.drain(Duration::from_secs(2));
    let recorded = agent
        .seen
        .iter()
        .filter(|e| e["type"] == "sigkill" && e["sender"]["tgid"] == storm_pid)
        .count() as f64;
    let dropped = dropped(&agent) - dropped_before;
    eprintln!("storm: 10000 SIGKILLs, {recorded} recorded, {dropped} dropped (rate_limited)");
    assert!(
        recorded >= 64.0,
        "the sender's burst is recorded: {recorded}"
    );
    assert!(recorded < 2_000.0, "the storm was rate-limited: {recorded}");
    assert!(
        recorded + dropped >= 10_000.0,
        "every SIGKILL is recorded or counted: {recorded} + {dropped}"
    );
}
