//! The kernel log through `syslog(2)` where `/dev/kmsg` cannot be opened (a container's device
//! cgroup refuses the device; `tests/containerd_agent.rs` runs the agent so): real OOM kills
//! in a memory cgroup get their context from the kernel's report all the same, checked against
//! `/dev/kmsg` read by the test itself. The agent is told to act as if the device were refused
//! (`--kmsg-via-syslog`), and must say so in its log.
mod common;

use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn oom_context_comes_from_the_log_read_with_syslog() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&["--kmsg-via-syslog"]);
    let log = agent.log_text();
    assert!(
        log.contains("reading the kernel log with syslog(2) instead"),
        "{log}"
    );
    let cg = TestCgroup::new(32 << 20);
    let mut checked = 0;
    for attempt in 1..=4 {
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (inv, _) = kmsg.invocation_of(pid, WAIT);
        let ev = agent.wait_event(WAIT, |v| v["pid"] == pid && v["type"].is_null());
        // The kernel rate-limits its report's header (10 per 5 s, host-wide): without it
        // there is no context to compare.
        if inv.constraint.is_empty() || inv.task_memcg != cg.path {
            eprintln!("report header rate-limited (attempt {attempt}); retrying");
            std::thread::sleep(Duration::from_millis(5500));
            continue;
        }
        assert_eq!(ev["constraint"], inv.constraint.as_str(), "{ev}");
        assert_eq!(ev["oom_memcg"], cg.path.as_str(), "{ev}");
        assert_eq!(ev["gfp_mask"], inv.gfp_mask.as_str(), "{ev}");
        assert_eq!(ev["order"], inv.order, "{ev}");
        assert_eq!(ev["oom_domain"], "system", "{ev}");
        let pids: Vec<i64> = ev["candidates"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["pid"].as_i64()).collect())
            .unwrap_or_default();
        assert!(
            pids.contains(&i64::from(pid)),
            "the report's task dump: {ev}"
        );
        checked += 1;
        if checked == 2 {
            break;
        }
    }
    assert_eq!(checked, 2, "two kills with their report");
}

/// With the log read through `syslog(2)`, kill lines are still matched with live records
/// (only the replay after a restart is gone): a kill whose both `mark_victim` rows' records
/// are dropped is recorded from its line (`replayed: true`, the line's figures), and a kill
/// whose SIGKILL the probes did not see before its mark is proved a kill by its line and
/// recorded live. Each once, checked against the kernel's own line and `oom_kill` count.
#[test]
fn kills_the_probes_miss_are_recorded_from_the_log_read_with_syslog() {
    if !real_kernel_or_skip() {
        return;
    }
    let cases: [(&[&str], bool); 2] = [
        (
            &[
                "--drop-probe-records",
                "tp_btf:mark_victim",
                "--drop-probe-records",
                "tracepoint:oom/mark_victim",
            ],
            true,
        ),
        (&["--miss-kill-signals"], false),
    ];
    for (knobs, replayed) in cases {
        let mut args = vec!["--kmsg-via-syslog"];
        args.extend_from_slice(knobs);
        let mut agent = Agent::start(&args);
        let cg = TestCgroup::new(32 << 20);
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let line = kmsg.killed(pid, WAIT);
        let ev = agent.wait_event(WAIT, |v| v["pid"] == pid && v["type"].is_null());
        assert_eq!(ev["replayed"], replayed, "{knobs:?}: {ev}");
        assert_eq!(ev["comm"], line.comm.as_str(), "{ev}");
        assert_eq!(ev["anon_rss"], line.anon_rss_kb * 1024, "{ev}");
        assert_eq!(ev["total_vm"], line.total_vm_kb * 1024, "{ev}");
        // Past the 3 s a line waits for its record: nothing written twice.
        agent.drain(Duration::from_millis(3500));
        let n = agent
            .seen
            .iter()
            .filter(|v| v["pid"] == pid && v["type"].is_null())
            .count();
        assert_eq!(n, 1, "{knobs:?}: one event for the kill");
        assert_eq!(cg.oom_kills(), 1, "the kernel's count");
        assert_eq!(agent.stop(libc::SIGTERM), Some(0));
    }
}
