//! The OOM invocation's context from the kernel's own report in `/dev/kmsg`, for kernels where
//! no `oom_kill_process` probe may attach (lockdown, no kprobes, no BTF trampolines).
//!
//! One report is: "<comm> invoked oom-killer: gfp_mask=..., order=...", the task dump,
//! "oom-kill:constraint=...,oom_memcg=...,task_memcg=...,task=...,pid=..." and one
//! "Killed process <pid> ..." line per victim (several with `memory.oom.group=1`). The header is
//! rate-limited by the kernel (10 reports per 5 s, host-wide): a victim whose header was
//! suppressed gets what its "Killed process" line says and nothing more.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::explain::candidates;
use crate::record::domain_memory::{self, DomainMemory};
use crate::record::{OomContext, Task};
use crate::source::gfp::names_from_log;
use crate::source::kmsg::oom::{
    Constraint, ConstraintKind, Invoked, Killed, OomItem, OomReportParser, TaskDump,
};
use crate::source::kmsg::record::KmsgRecord;

/// How long a victim's context is kept for its `mark_victim` event to claim.
const KEEP_FOR: Duration = Duration::from_secs(10);
/// Bound on contexts kept.
const KEPT: usize = 1024;

#[derive(Debug, Default)]
struct Header {
    id: u64,
    ctx: OomContext,
    dump: Option<Arc<TaskDump>>,
    /// A "Killed process" line has been seen for this header.
    killed_seen: bool,
    /// "Tasks in <memcg> are going to be killed due to memory.oom.group set" followed the first
    /// kill: the next "Killed process" lines are the same invocation's group members.
    group: bool,
    /// The memcg's page counters (name, usage kB, limit kB) and statistics, or the global
    /// `Mem-Info` pages, as the report printed them.
    counters: Vec<(String, u64, Option<u64>)>,
    stats: Option<(String, Vec<(String, u64)>)>,
    global: Option<Vec<(String, u64)>>,
}

/// One victim's context: pid, when its line was read, the invocation id, the context, the
/// invocation's dump when some of its tasks could not be scored (see [`KmsgContexts::take`]),
/// and the "Killed process" line itself (the victim's memory as the kernel reported it).
type Kept = (i32, Instant, u64, OomContext, Option<Arc<TaskDump>>, Killed);

/// Turns kernel-log records into per-victim invocation contexts.
#[derive(Debug)]
pub struct KmsgContexts {
    parser: OomReportParser,
    header: Option<Header>,
    by_pid: VecDeque<Kept>,
    next_id: u64,
    page_size: u64,
    /// The host's `MemTotal` and `SwapTotal` (bytes), for the domain size of the points.
    host_totals: (Option<u64>, Option<u64>),
    /// How many candidates each context keeps.
    top: usize,
}

impl Default for KmsgContexts {
    fn default() -> Self {
        Self::new()
    }
}

