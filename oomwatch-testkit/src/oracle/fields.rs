//! An event's own fields against the kernel's "Killed process" line of its victim, and a
//! memory cgroup's `oom_kill` count against the kernel's lines and the agent's events.

use serde_json::Value;
use std::collections::BTreeSet;

use super::{at, pid_of, render, show};
use crate::kernel_log::KernelKill;

/// Event field -> key of the kernel's "Killed process" line and its multiplier to bytes.
const NUMERIC_FIELDS: [(&str, &str, i64); 7] = [
    ("total_vm", "total-vm", 1024),
    ("anon_rss", "anon-rss", 1024),
    ("file_rss", "file-rss", 1024),
    ("shmem_rss", "shmem-rss", 1024),
    ("pgtables", "pgtables", 1024),
    ("oom_score_adj", "oom_score_adj", 1),
    ("uid", "UID", 1),
];

/// `fields = kernel`: pid, comm, uid, memory, pgtables and oom_score_adj of `e` equal the
/// kernel's "Killed process" line of its pid (`None`: the kernel logged none).
pub fn match_kernel(e: &Value, kill: Option<&KernelKill>) -> Vec<String> {
    let pid = pid_of(e);
    let Some(kill) = kill else {
        return vec![format!("pid {pid}: no kernel line to compare with")];
    };
    let mut problems = Vec::new();
    if kill.pid != pid {
        problems.push(format!(
            "pid {pid}: the kernel's line is of pid {}",
            kill.pid
        ));
    }
    if e.get("comm").and_then(Value::as_str) != Some(kill.comm.as_str()) {
        problems.push(format!(
            "pid {pid} comm: agent {} kernel {:?}",
            show(e, "comm"),
            kill.comm
        ));
    }
    for (field, key, mult) in NUMERIC_FIELDS {
        let want = kill.numbers.get(key).map(|n| n * mult);
        if e.get(field).and_then(Value::as_i64) != want || want.is_none() {
            problems.push(format!(
                "pid {pid} {field}: agent {} kernel {}",
                show(e, field),
                want.map_or("absent".into(), |w| w.to_string())
            ));
        }
    }
    problems
}

/// `tgid`: the victims are single-threaded processes, their tgid is their pid.
pub fn tgid_is_pid(e: &Value) -> Vec<String> {
    let pid = pid_of(e);
    if e.get("tgid").and_then(Value::as_i64) == Some(pid) {
        return vec![];
    }
    vec![format!(
        "pid {pid} tgid: agent {} expected {pid}",
        show(e, "tgid")
    )]
}

/// `cgroup`: the path of the cgroup the test put the victim in (`None`: it knows none).
pub fn cgroup_is(e: &Value, want: Option<&str>) -> Vec<String> {
    let got = e.get("cgroup").and_then(Value::as_str);
    if got.is_some() && got == want {
        return vec![];
    }
    vec![format!(
        "pid {} cgroup: agent {} expected {} (source {})",
        pid_of(e),
        show(e, "cgroup"),
        want.unwrap_or("?"),
        at(e, "sources.cgroup").map_or("none".into(), render)
    )]
}

/// `one event per victim`: each victim (pid, cgroup as the problems name it) has exactly one
/// of `events`, every event is of a victim, and each was recorded live (`replayed` false: a
/// record rebuilt from the kernel log means the live one was lost, or a mark was taken for a
/// kill).
pub fn one_event_per_victim(victims: &[(i64, &str)], events: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for (pid, cgroup) in victims {
        let n = events.iter().filter(|e| pid_of(e) == *pid).count();
        if n != 1 {
            problems.push(format!("pid {pid} ({cgroup}): {n} events"));
        }
    }
    for e in events {
        let pid = pid_of(e);
        if !victims.iter().any(|(p, _)| *p == pid) {
            problems.push(format!("event for pid {pid}, which is no test victim"));
        }
        if e.get("replayed").and_then(Value::as_bool) != Some(false) {
            problems.push(format!("pid {pid}: not recorded live"));
        }
    }
    problems
}

/// One memory cgroup's kills, as the kernel and the agent account for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCount<'a> {
    /// As the problems name it: `/t`.
    pub cgroup: &'a str,
    /// The cgroup's `oom_kill` (memory.events, or memory.oom_control on cgroup v1).
    pub oom_kill: Option<i64>,
    /// Pids of the kernel's "Killed process" lines of the cgroup, one per line.
    pub killed: &'a [i64],
    /// The agent's kill events of the cgroup.
    pub events: usize,
}

