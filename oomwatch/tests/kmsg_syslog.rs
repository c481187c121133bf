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
