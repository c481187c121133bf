//! The one-sentence `explanation` for the kinds of kill the kernel makes.
use std::time::SystemTime;

use super::explain;
use crate::record::Candidate;
use crate::record::{OomContext, OomEvent, Task};

fn candidate(pid: i32, comm: &str, points: i64) -> Candidate {
    Candidate {
        pid,
        tgid: pid,
        comm: comm.into(),
        points,
        rss: None,
        swap: None,
        pgtables: None,
        oom_score_adj: None,
        cgroup: None,
        namespace: None,
        pod: None,
    }
}

/// A global OOM's victim `dd` (pid 203) with a task dump that ranks a sleeper higher.
fn global_kill(message: &str, order: i32) -> OomEvent {
    let mut ev = OomEvent::new(203, 1, SystemTime::UNIX_EPOCH, "h".into());
    ev.tgid = Some(203);
    ev.comm = Some("dd".into());
    ev.oom_score_adj = Some(0);
    ev.oom = OomContext {
        constraint: Some("CONSTRAINT_NONE".into()),
        order: Some(order),
        totalpages: Some(120_324),
        badness: Some(105_984),
        chosen: Some(Task {
            pid: 203,
            tgid: 203,
            comm: "dd".into(),
        }),
        message: Some(message.into()),
        candidates: Some(vec![
            candidate(203, "dd", 105_984),
            candidate(202, "sleep", 120_008),
        ]),
        ..OomContext::default()
    };
    ev.allocating_task_kill = ev.oom.settle_allocating_task_kill();
    ev
}

#[test]
fn a_kill_chosen_by_badness_names_its_points_and_the_next_candidate() {
    let ev = global_kill("Out of memory", 0);
    assert_eq!(ev.allocating_task_kill, Some(false));
    assert_eq!(ev.oom.badness, Some(105_984));
    assert_eq!(
        explain(&ev).unwrap(),
        "dd (pid 203) was chosen with 105984 points of the 120324-page host (global OOM); \
         next: sleep (pid 202) 120008 points; oom_score_adj 0"
    );
}

#[test]
fn an_allocating_task_kill_claims_no_rank() {
    // vm.oom_kill_allocating_task=1: the kernel killed the task that allocated, ranking none
    // (oc->chosen_points stays 0, a dump-computed badness is no rank it gave).
    let ev = global_kill("Out of memory (oom_kill_allocating_task)", 0);
    assert_eq!(ev.allocating_task_kill, Some(true));
    assert_eq!(ev.oom.badness, None);
    assert_eq!(
        explain(&ev).unwrap(),
        "dd (pid 203) was killed as the allocating task (vm.oom_kill_allocating_task=1), \
         not ranked by badness, in the host (global OOM); top by badness: sleep (pid 202) \
         120008 points; oom_score_adj 0"
    );
}

#[test]
fn a_manual_kill_says_sysrq() {
    let ev = global_kill("Out of memory", -1);
    assert!(ev.oom.manual());
    let s = explain(&ev).unwrap();
    assert!(
        s.contains("of the 120324-page host (global OOM, manual: sysrq f)"),
        "{s}"
    );
    // A memcg OOM is never manual, whatever its order.
    let mut memcg = global_kill("Memory cgroup out of memory", -1);
    memcg.oom.oom_memcg = Some("/app".into());
    assert!(!memcg.oom.manual());
}