impl KmsgContexts {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            parser: OomReportParser::new(),
            header: None,
            by_pid: VecDeque::new(),
            next_id: 1,
            page_size: u64::try_from(page).unwrap_or(4096),
            host_totals: std::fs::read_to_string("/proc/meminfo")
                .map(|t| crate::explain::badness::host_totals(&t))
                .unwrap_or_default(),
            top: candidates::DEFAULT_TOP,
        }
    }

    /// Keeps at most `top` candidates per victim (0: none).
    pub fn with_candidates(mut self, top: usize) -> Self {
        self.top = top;
        self
    }

    /// Feeds one record; returns the pids whose context became available.
    pub fn push_record(&mut self, rec: &KmsgRecord, now: Instant) -> Vec<i32> {
        let items = self.parser.push_record(rec);
        let mut ready = Vec::new();
        for item in items {
            if let Some(pid) = self.push_item(item, now) {
                ready.push(pid);
            }
        }
        while self
            .by_pid
            .front()
            .is_some_and(|(_, t, ..)| now.duration_since(*t) > KEEP_FOR)
        {
            self.by_pid.pop_front();
        }
        ready
    }

    fn push_item(&mut self, item: OomItem, now: Instant) -> Option<i32> {
        match item {
            OomItem::Invoked(inv) => self.invoked(inv),
            OomItem::TaskDump(dump) => {
                if let Some(h) = self.header.as_mut() {
                    h.dump = Some(Arc::new(dump));
                }
            }
            OomItem::Constraint(c) => self.constraint(c),
            OomItem::Counter(c) => {
                if let Some(h) = self.header.as_mut() {
                    if h.counters.len() < 8 {
                        h.counters.push((c.name, c.usage_kb, c.limit_kb));
                    }
                }
            }
            OomItem::MemcgStats { cgroup, stats } => {
                if let Some(h) = self.header.as_mut() {
                    h.stats = Some((cgroup, stats));
                }
            }
            OomItem::GlobalMemInfo { pages } => {
                if let Some(h) = self.header.as_mut() {
                    h.global = Some(pages);
                }
            }
            OomItem::GroupKill { .. } => {
                if let Some(h) = self.header.as_mut() {
                    h.group = true;
                }
            }
            OomItem::Killed(k) => return self.killed(k, now),
            _ => {}
        }
        None
    }

    /// "<comm> invoked oom-killer: gfp_mask=..., order=...": a new report begins.
    fn invoked(&mut self, inv: Invoked) {
        let id = self.new_id();
        self.header = Some(Header {
            id,
            ctx: OomContext {
                gfp_mask: Some(format!("{:#x}", inv.gfp_mask)),
                gfp_flags: inv.gfp_flags.as_deref().map(names_from_log),
                order: Some(inv.order),
                ..OomContext::default()
            },
            ..Header::default()
        });
    }

    /// "oom-kill:constraint=...": the chosen task, its domain, and the points from the dump.
    fn constraint(&mut self, c: Constraint) {
        let page = self.page_size;
        let Some(h) = self.header.as_mut() else {
            return;
        };
        h.ctx.constraint = Some(constraint_name(&c.constraint));
        h.ctx.oom_memcg = c.oom_memcg;
        h.ctx.chosen_memcg = c.task_memcg.clone().map(|m| (c.pid, m));
        // The report names the victim's memcg (task_memcg), not the memcg of the
        // task that invoked the killer: the trigger's cgroup stays unknown here.
        let global = matches!(c.constraint, ConstraintKind::None);
        let total = domain_pages(h, global, self.host_totals, page);
        h.ctx.estimated_totalpages = total;
        h.ctx.badness = h.dump.as_ref().and_then(|d| {
            let row = d.rows.iter().find(|r| r.pid == c.pid)?;
            candidates::points(row, total, page)
        });
        if self.top > 0 {
            h.ctx.unscored = h
                .dump
                .as_ref()
                .map_or(0, |d| candidates::unscored(d, c.pid, total, page));
            h.ctx.candidates = h
                .dump
                .as_ref()
                .map(|d| candidates::from_dump(d, Some(c.pid), total, page, self.top));
        }
        h.ctx.chosen = Some(Task {
            pid: c.pid,
            tgid: c.pid,
            comm: c.comm,
        });
    }

    /// "Killed process <pid> ...": the victim's context is ready; returns its pid.
    fn killed(&mut self, k: Killed, now: Instant) -> Option<i32> {
        let message = k.reason.clone().unwrap_or_else(|| {
            if k.memcg {
                "Memory cgroup out of memory"
            } else {
                "Out of memory"
            }
            .into()
        });
        let (id, mut ctx, dump) = match self.header.as_mut() {
            // The first kill after a header, or a member of its group kill.
            Some(h) if !h.killed_seen || h.group => {
                h.killed_seen = true;
                let mut ctx = h.ctx.clone();
                ctx.domain_memory = domain_of(h, self.page_size);
                let dump = h.dump.clone().filter(|_| ctx.unscored > 0);
                (h.id, ctx, dump)
            }
            // Another kill without a header of its own: the kernel rate-limited that
            // report's header, so all that is known is this line.
            _ => {
                self.header = None;
                (self.new_id(), OomContext::default(), None)
            }
        };
        ctx.message = Some(message);
        if self
            .by_pid
            .iter()
            .any(|(p, _, i, ..)| *p == k.pid && *i == id)
        {
            return None; // the kernel prints a group's chosen task twice
        }
        if self.by_pid.len() == KEPT {
            self.by_pid.pop_front();
        }
        let pid = k.pid;
        self.by_pid.push_back((pid, now, id, ctx, dump, k));
        Some(pid)
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes the context of victim `pid`, if its "Killed process" line has been read.
    /// `totalpages`: the domain's size from a probe (`oom_kill_process`), which the report does
    /// not print for a cpuset or memory-policy OOM; with it, the dump's tasks with an
    /// `oom_score_adj` that could not be scored are scored after all.
    pub fn take(&mut self, pid: i32, totalpages: Option<u64>) -> Option<(u64, OomContext)> {
        self.take_with_line(pid, totalpages)
            .map(|(id, ctx, _)| (id, ctx))
    }

    /// [`Self::take`], with the victim's "Killed process" line.
    pub fn take_with_line(
        &mut self,
        pid: i32,
        totalpages: Option<u64>,
    ) -> Option<(u64, OomContext, Killed)> {
        let i = self.by_pid.iter().position(|(p, ..)| *p == pid)?;
        let (_, _, id, mut ctx, dump, line) = self.by_pid.remove(i)?;
        if let (Some(dump), Some(total), Some(chosen)) = (dump, totalpages, &ctx.chosen) {
            let page = self.page_size;
            ctx.candidates = Some(candidates::from_dump(
                &dump,
                Some(chosen.pid),
                Some(total),
                page,
                self.top,
            ));
            ctx.unscored = candidates::unscored(&dump, chosen.pid, Some(total), page);
        }
        Some((id, ctx, line))
    }
}

