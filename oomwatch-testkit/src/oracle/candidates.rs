//! "Why this victim": an event's `candidates` against the kernel's own task dump of the same
//! invocation. The first candidate is the task the kernel chose (`oom-kill:...,pid=`), the
//! order is the kernel's ranking (points descending, ties by pid) and each candidate's points,
//! rss, swap, page tables and `oom_score_adj` equal its dump row: points = rss + swapents +
//! pgtables_bytes / page_size + oom_score_adj * (totalpages / 1000). The `oom_badness` probes'
//! points are the kernel's own return values, so where they attach this also proves the
//! dump-based formula; the kernel-log source `kmsg:oom_report` must give the same list.

use serde_json::Value;
use std::collections::BTreeMap;

use super::{at, pid_of};
use crate::kernel_log::{badness, Invocation};

/// What the test knows of the kill's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<'a> {
    /// The source the candidates must come from (`sources.candidates`).
    pub source: &'a str,
    /// `totalpages` of the OOM: the memory cgroup's limit in pages (no swap).
    pub totalpages: i64,
    /// The kernel's page size.
    pub page_size: i64,
    /// How many candidates the agent keeps (`--candidates`).
    pub top: usize,
}

/// The kernel's ranking of an invocation from its dump: (pid, points), the chosen task first,
/// then by points descending, ties by pid; tasks with oom_score_adj -1000 are never candidates.
pub fn kernel_ranking(inv: &Invocation, setting: &Setting) -> Vec<(i64, i64)> {
    let chosen = inv.chosen();
    let mut rows: Vec<(i64, i64)> = inv
        .tasks
        .iter()
        .filter(|(_, r)| r.get("oom_score_adj") != Some(&-1000))
        .filter_map(|(pid, r)| Some((*pid, badness(r, setting.totalpages, setting.page_size)?)))
        .collect();
    rows.sort_by(|a, b| {
        (b.0 == chosen)
            .cmp(&(a.0 == chosen))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(&b.0))
    });
    rows.truncate(setting.top);
    rows
}

/// The event's candidates as (pid, points); `i64::MIN` for a missing number.
pub fn of_event(e: &Value) -> Vec<(i64, i64)> {
    let list = e.get("candidates").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|c| {
            let n = |k: &str| c.get(k).and_then(Value::as_i64).unwrap_or(i64::MIN);
            (n("pid"), n("points"))
        })
        .collect()
}

/// The candidates of event `e` against the dump of `inv` (which printed its report header):
/// the source, the kernel's ranking and each row's fields.
pub fn match_dump(e: &Value, inv: &Invocation, setting: &Setting) -> Vec<String> {
    let pid = pid_of(e);
    let mut problems = Vec::new();
    let source = at(e, "sources.candidates").and_then(Value::as_str);
    if source != Some(setting.source) {
        problems.push(format!(
            "pid {pid} sources.candidates: agent {source:?}, expected {:?}",
            setting.source
        ));
    }
    let want = kernel_ranking(inv, setting);
    let got = of_event(e);
    if got != want {
        problems.push(format!(
            "pid {pid} candidates (pid, points): agent {got:?}, kernel {want:?} (chosen {})",
            inv.chosen()
        ));
    }
    let list = e.get("candidates").and_then(Value::as_array);
    for c in list.into_iter().flatten() {
        problems.extend(row_fields(pid, c, &inv.tasks, setting.page_size));
    }
    problems
}

/// A candidate's memory and `oom_score_adj` against its dump row.
fn row_fields(
    pid: i64,
    c: &Value,
    tasks: &BTreeMap<i64, BTreeMap<String, i64>>,
    page_size: i64,
) -> Vec<String> {
    let cpid = c.get("pid").and_then(Value::as_i64).unwrap_or(-1);
    let Some(row) = tasks.get(&cpid) else {
        return vec![format!(
            "pid {pid}: candidate {cpid} is not in the kernel's dump"
        )];
    };
    let mut out = Vec::new();
    for (field, column, mult) in [
        ("rss", "rss", page_size),
        ("swap", "swapents", page_size),
        ("pgtables", "pgtables_bytes", 1),
        ("oom_score_adj", "oom_score_adj", 1),
    ] {
        let want = row.get(column).map(|v| v * mult);
        let got = c.get(field).and_then(Value::as_i64);
        if want.is_none() || got != want {
            out.push(format!(
                "pid {pid} candidate {cpid} {field}: agent {got:?}, kernel {want:?}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The ranking on a hand-written dump; `vm-test`'s candidates tests
    //! (oomwatch-guest/src/check/candidates.rs) run the whole check on it and on a real guest's events.
    use super::*;

    #[test]
    fn the_kernels_ranking_puts_the_chosen_first_and_leaves_out_adj_min() {
        let row = |rss: i64, pgt: i64, adj: i64| {
            [
                ("rss", rss),
                ("swapents", 0),
                ("pgtables_bytes", pgt),
                ("oom_score_adj", adj),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .collect()
        };
        let mut inv = Invocation {
            header: true,
            summary: [("pid".to_string(), "10".to_string())].into(),
            tasks: [
                (10, row(16668, 167936, 0)),
                (11, row(1, 28672, 500)),
                (12, row(1, 28672, 0)),
                (13, row(900, 4096, -1000)),
            ]
            .into(),
            ..Invocation::default()
        };
        let setting = Setting {
            source: "x",
            totalpages: 16384,
            page_size: 4096,
            top: 5,
        };
        let r = kernel_ranking(&inv, &setting);
        assert_eq!(r, [(10, 16709), (11, 8 + 500 * 16), (12, 8)]);
        let top = Setting { top: 2, ..setting };
        assert_eq!(kernel_ranking(&inv, &top).len(), 2);
        // The chosen first even when another task has more points.
        inv.summary.insert("pid".into(), "12".into());
        assert_eq!(kernel_ranking(&inv, &setting)[0], (12, 8));
    }
}
