//! Why this victim, in one sentence: the chosen task's points of its domain, the next task in
//! line, its `oom_score_adj`; or why no ranking applies (a `memory.oom.group` member, a task
//! killed as the allocating task).
use crate::record::OomEvent;

use super::candidates::same_process;
use crate::record::Candidate;

/// One sentence on why the victim was chosen, e.g. "tail (pid 12531) was chosen with 16784
/// points of the 16384-page memcg /kmsgfix; next: java (pid 77) 9100 points; oom_score_adj 0".
pub fn explanation(
    (victim_comm, victim_pid, victim_tgid): (&str, i32, Option<i32>),
    points: Option<i64>,
    totalpages: Option<u64>,
    domain: Option<&str>,
    adj: Option<i16>,
    candidates: Option<&[Candidate]>,
    unscored: usize,
) -> String {
    let next = candidates.map(|c| next_other(c, (victim_pid, victim_tgid)));
    let mut s = format!("{victim_comm} (pid {victim_pid}) was chosen");
    if let Some(p) = points {
        s.push_str(&format!(" with {p} points"));
    }
    match (totalpages, domain) {
        (Some(t), Some(d)) => s.push_str(&format!(" of the {t}-page {d}")),
        (None, Some(d)) => s.push_str(&format!(" in {d}")),
        _ => {}
    }
    match next {
        Some(Some(n)) => s.push_str(&format!(
            "; next: {} (pid {}) {} points",
            n.comm, n.pid, n.points
        )),
        Some(None) if unscored == 0 => s.push_str("; no other candidate"),
        Some(None) | None => {}
    }
    if unscored > 0 {
        s.push_str(&format!(
            "; {unscored} other tasks unscored (the report lacks the domain's size)"
        ));
    }
    if let Some(a) = adj {
        s.push_str(&format!("; oom_score_adj {a}"));
    }
    s
}

/// The candidate with the most points that is not the victim's process (scored as its leader,
/// or as another thread when the leader has exited); `candidates` are sorted by points.
pub fn next_other(candidates: &[Candidate], victim: (i32, Option<i32>)) -> Option<&Candidate> {
    candidates
        .iter()
        .find(|c| !same_process((c.pid, Some(c.tgid)), victim))
}

/// Why this victim, in one sentence (see [`explanation`]).
pub fn explain(ev: &OomEvent) -> Option<String> {
    let comm = ev.comm.as_deref()?;
    let domain = match (ev.oom.constraint.as_deref(), ev.oom.oom_memcg.as_deref()) {
        (_, Some(cg)) => Some(format!("memcg {cg}")),
        (Some("CONSTRAINT_NONE"), None) if ev.oom.manual() => {
            Some("host (global OOM, manual: sysrq f)".to_string())
        }
        (Some("CONSTRAINT_NONE"), None) => Some("host (global OOM)".to_string()),
        (Some("CONSTRAINT_CPUSET"), None) => Some("cpuset".to_string()),
        (Some("CONSTRAINT_MEMORY_POLICY"), None) => Some("memory policy's nodes".to_string()),
        _ => None,
    };
    if ev.oom.badness.is_none() && domain.is_none() {
        return None;
    }
    let group = ev.oom.group_kill == Some(true);
    if let (true, Some(c)) = (group, ev.oom.chosen.as_ref()) {
        return Some(format!(
            "{comm} (pid {}) was killed with its memory.oom.group: {} (pid {}) was chosen",
            ev.pid, c.comm, c.pid
        ));
    }
    if ev.allocating_task_kill == Some(true) {
        return Some(allocating_task_explanation(ev, comm, domain.as_deref()));
    }
    Some(explanation(
        (comm, ev.pid, ev.tgid),
        ev.oom.badness.filter(|_| !group),
        ev.oom.totalpages.or(ev.oom.estimated_totalpages),
        domain.as_deref(),
        ev.oom_score_adj,
        ev.oom.candidates.as_deref(),
        ev.oom.unscored,
    ))
}

/// No ranking: `vm.oom_kill_allocating_task=1` killed whichever task allocated; the task the
/// badness order would have taken is named for comparison.
fn allocating_task_explanation(ev: &OomEvent, comm: &str, domain: Option<&str>) -> String {
    let mut s = format!(
        "{comm} (pid {}) was killed as the allocating task (vm.oom_kill_allocating_task=1), \
         not ranked by badness",
        ev.pid
    );
    if let Some(d) = domain {
        s.push_str(&format!(", in the {d}"));
    }
    let top = ev
        .oom
        .candidates
        .as_deref()
        .and_then(|c| next_other(c, (ev.pid, ev.tgid)));
    if let Some(t) = top {
        s.push_str(&format!(
            "; top by badness: {} (pid {}) {} points",
            t.comm, t.pid, t.points
        ));
    }
    if let Some(a) = ev.oom_score_adj {
        s.push_str(&format!("; oom_score_adj {a}"));
    }
    s
}

#[cfg(test)]
mod tests {
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
}
