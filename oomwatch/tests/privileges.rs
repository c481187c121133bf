//! Least privilege: once its programs are attached and its descriptors open, the agent holds
//! no capability at all (in any thread, the stdout writer's included; bounding set emptied),
//! and still records OOM kills and answers scrapes. A failed drop stops the agent unless
//! `--allow-cap-drop-failure`. Its system calls then go through a seccomp filter: every thread
//! has it, and a run that kills, attributes a SIGKILL, serves every endpoint and stops makes
//! no call the filter refuses (the kernel logs each refusal: none for the agent's pid).
mod common;

use std::fs;
use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};

/// `CapEff` and `CapPrm` of every thread of a process.
fn thread_caps(pid: u32) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = fs::read_to_string(t.path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
                .unwrap()
        };
        out.push((
            t.file_name().to_string_lossy().into_owned(),
            field("CapEff:"),
            field("CapPrm:"),
        ));
    }
    out
}

#[test]
fn agent_drops_every_capability_after_attaching_and_keeps_working() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    assert!(
        agent.log_text().contains("dropped all capabilities"),
        "{}",
        agent.log_text()
    );
    let caps = thread_caps(agent.pid());
    assert!(!caps.is_empty());
    for (tid, eff, prm) in &caps {
        assert_eq!((*eff, *prm), (0, 0), "thread {tid} keeps capabilities");
    }
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    // Started as root (with CAP_SETPCAP): the bounding set is empty too.
    assert!(
        status.lines().any(|l| l == "CapBnd:\t0000000000000000"),
        "{status}"
    );

    // Still recording: a real kill arrives as an event, and /metrics answers.
    let cg = TestCgroup::new(48 << 20);
    let mut kmsg = Kmsg::open();
    let pid = cg.oom_kill(0);
    let kernel = kmsg.killed(pid, Duration::from_secs(10));
    let ev = agent.wait_event(Duration::from_secs(10), |v| v["pid"] == pid);
    assert_eq!(ev["comm"], kernel.comm.as_str());
    assert!(agent
        .get("/metrics")
        .contains("oomwatch_oom_kills_all_total"));
    // And it still detaches and exits cleanly without privileges.
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}

#[test]
fn every_thread_runs_under_the_seccomp_filter_and_nothing_is_refused() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut kmsg = Kmsg::open();
    let mut agent = Agent::start(&[]);
    assert!(
        agent.log_text().contains("securebits locked"),
        "{}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("seccomp filter installed"),
        "{}",
        agent.log_text()
    );
    let pid = agent.pid();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = fs::read_to_string(t.path().join("status")).unwrap();
        assert!(
            status.lines().any(|l| l == "Seccomp:\t2"),
            "thread {:?} without the filter: {status}",
            t.file_name()
        );
    }
    // A kill, a SIGKILL from a shell, every endpoint, a clean stop.
    let cg = TestCgroup::new(48 << 20);
    let victim = cg.oom_kill(0);
    agent.wait_event(Duration::from_secs(10), |v| v["pid"] == victim);
    let mut sleeper = std::process::Command::new("/bin/sleep");
    sleeper.arg("600");
    cg.enter_on_exec(&mut sleeper);
    let mut s = sleeper.spawn().unwrap();
    let spid = s.id() as i32;
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(spid, libc::SIGKILL) };
    let _ = s.wait();
    agent.wait_event(Duration::from_secs(10), |v| {
        v["type"] == "sigkill" && v["target"]["pid"] == spid
    });
    for path in ["/", "/events", "/metrics", "/healthz", "/nope"] {
        assert!(agent.get(path).starts_with("HTTP/1.1 "), "{path}");
    }
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
    let refused: Vec<String> = kmsg
        .messages_now()
        .into_iter()
        .filter(|m| m.contains("type=1326") && m.contains(&format!(" pid={pid} ")))
        .collect();
    assert!(refused.is_empty(), "calls the filter refused: {refused:#?}");
}
