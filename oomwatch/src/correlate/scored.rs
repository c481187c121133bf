//! Why this victim, from the `oom_badness` probe: the tasks the OOM killer scored, with the
//! kernel's own points (`oom_badness()`'s return, with the invocation's exact `totalpages`),
//! grouped by OOM invocation. An invocation is keyed by when the running task entered
//! `out_of_memory()` and its pid; the `oom_kill_process` record carries the same key.
//!
//! The records arrive in their own ring, before the kill's records (the killer scores every
//! task, then kills). An invocation that killed nobody (it found a victim still exiting) leaves
//! a group no kill claims; the oldest groups are dropped.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use oomwatch_common::{
    candidate_field, counter, oom_field, CandidateRecord, OomKillRecord, RecordKind,
};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};

use crate::explain::candidates;
use crate::record::Candidate;
use crate::record::Source;
use crate::source::probe::loader::read_counter;
use crate::sys::text::comm_str;

/// Invocations remembered. After a kill every task that allocates while the victim exits
/// invokes the killer again, and each such invocation scores tasks until it meets the exiting
/// victim and aborts: on a thrashing host (a global OOM in a slow VM) dozens come between the
/// kill and the agent's read of its record, all in the same drain of the ring. 16 evicted
/// the kill's own group there (`vm-test` saw the `oom_badness` rows reported silent);
/// each group holds at most `2 * (top + SLACK)` tasks (~4 KiB at the default `top`).
const KEPT: usize = 128;
/// Tasks kept per invocation beyond `top`, so that the chosen one (the highest points; the last
/// scored of equals) is kept whatever ties there are at the cut.
const SLACK: usize = 16;

#[derive(Debug)]
struct Group {
    invocation_ktime_ns: u64,
    trigger_pid: i32,
    source: Source,
    /// The highest-scored tasks (at most `2 * (top + SLACK)` between trims).
    tasks: Vec<CandidateRecord>,
    /// Records received, and the highest `seq` + 1: a difference means lost records.
    received: u32,
    scored: u32,
}

/// Scored tasks of recent invocations.
#[derive(Debug)]
pub struct Scored {
    groups: VecDeque<Group>,
    top: usize,
    page_size: u64,
}

impl Scored {
    /// Keeps enough of each invocation for `top` candidates (0: none).
    pub fn new(top: usize) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            groups: VecDeque::new(),
            top,
            page_size: u64::try_from(page).unwrap_or(4096),
        }
    }

    pub fn set_top(&mut self, top: usize) {
        self.top = top;
    }

    /// Adds one scored task.
    pub fn push(&mut self, rec: CandidateRecord) {
        let source = match RecordKind::from_u32(rec.kind) {
            Some(RecordKind::CandidateFexit) => Source::CandidatesFexit,
            Some(RecordKind::CandidateKretprobe) => Source::CandidatesKretprobe,
            _ => return,
        };
        if self.top == 0 || rec.present & candidate_field::PID == 0 {
            return;
        }
        let key = (rec.invocation_ktime_ns, rec.trigger_pid);
        let found = self
            .groups
            .iter()
            .rposition(|g| (g.invocation_ktime_ns, g.trigger_pid) == key);
        let i = found.unwrap_or_else(|| {
            if self.groups.len() == KEPT {
                self.groups.pop_front();
            }
            self.groups.push_back(Group {
                invocation_ktime_ns: key.0,
                trigger_pid: key.1,
                source,
                tasks: Vec::new(),
                received: 0,
                scored: 0,
            });
            self.groups.len() - 1
        });
        let keep = self.top + SLACK;
        let g = &mut self.groups[i];
        g.received = g.received.saturating_add(1);
        g.scored = g.scored.max(rec.seq.saturating_add(1));
        g.tasks.push(rec);
        if g.tasks.len() >= 2 * keep {
            // Points descending; of equals the later scored first (the kernel keeps the last
            // of equal points as its choice).
            g.tasks
                .sort_by(|a, b| b.points.cmp(&a.points).then(b.seq.cmp(&a.seq)));
            g.tasks.truncate(keep);
        }
    }

    /// The candidates of the invocation `rec` reports, ranked (the chosen task first) and cut
    /// to `top`, with their source; `None` when the probe reported none for it.
    pub fn for_invocation(&self, rec: &OomKillRecord) -> Option<(Vec<Candidate>, Source)> {
        if rec.present & oom_field::INVOCATION == 0 || self.top == 0 {
            return None;
        }
        let g = self.groups.iter().rev().find(|g| {
            g.invocation_ktime_ns == rec.invocation_ktime_ns && g.trigger_pid == rec.trigger_pid
        })?;
        if g.received != g.scored {
            tracing::debug!(
                scored = g.scored,
                received = g.received,
                "some scored tasks of this OOM invocation were not reported (see oomwatch_candidates_dropped_total)"
            );
        }
        let chosen = (rec.present & oom_field::CHOSEN != 0).then_some(rec.chosen_pid);
        let mut list: Vec<Candidate> = g
            .tasks
            .iter()
            .map(|t| candidate(t, self.page_size))
            .collect();
        candidates::rank(&mut list, chosen, self.top);
        Some((list, g.source))
    }
}

