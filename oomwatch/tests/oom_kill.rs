//! `oom_kill_process`: the invocation's context on each event, compared with the kernel's own
//! "invoked oom-killer" and "oom-kill:" lines; or, where neither fentry nor kprobe may attach
//! (this project's CI host), the fallback is reported and the events still flow.
mod common;

use std::time::Duration;

use common::{real_kernel_or_skip, Agent, Kmsg, TestCgroup};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn oom_context_matches_the_kernel_or_its_absence_is_explained() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let log = agent.log_text();
    let attached = |probe: &str| {
        log.lines()
            .any(|l| l.contains("probe attached") && l.contains(&format!("\"probe\":\"{probe}\"")))
    };
    let via = [
        "fentry:oom_kill_process",
        "kprobe:oom_kill_process",
        "kmsg:oom_report",
    ]
    .into_iter()
    .find(|p| attached(p));

    let cg = TestCgroup::new(64 << 20);
    // The kernel rate-limits the report header (10 per 5 s, host-wide), so under other tests'
    // kills its lines can be missing: try again after the window.
    let mut attempt = 0;
    let (pid, kernel) = loop {
        let mut kmsg = Kmsg::open();
        let pid = cg.oom_kill(0);
        let (kernel, _) = kmsg.invocation_of(pid, WAIT);
        attempt += 1;
        if !kernel.constraint.is_empty() || attempt == 4 {
            break (pid, kernel);
        }
        eprintln!("kernel report header rate-limited; retrying in 5.5 s");
        std::thread::sleep(Duration::from_millis(5500));
    };
    assert!(
        !kernel.constraint.is_empty(),
        "the kernel printed no report header in 4 tries"
    );
    let ev = agent.wait_event(WAIT, |v| v["pid"] == pid);
    match via {
        Some(source) => {
            assert_eq!(ev["sources"]["oom"], source, "{ev}");
            assert_eq!(ev["constraint"], kernel.constraint.as_str(), "{ev}");
            assert_eq!(ev["gfp_mask"], kernel.gfp_mask.as_str(), "{ev}");
            assert!(
                ev["gfp_flags"].as_array().is_some_and(|f| !f.is_empty()),
                "{ev}"
            );
            assert_eq!(ev["order"], kernel.order, "{ev}");
            assert_eq!(
                ev["oom_memcg"],
                kernel.oom_memcg.as_deref().unwrap(),
                "{ev}"
            );
            assert_eq!(ev["chosen"]["pid"], pid, "{ev}");
            assert_eq!(ev["group_kill"], false, "{ev}");
            assert_eq!(ev["message"], "Memory cgroup out of memory", "{ev}");
            assert!(ev["badness"].as_i64().unwrap() > 0, "{ev}");
            assert!(ev["oom_id"].as_u64().unwrap() >= 1);
            // The probe reads the trigger's memcg; from the kernel log it is known only because
            // the victim itself allocated (the trigger is the victim's process).
            assert_eq!(ev["trigger"]["pid"], pid, "{ev}");
            assert_eq!(ev["trigger"]["cgroup"], kernel.task_memcg.as_str(), "{ev}");
        }
        None => {
            // Every row says why it could not attach, and nothing was invented.
            for probe in [
                "fentry:oom_kill_process",
                "kprobe:oom_kill_process",
                "kmsg:oom_report",
            ] {
                assert!(
                    log.lines().any(|l| l.contains("probe unavailable")
                        && l.contains(&format!("\"probe\":\"{probe}\""))
                        && l.contains("\"reason\":")),
                    "{probe} neither attached nor explained:\n{log}"
                );
            }
            for f in [
                "oom_id",
                "constraint",
                "gfp_mask",
                "order",
                "badness",
                "oom_memcg",
            ] {
                assert!(ev[f].is_null(), "{f} without a source: {ev}");
            }
            assert!(ev["sources"]["oom"].is_null(), "{ev}");
        }
    }
}
