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
mod tests {
    //! Points and ranking as the kernel computes them.
    use super::*;
    use crate::explain::badness::{host_totals, totalpages};
    use crate::explain::sentence::explanation;
    use crate::source::kmsg::oom::DumpRow;

    fn row(pid: i32, rss: u64, swap: u64, pgt: u64, adj: i16, name: &str) -> DumpRow {
        DumpRow {
            pid,
            uid: 0,
            tgid: pid,
            total_vm_pages: rss * 2,
            rss_pages: rss,
            rss_anon_pages: Some(rss),
            rss_file_pages: Some(0),
            rss_shmem_pages: Some(0),
            pgtables_bytes: Some(pgt),
            nr_ptes: None,
            nr_pmds: None,
            swapents: Some(swap),
            oom_score_adj: Some(adj),
            name: name.into(),
        }
    }

    #[test]
    fn points_follow_oom_badness() {
        // rss + swap + pgtables pages; the adj term divides totalpages by 1000 first.
        let r = row(1, 16716, 0, 176128, 0, "tail");
        assert_eq!(points(&r, None, 4096), Some(16716 + 43));
        let adj = row(2, 1000, 10, 8192, 300, "x");
        assert_eq!(
            points(&adj, Some(16384), 4096),
            Some(1000 + 10 + 2 + 300 * 16)
        );
        assert_eq!(
            points(&adj, None, 4096),
            None,
            "adj term needs the domain size"
        );
        let neg = row(3, 1000, 0, 0, -500, "y");
        assert_eq!(points(&neg, Some(16384), 4096), Some(1000 - 500 * 16));
        assert_eq!(points(&row(4, 9, 0, 0, -1000, "z"), Some(1), 4096), None);
    }

    #[test]
    fn the_chosen_comes_first_then_by_points() {
        let dump = TaskDump {
            rows: vec![
                row(10, 100, 0, 0, 0, "small"),
                row(11, 5000, 0, 0, 0, "big"),
                row(12, 3000, 0, 0, 0, "chosen"),
                row(13, 9000, 0, 0, -1000, "protected"),
                row(14, 5000, 0, 0, 0, "tie"),
            ],
            dropped_rows: 0,
            malformed_rows: 0,
        };
        let c = from_dump(&dump, Some(12), Some(100_000), 4096, 3);
        // Every row with an oom_score_adj has points when the domain's size is known.
        assert_eq!(unscored(&dump, 12, Some(100_000), 4096), 0);
        let order: Vec<i32> = c.iter().map(|c| c.pid).collect();
        assert_eq!(order, [12, 11, 14]);
        assert_eq!(c[1].rss, Some(5000 * 4096));
        assert!(from_dump(&dump, None, None, 4096, 10)
            .iter()
            .all(|c| c.pid != 13));
        // Without the domain's size a non-zero oom_score_adj cannot be weighed: those rows are
        // counted (not the chosen one's, not the -1000 that the killer skips).
        let adj = TaskDump {
            rows: vec![
                row(20, 100, 0, 0, 300, "chosen"),
                row(21, 100, 0, 0, -999, "agent"),
                row(22, 100, 0, 0, 0, "plain"),
                row(23, 100, 0, 0, -1000, "protected"),
            ],
            dropped_rows: 0,
            malformed_rows: 0,
        };
        assert_eq!(unscored(&adj, 20, None, 4096), 1);
        assert_eq!(unscored(&adj, 20, Some(65_504), 4096), 0);
    }

    #[test]
    fn domain_size_from_the_report_or_the_host() {
        let gib = 1u64 << 30;
        // memcg 64 MiB, no swap on the host.
        assert_eq!(
            totalpages(Some(65536), None, false, Some(gib), Some(0), 4096),
            Some(16384)
        );
        // Swap limited to 16 MiB, host has 1 GiB of swap.
        assert_eq!(
            totalpages(
                Some(65536),
                Some(Some(16384)),
                false,
                Some(gib),
                Some(gib),
                4096
            ),
            Some(16384 + 4096)
        );
        // Unlimited swap: as much as the host has.
        assert_eq!(
            totalpages(Some(65536), Some(None), false, Some(gib), Some(gib), 4096),
            Some(16384 + 262144)
        );
        assert_eq!(
            totalpages(None, None, true, Some(gib), Some(0), 4096),
            Some(262144)
        );
        assert_eq!(totalpages(None, None, false, Some(gib), None, 4096), None);
        assert_eq!(
            host_totals("MemTotal:  1024 kB\nSwapTotal: 0 kB\n"),
            (Some(1 << 20), Some(0))
        );
    }

    #[test]
    fn the_sentence_names_the_runner_up() {
        let next = Candidate {
            pid: 77,
            tgid: 77,
            comm: "java".into(),
            points: 9100,
            rss: Some(0),
            swap: None,
            pgtables: None,
            oom_score_adj: Some(0),
            cgroup: None,
            namespace: None,
            pod: None,
        };
        let chosen = Candidate {
            pid: 5,
            tgid: 5,
            comm: "tail".into(),
            points: 17910,
            ..next.clone()
        };
        let list = [chosen, next];
        assert_eq!(
        explanation(
            ("tail", 5, Some(5)),
            Some(17910),
            Some(16384),
            Some("memcg /x"),
            Some(0),
            Some(&list),
            0
        ),
        "tail (pid 5) was chosen with 17910 points of the 16384-page memcg /x; next: java (pid \
         77) 9100 points; oom_score_adj 0"
    );
        assert_eq!(
            explanation(
                ("tail", 5, None),
                None,
                None,
                None,
                None,
                Some(&list[..1]),
                0
            ),
            "tail (pid 5) was chosen; no other candidate"
        );
        // A cpuset OOM's dump: the other tasks' oom_score_adj cannot be weighed without its size.
        assert_eq!(
        explanation(
            ("dd", 5, None),
            Some(61132),
            None,
            Some("cpuset"),
            Some(0),
            Some(&list[..1]),
            3
        ),
        "dd (pid 5) was chosen with 61132 points in cpuset; 3 other tasks unscored (the report \
         lacks the domain's size); oom_score_adj 0"
    );
        // The leader (5) had exited: the kernel scored the process as 5 and killed thread 6.
        assert_eq!(
            explanation(("tail", 6, Some(5)), None, None, None, None, Some(&list), 0),
            "tail (pid 6) was chosen; next: java (pid 77) 9100 points"
        );
    }

    #[test]
    fn threads_of_one_process_are_one_process() {
        assert!(same_process((6, Some(5)), (5, Some(5))));
        assert!(same_process((5, Some(5)), (6, Some(5))));
        assert!(same_process((6, Some(5)), (7, Some(5))));
        assert!(same_process((5, None), (5, None)));
        assert!(!same_process((6, Some(5)), (77, Some(77))));
        assert!(
            !same_process((6, Some(0)), (7, Some(0))),
            "tgid 0 is unknown"
        );
        assert!(!same_process((6, None), (5, None)));
    }
}
