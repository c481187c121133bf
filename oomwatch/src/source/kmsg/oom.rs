//! A stateful parser for the kernel's OOM report, fed one kernel-log message at a time.
//!
//! A report (5.0+, `dump_header()` then `__oom_kill_process()`) reads, with unrelated lines
//! (stack trace, memory statistics) in between:
//!
//! ```text
//! tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0    → Invoked
//! Tasks state (memory values in pages):
//! [  pid  ]   uid  tgid total_vm      rss ... oom_score_adj name                    ┐
//! [  16296]     0 16296    17037    16735 ...           300 tail                    ┘ TaskDump
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,...,pid=16296,uid=0 → Constraint
//! Memory cgroup out of memory: Killed process 16296 (tail) total-vm:68148kB, ...    → Killed
//! oom_reaper: reaped process 16296 (tail), now anon-rss:0kB, file-rss:0kB, ...      → Reaped
//! ```
//!
//! The header (everything before `Killed`) is rate limited by the kernel (10 per 5 s): a
//! `Killed` line may come alone, after `oom_kill_process: N callbacks suppressed`.
use super::dump::{self, DumpState};
use super::lines;
use super::meminfo::{self, Block};
use super::record::KmsgRecord;
pub use super::report::{
    Constraint, ConstraintKind, DumpRow, Invoked, Killed, OomItem, Reaped, TaskDump,
};

/// The longest message the parser looks at (longer ones are ignored); also the bound on a line
/// being reassembled from fragments.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Counters kept by the parser.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Messages longer than [`MAX_LINE_BYTES`], ignored.
    pub oversized: u64,
    /// Incomplete report lines whose continuation never came.
    pub orphan_fragments: u64,
    /// Records not from the kernel (facility other than 0, i.e. written to `/dev/kmsg` by a
    /// process), ignored so that user space cannot forge an OOM report.
    pub not_kernel: u64,
}

/// How many unrelated records may come between the pieces of a fragmented line.
pub const MAX_FRAGMENT_GAP: usize = 32;

/// Lines the kernel builds from several `pr_cont()` pieces; if one arrives incomplete, later
/// fragment records are appended to it.
const FRAGMENTED_PREFIXES: &[&str] = &["oom-kill:constraint=", "Task in ", "Tasks in "];

/// The parser. Feed every kernel-log message in order with [`push_record`](Self::push_record)
/// or [`push_line`](Self::push_line); each returns the items completed by that message
/// (usually none, at most two).
#[derive(Debug, Default)]
pub struct OomReportParser {
    dump: Option<DumpState>,
    /// A memory statistics block being read (see [`super::meminfo`]).
    block: Option<Block>,
    /// Before 5.1 `Killed` lines have no prefix: whether the report in progress is a memcg OOM
    /// (from its `Selected`, `MemcgContext` or `GroupKill` line).
    memcg_report: bool,
    partial: Option<String>,
    /// Records seen since `partial` was stored.
    partial_age: usize,
    stats: ParserStats,
}

impl OomReportParser {
    /// A parser with no report in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Feeds one `/dev/kmsg` record. Records written by processes (facility other than
    /// `LOG_KERN`, which user space cannot use) are ignored. A fragment record (`cont`) is
    /// appended to the last incomplete report line if there is one (other CPUs' records may come
    /// in between, up to [`MAX_FRAGMENT_GAP`] of them); otherwise it is taken as a line of its own.
    pub fn push_record(&mut self, record: &KmsgRecord) -> Vec<OomItem> {
        if record.facility != 0 {
            self.stats.not_kernel += 1;
            return Vec::new();
        }
        if record.cont {
            if let Some(mut partial) = self.partial.take() {
                if partial.len() + record.message.len() > MAX_LINE_BYTES {
                    self.stats.oversized += 1;
                    return Vec::new();
                }
                partial.push_str(&record.message);
                return self.push_line(&partial);
            }
        } else if self.partial.is_some() {
            self.partial_age += 1;
            if self.partial_age > MAX_FRAGMENT_GAP {
                self.partial = None;
                self.stats.orphan_fragments += 1;
            }
        }
        self.push_line(&record.message)
    }