/// The domain's size in pages: the memcg limit (and swap) from the report's counters, or the
/// host's RAM and swap for a global OOM.
fn domain_pages(
    h: &Header,
    global: bool,
    (mem_total, swap_total): (Option<u64>, Option<u64>),
    page: u64,
) -> Option<u64> {
    let find = |n: &str| h.counters.iter().find(|(name, _, _)| name == n);
    let limit = find("memory").and_then(|(_, _, l)| *l);
    let swap = match (find("swap"), find("memory+swap")) {
        (Some((_, _, l)), _) => Some(*l),
        (None, Some((_, _, l))) => Some(l.zip(limit).map(|(m, l)| m.saturating_sub(l))),
        (None, None) => None,
    };
    crate::explain::badness::totalpages(limit, swap, global, mem_total, swap_total, page)
}

/// The domain's memory from the report's lines, if it printed them.
fn domain_of(h: &Header, page_size: u64) -> Option<DomainMemory> {
    if let Some(pages) = &h.global {
        return Some(domain_memory::from_report_meminfo(pages, page_size));
    }
    if h.counters.is_empty() && h.stats.is_none() {
        return None;
    }
    let (cgroup, stats) = match &h.stats {
        Some((c, s)) => (Some(c.as_str()), s.as_slice()),
        None => (h.ctx.oom_memcg.as_deref(), &[][..]),
    };
    Some(domain_memory::from_report(cgroup, &h.counters, stats))
}