fn candidate(r: &CandidateRecord, page: u64) -> Candidate {
    let has = |bit: u32| r.present & bit != 0;
    Candidate {
        pid: r.pid,
        tgid: r.tgid,
        comm: if has(candidate_field::COMM) {
            comm_str(&r.comm)
        } else {
            String::new()
        },
        points: r.points,
        rss: has(candidate_field::RSS).then(|| r.rss_pages.saturating_mul(page)),
        swap: has(candidate_field::SWAP).then(|| r.swap_pages.saturating_mul(page)),
        pgtables: has(candidate_field::PGTABLES).then_some(r.pgtables_bytes),
        oom_score_adj: has(candidate_field::OOM_SCORE_ADJ).then_some(r.oom_score_adj),
        cgroup: None,
        namespace: None,
        pod: None,
    }
}

/// Takes each candidate's memory from the kernel's task dump of the same invocation where it
/// has the row: the kernel's own figures. The probe reads the mm counters as
/// `get_mm_counter()` does (6.2+: a per-CPU counter's shared part); newer kernels (Debian's 7.2)
/// score and dump with the per-CPU parts summed in (`get_mm_rss_sum()`), a few pages apart. The
/// points stay the probe's (the kernel's own return values). Also fills what the probe could not
/// read (a task without an mm).
pub fn fill_from(list: &mut [Candidate], dump: Option<&[Candidate]>) {
    let Some(dump) = dump else { return };
    for c in list {
        let Some(d) = dump.iter().find(|d| d.pid == c.pid) else {
            continue;
        };
        c.rss = d.rss.or(c.rss);
        c.swap = d.swap.or(c.swap);
        c.pgtables = d.pgtables.or(c.pgtables);
        c.oom_score_adj = c.oom_score_adj.or(d.oom_score_adj);
        if c.comm.is_empty() {
            c.comm.clone_from(&d.comm);
        }
    }
}

