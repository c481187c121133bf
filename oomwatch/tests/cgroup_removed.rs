//! A victim whose memory cgroup is removed right after the kill, as a container runtime removes
//! an exited container's cgroup, keeps its cgroup in the event: when the directory is gone
//! before the agent looks the cgroup id up (and the victim is gone from `/proc`), the kernel's
//! report names it (`task_memcg=`).
mod common;

use std::fs;
use std::thread;
use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};

const WAIT: Duration = Duration::from_secs(10);

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on the agent this test started; no memory is shared.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill({pid}, {sig})"
    );
}

#[test]
fn a_victim_whose_cgroup_is_removed_before_the_agent_looks_keeps_it() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    // The kernel rate-limits its report's header (10 per 5 s, host-wide), and the path is in
    // the header's "oom-kill:" line: kill again after the window if it was suppressed.
    for attempt in 1..=4 {
        let cg = TestCgroup::new(64 << 20);
        // The agent stopped: the kill waits in the ring buffer and the kernel log while its
        // cgroup is removed and the victim reaped.
        signal(agent.pid(), libc::SIGSTOP);
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (inv, _) = kmsg.invocation_of(pid, WAIT);
        let removed = (0..50).any(|_| {
            fs::remove_dir(&cg.dir).is_ok() || {
                thread::sleep(Duration::from_millis(100));
                false
            }
        });
        signal(agent.pid(), libc::SIGCONT);
        assert!(removed, "cannot remove {}", cg.dir.display());
        let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
        if inv.constraint.is_empty() {
            eprintln!("report header rate-limited (attempt {attempt}); retrying in 5.5 s");
            thread::sleep(Duration::from_millis(5500));
            continue;
        }
        assert_eq!(inv.task_memcg, cg.path, "the kernel's own record");
        assert_eq!(ev["cgroup"], cg.path.as_str(), "{ev}");
        assert_eq!(ev["sources"]["cgroup"], "kmsg:oom_report", "{ev}");
        assert_eq!(ev["victim"]["cgroup"], cg.path.as_str(), "{ev}");
        return;
    }
    panic!("the kernel printed no report header in 4 tries");
}
