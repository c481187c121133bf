//! No kill lost: under a storm of real OOM kills in four memory cgroups at once, every kill the
//! kernel counts has a record, `oomwatch_oom_kills_missed_total` stays 0, and the kernel's own
//! counter is exported.
mod common;

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use common::{metric_value, real_kernel_or_skip, Agent, TestCgroup};

const CGROUPS: usize = 4;
const KILLS_EACH: usize = 10;

#[test]
fn a_storm_of_kills_leaves_nothing_missed() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut agent = Agent::start(&[]);
    let kernel_before = metric_value(&agent.get("/metrics"), "oomwatch_kernel_oom_kills_total")
        .expect("oomwatch_kernel_oom_kills_total exported");
    let cgroups: Vec<TestCgroup> = (0..CGROUPS).map(|_| TestCgroup::new(32 << 20)).collect();
    let pids: Vec<i32> = thread::scope(|s| {
        let handles: Vec<_> = cgroups
            .iter()
            .map(|cg| s.spawn(move || (0..KILLS_EACH).map(|_| cg.oom_kill(0)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let kernel_kills: u64 = cgroups.iter().map(|c| c.oom_kills()).sum();
    assert_eq!(
        kernel_kills as usize,
        CGROUPS * KILLS_EACH,
        "kernel's memcg counts"
    );

    // One record per victim, none twice.
    let mut want: HashSet<i32> = pids.iter().copied().collect();
    while !want.is_empty() {
        let ev = agent.wait_event(Duration::from_secs(10), |v| {
            v["pid"]
                .as_i64()
                .is_some_and(|p| want.contains(&(p as i32)))
        });
        want.remove(&(ev["pid"].as_i64().unwrap() as i32));
    }
    agent.drain(Duration::from_millis(500));
    let ours = agent
        .seen
        .iter()
        // Events only: follow-up lines (`type`, e.g. oom_kill_lifecycle) share the pid.
        .filter(|v| v["type"].is_null())
        .filter(|v| {
            v["pid"]
                .as_i64()
                .is_some_and(|p| pids.contains(&(p as i32)))
        })
        .count();
    assert_eq!(ours, pids.len(), "records for our victims (none twice)");

    // The kernel's counter moved by at least our kills; the miss count, computed from a kernel
    // count taken after the storm and settled, is 0.
    let first = agent.get("/metrics");
    let kernel_after = metric_value(&first, "oomwatch_kernel_oom_kills_total").unwrap();
    assert!(
        kernel_after - kernel_before >= kernel_kills as f64,
        "{first}"
    );
    thread::sleep(Duration::from_millis(2500));
    let settled = agent.get("/metrics");
    assert_eq!(
        metric_value(&settled, "oomwatch_oom_kills_missed_total"),
        Some(0.0),
        "{settled}"
    );
    assert_eq!(
        metric_value(&settled, "oomwatch_events_dropped_total"),
        Some(0.0)
    );
}
