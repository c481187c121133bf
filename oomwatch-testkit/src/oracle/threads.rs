//! Multi-threaded victims: the kernel kills one thread of the process (another one when the
//! leader has exited) and marks the others as victims without killing them. An agent writes
//! exactly one event per "Killed process" line, live, for the thread the line names, in the
//! right process.

use serde_json::Value;
use std::collections::BTreeSet;

use crate::kernel_log::KernelKill;

/// The problems of `events` (the agent's kill events of the test's cgroup) against `kills`
/// (the kernel's "Killed process" lines there) and `processes` (the pids of the processes the
/// test ran, thread-group ids): one event per killed thread, none for a thread only marked,
/// each live, in one of the processes, with the kernel's comm and anon-rss.
pub fn one_event_per_killed_thread(
    kills: &[KernelKill],
    processes: &[i64],
    events: &[Value],
) -> Vec<String> {
    let tgids: BTreeSet<i64> = processes.iter().copied().collect();
    let num = |e: &Value, k: &str| e.get(k).and_then(Value::as_i64);
    let mut problems = Vec::new();
    for k in kills {
        let n = events
            .iter()
            .filter(|e| num(e, "pid") == Some(k.pid))
            .count();
        if n != 1 {
            problems.push(format!("killed thread {}: {n} events", k.pid));
        }
    }
    for e in events {
        let pid = num(e, "pid").unwrap_or(-1);
        let Some(kill) = kills.iter().find(|k| k.pid == pid) else {
            problems.push(format!(
                "event for thread {pid} of {:?}, which the kernel did not kill",
                num(e, "tgid")
            ));
            continue;
        };
        if !num(e, "tgid").is_some_and(|t| tgids.contains(&t)) {
            problems.push(format!(
                "pid {pid}: tgid {:?}, runs {tgids:?}",
                num(e, "tgid")
            ));
        }
        if e.get("replayed").and_then(Value::as_bool) != Some(false) {
            problems.push(format!("pid {pid}: not recorded live"));
        }
        let comm = e.get("comm").and_then(Value::as_str);
        if comm != Some(kill.comm.as_str()) {
            problems.push(format!(
                "pid {pid} comm: agent {comm:?} kernel {:?}",
                kill.comm
            ));
        }
        let want = kill.numbers.get("anon-rss").map(|n| n * 1024);
        if num(e, "anon_rss") != want {
            problems.push(format!(
                "pid {pid} anon_rss: agent {:?} kernel {want:?}",
                num(e, "anon_rss")
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_log::parse_killed;
    use serde_json::json;

    #[test]
    fn a_killed_thread_has_one_live_event_and_a_marked_one_none() {
        let kill = parse_killed(
            "Memory cgroup out of memory: Killed process 12 (alloc) total-vm:10kB, anon-rss:1kB, \
             file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        )
        .unwrap();
        let ev = |pid: i64, replayed: bool| json!({"pid": pid, "tgid": 10, "comm": "alloc", "anon_rss": 1024, "replayed": replayed});
        let kills = [kill];
        assert_eq!(
            one_event_per_killed_thread(&kills, &[10], &[ev(12, false)]),
            [] as [String; 0]
        );
        assert_eq!(
            one_event_per_killed_thread(&kills, &[11], &[ev(12, true), ev(13, false)]),
            [
                "pid 12: tgid Some(10), runs {11}",
                "pid 12: not recorded live",
                "event for thread 13 of Some(10), which the kernel did not kill",
            ]
        );
        assert_eq!(
            one_event_per_killed_thread(&kills, &[10], &[]),
            ["killed thread 12: 0 events"]
        );
    }
}