impl KillCount<'_> {
    /// Distinct pids of the kernel's lines: a `memory.oom.group` kill prints (and counts) its
    /// chosen task twice, one victim and one event.
    pub fn victims(&self) -> usize {
        self.killed.iter().collect::<BTreeSet<_>>().len()
    }

    /// `memory.events`: the kernel counts oom_kill once per "Killed process" line, and the
    /// agent writes one event per victim.
    pub fn problems(&self) -> Vec<String> {
        let (lines, distinct) = (self.killed.len(), self.victims());
        if self.oom_kill == Some(lines as i64) && self.events == distinct {
            return vec![];
        }
        vec![format!(
            "{cg}: memory.events oom_kill {}, kernel 'Killed process' lines {lines} \
             ({distinct} distinct pids), agent events with cgroup {cg}: {}",
            self.oom_kill.map_or("absent".into(), |g| g.to_string()),
            self.events,
            cg = self.cgroup,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_log::parse_killed;
    use serde_json::json;

    const LINE: &str = "Memory cgroup out of memory: Killed process 7 (dd) total-vm:10kB, \
        anon-rss:1kB, file-rss:2kB, shmem-rss:3kB, UID:1000 pgtables:4kB oom_score_adj:-5";

    fn event() -> Value {
        json!({"pid": 7, "tgid": 7, "comm": "dd", "total_vm": 10240, "anon_rss": 1024,
               "file_rss": 2048, "shmem_rss": 3072, "pgtables": 4096, "oom_score_adj": -5,
               "uid": 1000, "cgroup": "/t", "sources": {"cgroup": "cgroupfs"}})
    }

    #[test]
    fn an_event_equal_to_its_line_passes_and_each_difference_is_one_problem() {
        let kill = parse_killed(LINE).unwrap();
        let e = event();
        assert_eq!(match_kernel(&e, Some(&kill)), [] as [String; 0]);
        assert_eq!(tgid_is_pid(&e), [] as [String; 0]);
        assert_eq!(cgroup_is(&e, Some("/t")), [] as [String; 0]);
        let mut bad = e.clone();
        bad["comm"] = json!("ddx");
        bad["anon_rss"] = json!(1025);
        bad["uid"] = Value::Null;
        bad["tgid"] = json!(8);
        assert_eq!(
            match_kernel(&bad, Some(&kill)),
            [
                "pid 7 comm: agent \"ddx\" kernel \"dd\"",
                "pid 7 anon_rss: agent 1025 kernel 1024",
                "pid 7 uid: agent null kernel 1000",
            ]
        );
        assert_eq!(tgid_is_pid(&bad), ["pid 7 tgid: agent 8 expected 7"]);
        assert_eq!(
            cgroup_is(&e, Some("/g")),
            ["pid 7 cgroup: agent \"/t\" expected /g (source \"cgroupfs\")"]
        );
        assert_eq!(
            match_kernel(&e, None),
            ["pid 7: no kernel line to compare with"]
        );
    }

    #[test]
    fn each_victim_has_one_live_event_and_every_event_a_victim() {
        let ev = |pid: i64, replayed: bool| json!({"pid": pid, "replayed": replayed});
        let victims = [(5, "/t"), (6, "/g")];
        assert_eq!(
            one_event_per_victim(&victims, &[ev(5, false), ev(6, false)]),
            [] as [String; 0]
        );
        assert_eq!(
            one_event_per_victim(&victims, &[ev(5, false), ev(5, false), ev(7, true)]),
            [
                "pid 5 (/t): 2 events",
                "pid 6 (/g): 0 events",
                "event for pid 7, which is no test victim",
                "pid 7: not recorded live",
            ]
        );
    }

    #[test]
    fn a_group_kill_counts_its_chosen_task_twice_but_makes_one_event() {
        let count = |oom_kill, events| KillCount {
            cgroup: "/g",
            oom_kill,
            killed: &[5, 6, 5],
            events,
        };
        assert_eq!(count(Some(3), 2).problems(), [] as [String; 0]);
        assert_eq!(
            count(Some(3), 3).problems(),
            [
                "/g: memory.events oom_kill 3, kernel 'Killed process' lines 3 (2 distinct pids), \
              agent events with cgroup /g: 3"
            ]
        );
        assert_eq!(count(None, 2).problems().len(), 1);
    }
}