fn constraint_name(c: &ConstraintKind) -> String {
    match c {
        ConstraintKind::None => "CONSTRAINT_NONE".into(),
        ConstraintKind::Cpuset => "CONSTRAINT_CPUSET".into(),
        ConstraintKind::MemoryPolicy => "CONSTRAINT_MEMORY_POLICY".into(),
        ConstraintKind::Memcg => "CONSTRAINT_MEMCG".into(),
        ConstraintKind::Other(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kmsg::record::parse_record;

    fn feed(ctxs: &mut KmsgContexts, fixture: &str) -> Vec<i32> {
        let now = Instant::now();
        let mut ready = Vec::new();
        for line in fixture
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let rec = parse_record(line.as_bytes()).unwrap();
            ready.extend(ctxs.push_record(&rec, now));
        }
        ready
    }

    #[test]
    fn real_report_from_this_host_gives_the_invocation_context() {
        let mut c = KmsgContexts::new();
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kmsg/oom-memcg-v6.18-host-tail.kmsg"
        ));
        let ready = feed(&mut c, text);
        assert_eq!(ready.len(), 1, "{ready:?}");
        let (id, ctx) = c.take(ready[0], None).unwrap();
        assert_eq!(id, 1);
        assert_eq!(ctx.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(ctx.gfp_mask.as_deref(), Some("0xcc0"));
        assert_eq!(ctx.order, Some(0));
        assert_eq!(ctx.oom_memcg.as_deref(), Some("/kmsgfix"));
        assert_eq!(
            ctx.trigger_cgroup, None,
            "the report names the victim's memcg, not the trigger's"
        );
        assert_eq!(ctx.chosen.as_ref().map(|t| t.pid), Some(ready[0]));
        assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
        assert!(ctx.badness.is_some_and(|p| p > 16_000), "{ctx:?}");
        assert!(c.take(ready[0], None).is_none(), "taken once");
    }

    #[test]
    fn group_kill_victims_share_the_invocation() {
        let mut c = KmsgContexts::new();
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kmsg/oom-memcg-group-v6.6.kmsg"
        ));
        let ready = feed(&mut c, text);
        assert!(ready.len() >= 2, "{ready:?}");
        let ids: Vec<u64> = ready.iter().map(|&p| c.take(p, None).unwrap().0).collect();
        assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
    }

    #[test]
    fn a_killed_line_without_its_header_gets_only_what_it_says() {
        let mut c = KmsgContexts::new();
        let line = "3,9,100,-;Memory cgroup out of memory: Killed process 77 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0";
        let ready = c.push_record(&parse_record(line.as_bytes()).unwrap(), Instant::now());
        assert_eq!(ready, vec![77]);
        let (_, ctx) = c.take(77, None).unwrap();
        assert_eq!(ctx.constraint, None);
        assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
    }

    #[test]
    fn kept_contexts_are_bounded() {
        let mut c = KmsgContexts::new();
        for pid in 0..(KEPT as i32 + 50) {
            let line = format!("3,{pid},100,-;Out of memory: Killed process {pid} (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0");
            c.push_record(&parse_record(line.as_bytes()).unwrap(), Instant::now());
        }
        assert_eq!(c.by_pid.len(), KEPT);
    }

    #[test]
    fn group_members_get_the_chosen_tasks_points() {
        let mut c = KmsgContexts::new();
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kmsg/oom-memcg-group-v6.6.kmsg"
        ));
        let ready = feed(&mut c, text);
        let ctxs: Vec<OomContext> = ready.iter().map(|&p| c.take(p, None).unwrap().1).collect();
        assert!(ctxs
            .iter()
            .all(|x| x.badness == ctxs[0].badness && x.chosen == ctxs[0].chosen));
        assert!(
            ctxs.iter().all(|x| x.trigger_cgroup.is_none()),
            "the report does not name it"
        );
    }

    #[test]
    fn a_second_kill_without_a_header_is_a_new_invocation_with_only_its_message() {
        let mut c = KmsgContexts::new();
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kmsg/oom-memcg-v6.18-host-tail.kmsg"
        ));
        let first = feed(&mut c, text)[0];
        // The next report's header was rate-limited: only its "Killed process" line arrives.
        let ready = c.push_record(
            &parse_record(killed(4242).as_bytes()).unwrap(),
            Instant::now(),
        );
        assert_eq!(ready, vec![4242]);
        let (id1, _) = c.take(first, None).unwrap();
        let (id2, ctx) = c.take(4242, None).unwrap();
        assert_ne!(id1, id2);
        assert_eq!(ctx.constraint, None);
        assert_eq!(ctx.chosen, None);
        assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
    }

    /// Debian 11's 5.10 in `vm-test`: a cpuset OOM (node 1) with three agents at -999 in the
    /// dump. The report lacks the cpuset's size: alone it scores only the chosen dd; with the
    /// `oom_kill_process` probe's totalpages (65504) the agents are candidates too.
    #[test]
    fn a_probes_totalpages_scores_the_tasks_the_dump_alone_cannot() {
        let lines = [
            "4,900,22815855,-;dd invoked oom-killer: gfp_mask=0x100dca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), order=0, oom_score_adj=0",
            "6,901,22816460,-;[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "6,902,22816484,-;[     83]     0    83     4288     2178    73728        0          -999 oomwatch",
            "6,903,22816491,-;[     84]     0    84     4289     2118    81920        0          -999 oomwatch",
            "6,904,22816497,-;[     85]     0    85     4035     1925    69632        0          -999 oomwatch",
            "6,905,22816504,-;[    235]     0   235    69685    54221   466944        0             0 dd",
            "6,906,22816512,-;oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=(null),cpuset=c,mems_allowed=1,global_oom,task_memcg=/c,task=dd,pid=235,uid=0",
            "3,907,22816863,-;Out of memory: Killed process 235 (dd) total-vm:278740kB, anon-rss:215300kB, file-rss:4kB, shmem-rss:1580kB, UID:0 pgtables:456kB oom_score_adj:0",
        ]
        .join("\n");
        let pids = |ctx: &OomContext| -> Vec<(i32, i64)> {
            let list = ctx.candidates.iter().flatten();
            list.map(|c| (c.pid, c.points)).collect()
        };
        let mut c = KmsgContexts::new();
        assert_eq!(feed(&mut c, &lines), [235]);
        let (_, alone) = c.take(235, None).unwrap();
        assert_eq!((pids(&alone), alone.unscored), (vec![(235, 54335)], 3));
        let mut c = KmsgContexts::new();
        feed(&mut c, &lines);
        let (_, scored) = c.take(235, Some(65_504)).unwrap();
        // 2178 + 0 + 73728/4096 - 999 * (65504/1000), as oom_badness() computes it.
        let agent = |rss: i64, pgt: i64| rss + pgt / 4096 - 999 * 65;
        let want = vec![
            (235, 54335),
            (83, agent(2178, 73728)),
            (84, agent(2118, 81920)),
            (85, agent(1925, 69632)),
        ];
        assert_eq!((pids(&scored), scored.unscored), (want, 0));
    }

    fn killed(pid: i32) -> String {
        format!("3,99999,100,-;Memory cgroup out of memory: Killed process {pid} (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0")
    }
}