    /// Feeds one complete kernel message (no record metadata: the caller vouches that it came
    /// from the kernel).
    pub fn push_line(&mut self, line: &str) -> Vec<OomItem> {
        let mut out = Vec::new();
        if line.len() > MAX_LINE_BYTES {
            self.stats.oversized += 1;
            self.end_dump(&mut out);
            self.end_block(&mut out);
            return out;
        }
        // One record may hold several lines: cgroup v2's statistics are printed at once after
        // their header. (Elsewhere a newline is part of the text, e.g. in a task's comm.)
        if self.block.is_some() && line.contains('\n') {
            for part in line.split('\n').filter(|l| !l.is_empty()) {
                out.extend(self.push_line(part));
            }
            return out;
        }
        if let Some(block) = self.block.as_mut() {
            if block.push(line) {
                return out;
            }
            self.end_block(&mut out);
        }
        if let Some(state) = self.dump.as_mut() {
            if dump::looks_like_row(line) {
                state.push_row(line);
                return out;
            }
        }
        self.end_dump(&mut out);
        if let Some(item) = self.parse(line) {
            out.push(item);
        }
        out
    }

    /// Ends a task table still open (call when the log has gone quiet for a while, or at the
    /// end of input); the kernel always prints a non-row line right after the table.
    pub fn flush(&mut self) -> Option<OomItem> {
        let mut out = Vec::new();
        self.end_block(&mut out);
        self.end_dump(&mut out);
        out.pop()
    }

    fn end_block(&mut self, out: &mut Vec<OomItem>) {
        match self.block.take() {
            Some(Block::Memcg { cgroup, stats }) => out.push(OomItem::MemcgStats { cgroup, stats }),
            Some(Block::Global { pages }) => out.push(OomItem::GlobalMemInfo { pages }),
            None => {}
        }
    }

    fn end_dump(&mut self, out: &mut Vec<OomItem>) {
        if let Some(state) = self.dump.take() {
            out.push(OomItem::TaskDump(state.finish()));
        }
    }

    fn parse(&mut self, line: &str) -> Option<OomItem> {
        if line.starts_with('[') {
            self.dump = dump::parse_header(line);
            return None;
        }
        if let Some(c) = meminfo::parse_counter(line) {
            return Some(OomItem::Counter(c));
        }
        if let Some(cgroup) = meminfo::parse_stats_header(line) {
            self.block = Some(Block::Memcg {
                cgroup,
                stats: Vec::new(),
            });
            return None;
        }
        if line == "Mem-Info:" {
            self.block = Some(Block::Global { pages: Vec::new() });
            return None;
        }
        if let Some(i) = lines::parse_invoked(line) {
            self.memcg_report = false;
            return Some(OomItem::Invoked(i));
        }
        if let Some(c) = lines::parse_constraint(line) {
            return Some(OomItem::Constraint(c));
        }
        if let Some(k) = lines::parse_killed(line, self.memcg_report) {
            return Some(OomItem::Killed(k));
        }
        if let Some((memcg, pid, comm, score)) = lines::parse_selected(line) {
            self.memcg_report = memcg;
            return Some(OomItem::Selected {
                memcg,
                pid,
                comm,
                score,
            });
        }
        if let Some(r) = lines::parse_reaped(line) {
            return Some(OomItem::Reaped(r));
        }
        if let Some(memcg) = lines::parse_group_kill(line) {
            self.memcg_report = true;
            return Some(OomItem::GroupKill { memcg });
        }
        if let Some((memcg, pid, comm)) = lines::parse_victim_exiting(line) {
            return Some(OomItem::VictimExiting { memcg, pid, comm });
        }
        if let Some((task_memcg, oom_memcg)) = lines::parse_memcg_context(line) {
            self.memcg_report = true;
            return Some(OomItem::MemcgContext {
                task_memcg,
                oom_memcg,
            });
        }
        if let Some(callbacks) = lines::parse_suppressed(line) {
            return Some(OomItem::Suppressed { callbacks });
        }
        if let Some((comm, cpuset, mems_allowed)) = lines::parse_cpuset_context(line) {
            return Some(OomItem::CpusetContext {
                comm,
                cpuset,
                mems_allowed,
            });
        }
        if FRAGMENTED_PREFIXES.iter().any(|p| line.starts_with(p))
            || line.contains(" invoked oom-killer: ")
            || line.contains(" cpuset=")
        {
            // Possibly the first piece of a line split into fragment records.
            if self.partial.replace(line.to_string()).is_some() {
                self.stats.orphan_fragments += 1;
            }
            self.partial_age = 0;
        }
        None
    }
}
