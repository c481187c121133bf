//! Restart without loss: kills that happen while the agent is stopped are replayed from the
//! kernel log at its next start, exactly once, marked `"replayed": true` and counted; a second
//! restart replays nothing. Checked against the kernel's own "Killed process" lines.
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, Kmsg, TestCgroup};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn kills_while_stopped_are_replayed_once() {
    if !real_kernel_or_skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_string();
    let args = ["--state-dir", dir.as_str()];

    // First run: records its position, replays nothing (no earlier position).
    let mut agent = Agent::start(&args);
    let cg = TestCgroup::new(32 << 20);
    let live = cg.oom_kill(0);
    agent.wait_event(WAIT, |v| v["pid"] == live && v["replayed"] == false);
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));

    // Down: three kills, as the kernel logs them.
    let mut kmsg = Kmsg::open();
    let mut down = BTreeSet::new();
    for _ in 0..3 {
        let pid = cg.oom_kill(0);
        kmsg.killed(pid, WAIT);
        down.insert(pid);
    }

    // Second run: exactly those three, replayed, counted.
    let mut agent = Agent::start(&args);
    let mut replayed = BTreeSet::new();
    for _ in 0..3 {
        let ev = agent.wait_event(WAIT, |v| {
            v["replayed"] == true
                && !replayed.contains(&(v["pid"].as_i64().unwrap_or_default() as i32))
        });
        assert_eq!(ev["sources"]["pid"], "kmsg:oom_report", "{ev}");
        assert_eq!(ev["comm"], "tail", "{ev}");
        replayed.insert(ev["pid"].as_i64().unwrap() as i32);
    }
    assert_eq!(replayed, down);
    agent.drain(Duration::from_millis(700));
    let again: Vec<_> = agent
        .seen
        .iter()
        .filter(|v| v["replayed"] == true)
        .collect();
    assert_eq!(again.len(), 3, "replayed twice or too many: {again:?}");
    assert!(
        !agent.seen.iter().any(|v| v["pid"] == live),
        "the live kill was replayed"
    );
    let m = agent.get("/metrics");
    assert_eq!(
        metric_value(&m, "oomwatch_oom_kills_all_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "oomwatch_oom_kills_replayed_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));

    // Third run: nothing to replay.
    let mut agent = Agent::start(&args);
    agent.drain(Duration::from_millis(1500));
    assert!(
        agent.seen.iter().all(|v| v["replayed"] == false),
        "{:?}",
        agent.seen
    );
    assert!(
        agent.log_text().contains("\"kills\":0"),
        "{}",
        agent.log_text()
    );
}
