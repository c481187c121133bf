//! Why this victim: the tasks the OOM killer scored, ranked as the kernel ranks them.
//!
//! From the kernel's task dump (`vm.oom_dump_tasks=1`, the default), each eligible task's points
//! are computed as `oom_badness()` does: rss + swap entries + page-table pages, plus
//! `oom_score_adj * (totalpages / 1000)`; tasks with `oom_score_adj = -1000` are never
//! candidates. `totalpages` is the OOM domain's size: for a memcg OOM its limit (plus the swap it
//! may use, up to the host's swap), for a global OOM all RAM plus swap.
use serde::Serialize;

use crate::kmsg::oom::{DumpRow, TaskDump};

/// Default number of candidates put in an event.
pub const DEFAULT_TOP: usize = 5;

/// One scored task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    /// Badness points (higher is killed first).
    pub points: i64,
    /// Resident memory, bytes.
    pub rss: Option<u64>,
    /// Swapped-out memory, bytes.
    pub swap: Option<u64>,
    /// Page tables, bytes.
    pub pgtables: Option<u64>,
    pub oom_score_adj: Option<i16>,
    /// Its memory cgroup and pod, when it was still alive to ask (`/proc/<pid>/cgroup`).
    pub cgroup: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

/// Points of one dump row, as `oom_badness()` computes them; `None` for a task the killer never
/// picks (`oom_score_adj = -1000`) or a row lacking a needed column.
pub fn points(row: &DumpRow, totalpages: Option<u64>, page_size: u64) -> Option<i64> {
    let adj = i64::from(row.oom_score_adj?);
    if adj == -1000 {
        return None;
    }
    let pt_pages = match (row.pgtables_bytes, row.nr_ptes) {
        (Some(b), _) => b / page_size.max(1),
        (None, Some(p)) => p.saturating_add(row.nr_pmds.unwrap_or(0)),
        (None, None) => return None,
    };
    let pages = row.rss_pages.saturating_add(row.swapents.unwrap_or(0));
    let base = i64::try_from(pages.saturating_add(pt_pages)).ok()?;
    if adj == 0 {
        return Some(base);
    }
    // The kernel divides first: adj * (totalpages / 1000).
    let per_mille = i64::try_from(totalpages? / 1000).ok()?;
    Some(base.saturating_add(adj.saturating_mul(per_mille)))
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

/// The domain's size in pages from the report's page counters (memcg) or the host's memory
/// (global): `limit + min(swap limit, host swap)`, or `MemTotal + SwapTotal`.
pub fn totalpages(
    memcg_limit_kb: Option<u64>,
    swap_limit_kb: Option<Option<u64>>,
    global: bool,
    mem_total: Option<u64>,
    swap_total: Option<u64>,
    page_size: u64,
) -> Option<u64> {
    let page = page_size.max(1);
    let swap_pages = swap_total.unwrap_or(0) / page;
    if global {
        return Some(mem_total? / page + swap_pages);
    }
    let limit = memcg_limit_kb? * 1024 / page;
    let swap = match swap_limit_kb {
        // Unlimited: as much as the host has.
        Some(None) | None => swap_pages,
        Some(Some(kb)) => (kb * 1024 / page).min(swap_pages),
    };
    Some((limit + swap).max(1))
}

/// `/proc/meminfo`'s `MemTotal` and `SwapTotal` in bytes (for [`totalpages`]).
pub fn host_totals(meminfo: &str) -> (Option<u64>, Option<u64>) {
    let get = |key: &str| {
        meminfo.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim();
            v.parse::<u64>().ok()?.checked_mul(1024)
        })
    };
    (get("MemTotal:"), get("SwapTotal:"))
}

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