/// `oomwatch_candidates_dropped_total`, when an `oom_badness` row is attached.
pub fn drops_collector(
    counters: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    attached: bool,
) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || {
        if !attached {
            return Vec::new();
        }
        let c = counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut value = Counter::default();
        value.set_value(read_counter(&c, counter::CANDIDATE_DROPS) as f64);
        let mut m = Metric::default();
        m.set_counter(value);
        let mut fam = MetricFamily::default();
        fam.set_name("oomwatch_candidates_dropped_total".to_owned());
        fam.set_help(
            "Tasks the OOM killer scored that the oom_badness probe could not report (more \
             than 4096 in one invocation, or its ring buffer full): candidates may be missing."
                .to_owned(),
        );
        fam.set_field_type(MetricType::COUNTER);
        fam.set_metric(vec![m]);
        vec![fam]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(inv: u64, trigger: i32, seq: u32, pid: i32, points: i64) -> CandidateRecord {
        let mut r = CandidateRecord::zeroed();
        r.kind = RecordKind::CandidateFexit as u32;
        r.invocation_ktime_ns = inv;
        r.trigger_pid = trigger;
        r.seq = seq;
        r.pid = pid;
        r.tgid = pid;
        r.points = points;
        r.rss_pages = 10;
        r.oom_score_adj = -5;
        r.comm[..2].copy_from_slice(b"sh");
        r.present = candidate_field::PID
            | candidate_field::COMM
            | candidate_field::RSS
            | candidate_field::OOM_SCORE_ADJ;
        r
    }

    fn kill(inv: u64, trigger: i32, chosen: i32) -> OomKillRecord {
        let mut k = OomKillRecord::zeroed();
        k.kind = RecordKind::OomKill as u32;
        k.invocation_ktime_ns = inv;
        k.trigger_pid = trigger;
        k.chosen_pid = chosen;
        k.present = oom_field::INVOCATION | oom_field::CHOSEN;
        k
    }

    #[test]
    fn an_invocations_tasks_are_ranked_the_chosen_first() {
        let mut s = Scored::new(3);
        // Another invocation of the same task, and one of another task, are not mixed in.
        s.push(rec(50, 7, 0, 99, 1_000_000));
        s.push(rec(100, 8, 0, 98, 1_000_000));
        for (seq, (pid, points)) in [(10, 500), (11, 9000), (12, 9000), (13, -20), (14, 70)]
            .into_iter()
            .enumerate()
        {
            s.push(rec(100, 7, seq as u32, pid, points));
        }
        let (list, src) = s.for_invocation(&kill(100, 7, 12)).unwrap();
        assert_eq!(src, Source::CandidatesFexit);
        let order: Vec<(i32, i64)> = list.iter().map(|c| (c.pid, c.points)).collect();
        assert_eq!(order, [(12, 9000), (11, 9000), (10, 500)]);
        let c = &list[0];
        assert_eq!(
            (c.comm.as_str(), c.rss, c.swap, c.oom_score_adj),
            ("sh", Some(10 * s.page_size), None, Some(-5))
        );
        assert!(
            s.for_invocation(&kill(101, 7, 12)).is_none(),
            "no such invocation"
        );
        let mut no_key = kill(100, 7, 12);
        no_key.present = oom_field::CHOSEN;
        assert!(
            s.for_invocation(&no_key).is_none(),
            "no scope program attached"
        );
    }

    #[test]
    fn memory_is_bounded_and_the_chosen_survives_trimming() {
        let mut s = Scored::new(2);
        for seq in 0..4096u32 {
            // Equal points everywhere: the kernel chose the last scored.
            s.push(rec(1, 1, seq, 1000 + seq as i32, 42));
        }
        let g = &s.groups[0];
        assert!(g.tasks.len() < 2 * (2 + SLACK), "{}", g.tasks.len());
        let (list, _) = s.for_invocation(&kill(1, 1, 1000 + 4095)).unwrap();
        assert_eq!(list[0].pid, 1000 + 4095);
        assert_eq!(list.len(), 2);
        for inv in 0..(2 * KEPT as u64) {
            s.push(rec(10 + inv, 1, 0, 1, 1));
        }
        assert_eq!(s.groups.len(), KEPT);
        let mut none = Scored::new(0);
        none.push(rec(1, 1, 0, 1, 1));
        assert!(none.groups.is_empty());
    }

    /// The kill's record is read after the scored tasks of the aborted invocations that
    /// followed it (tasks allocating while the victim exits): its own group is still there.
    #[test]
    fn a_kill_read_after_many_aborted_invocations_finds_its_tasks() {
        let mut s = Scored::new(5);
        s.push(rec(1_000, 7, 0, 42, 900));
        for retry in 0..100u64 {
            s.push(rec(2_000 + retry, 8 + retry as i32 % 3, 0, 43, 5));
        }
        let (list, _) = s.for_invocation(&kill(1_000, 7, 42)).expect("its group");
        assert_eq!(list[0].pid, 42);
    }

    #[test]
    fn what_the_probe_lacks_comes_from_the_dump() {
        let mut r = rec(1, 1, 0, 5, 9);
        r.present = candidate_field::PID;
        let mut list = vec![candidate(&r, 4096)];
        let mut d = list[0].clone();
        d.comm = "java".into();
        d.rss = Some(4096);
        d.oom_score_adj = Some(0);
        fill_from(&mut list, Some(&[d]));
        assert_eq!(list[0].comm, "java");
        assert_eq!((list[0].rss, list[0].oom_score_adj), (Some(4096), Some(0)));
        assert_eq!(list[0].points, 9, "the probe's points stay");
        // Debian 7.2: the probe's reading lacks the per-CPU parts the dump summed in.
        let mut r = rec(1, 1, 0, 5, 9);
        r.rss_pages = 16_747;
        let mut list = vec![candidate(&r, 4096)];
        let mut d = list[0].clone();
        d.rss = Some(16_760 * 4096);
        fill_from(&mut list, Some(&[d]));
        assert_eq!(list[0].rss, Some(16_760 * 4096), "the kernel's own figure");
    }
}
