//! The OOM invocation's context from the kernel's own report in `/dev/kmsg`, for kernels where
//! no `oom_kill_process` probe may attach (lockdown, no kprobes, no BTF trampolines).
//!
//! One report is: "<comm> invoked oom-killer: gfp_mask=..., order=...", the task dump,
//! "oom-kill:constraint=...,oom_memcg=...,task_memcg=...,task=...,pid=..." and one
//! "Killed process <pid> ..." line per victim (several with `memory.oom.group=1`). The header is
//! rate-limited by the kernel (10 reports per 5 s, host-wide): a victim whose header was
//! suppressed gets what its "Killed process" line says and nothing more.
use std::collections::VecDeque;
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
    dump: Option<TaskDump>,
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

/// Turns kernel-log records into per-victim invocation contexts.
#[derive(Debug)]
pub struct KmsgContexts {
    parser: OomReportParser,
    header: Option<Header>,
    by_pid: VecDeque<(i32, Instant, u64, OomContext)>,
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
            .is_some_and(|(_, t, _, _)| now.duration_since(*t) > KEEP_FOR)
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
                    h.dump = Some(dump);
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
        let (id, mut ctx) = match self.header.as_mut() {
            // The first kill after a header, or a member of its group kill.
            Some(h) if !h.killed_seen || h.group => {
                h.killed_seen = true;
                let mut ctx = h.ctx.clone();
                ctx.domain_memory = domain_of(h, self.page_size);
                (h.id, ctx)
            }
            // Another kill without a header of its own: the kernel rate-limited that
            // report's header, so all that is known is this line.
            _ => {
                self.header = None;
                (self.new_id(), OomContext::default())
            }
        };
        ctx.message = Some(message);
        if self
            .by_pid
            .iter()
            .any(|(p, _, i, _)| *p == k.pid && *i == id)
        {
            return None; // the kernel prints a group's chosen task twice
        }
        if self.by_pid.len() == KEPT {
            self.by_pid.pop_front();
        }
        self.by_pid.push_back((k.pid, now, id, ctx));
        Some(k.pid)
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes the context of victim `pid`, if its "Killed process" line has been read.
    pub fn take(&mut self, pid: i32) -> Option<(u64, OomContext)> {
        let i = self.by_pid.iter().position(|(p, _, _, _)| *p == pid)?;
        self.by_pid.remove(i).map(|(_, _, id, ctx)| (id, ctx))
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
#[path = "kmsg_context_tests.rs"]
mod tests;
