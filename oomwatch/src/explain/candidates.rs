//! The tasks the OOM killer scored, ranked as the kernel ranks them.
//!
//! From the kernel's task dump (`vm.oom_dump_tasks=1`, the default), each eligible task's points
//! are computed with [`badness`] (the kernel's `oom_badness()`); tasks with
//! `oom_score_adj = -1000` are never candidates.
use super::badness::{badness, OOM_SCORE_ADJ_MIN};
use crate::record::Candidate;

use crate::source::kmsg::oom::{DumpRow, TaskDump};

/// Default number of candidates put in an event.
pub const DEFAULT_TOP: usize = 5;

/// Points of one dump row, as `oom_badness()` computes them; `None` for a task the killer never
/// picks (`oom_score_adj = -1000`) or a row lacking a needed column.
pub fn points(row: &DumpRow, totalpages: Option<u64>, page_size: u64) -> Option<i64> {
    let adj = row.oom_score_adj?;
    if adj == OOM_SCORE_ADJ_MIN {
        return None;
    }
    let pt_pages = match (row.pgtables_bytes, row.nr_ptes) {
        (Some(b), _) => b / page_size.max(1),
        (None, Some(p)) => p.saturating_add(row.nr_pmds.unwrap_or(0)),
        (None, None) => return None,
    };
    let pages = row.rss_pages.saturating_add(row.swapents.unwrap_or(0));
    // Only a non-zero adjustment needs the domain's size.
    let total = if adj == 0 { 0 } else { totalpages? };
    Some(badness(pages.saturating_add(pt_pages), adj, total))
}

/// The eligible tasks of a dump, the chosen one first, then by points descending (ties by pid),
/// at most `top`.
pub fn from_dump(
    dump: &TaskDump,
    chosen: Option<i32>,
    totalpages: Option<u64>,
    page_size: u64,
    top: usize,
) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = dump
        .rows
        .iter()
        .filter_map(|r| {
            let p = points(r, totalpages, page_size)?;
            Some(Candidate {
                pid: r.pid,
                tgid: r.tgid,
                comm: r.name.clone(),
                points: p,
                rss: Some(r.rss_pages.saturating_mul(page_size)),
                swap: r.swapents.map(|s| s.saturating_mul(page_size)),
                pgtables: r.pgtables_bytes,
                oom_score_adj: r.oom_score_adj,
                cgroup: None,
                namespace: None,
                pod: None,
            })
        })
        .collect();
    rank(&mut all, chosen, top);
    all
}

/// Rows of a dump the killer scored (`oom_score_adj` above -1000) whose points cannot be
/// computed: a non-zero `oom_score_adj` needs the domain's size, which the report does not give
/// for a cpuset or memory-policy OOM. The chosen task's row is not counted.
pub fn unscored(dump: &TaskDump, chosen: i32, totalpages: Option<u64>, page_size: u64) -> usize {
    dump.rows
        .iter()
        .filter(|r| r.pid != chosen && r.oom_score_adj != Some(-1000))
        .filter(|r| points(r, totalpages, page_size).is_none())
        .count()
}

/// Orders candidates as the event shows them: the chosen one first, then by points descending
/// (ties by pid), at most `top`.
pub fn rank(all: &mut Vec<Candidate>, chosen: Option<i32>, top: usize) {
    all.sort_by(|a, b| {
        let ac = Some(a.pid) == chosen;
        let bc = Some(b.pid) == chosen;
        bc.cmp(&ac)
            .then(b.points.cmp(&a.points))
            .then(a.pid.cmp(&b.pid))
    });
    all.truncate(top);
}

/// Whether two tasks, each `(pid, tgid if known)`, belong to one process. The kernel scores a
/// process by its leader but names the thread it kills, which is another thread when the
/// leader has exited (`find_lock_task_mm()`). A tgid of 0 counts as unknown.
pub fn same_process(a: (i32, Option<i32>), b: (i32, Option<i32>)) -> bool {
    let tgid = |t: Option<i32>| t.filter(|&t| t > 0);
    let (ta, tb) = (tgid(a.1), tgid(b.1));
    a.0 == b.0 || ta == Some(b.0) || tb == Some(a.0) || (ta.is_some() && ta == tb)
}

#[cfg(test)]
#[path = "candidates_tests.rs"]
mod tests;
