//! Least privilege: once its programs are attached and its descriptors open, the agent holds
//! no capability at all (in any thread, the stdout writer's included; bounding set emptied),
//! and still records OOM kills and answers scrapes. A failed drop stops the agent unless
//! `--allow-cap-drop-failure`.
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
