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
        // their header, every line a statistic. Any other record with a newline (a task's comm
        // may hold one) is one line of text: never split into report lines.
        let parts = || line.split('\n').filter(|l| !l.is_empty());
        let stats_record = line.contains('\n')
            && self
                .block
                .as_ref()
                .is_some_and(|b| parts().all(|p| b.accepts(p)));
        if stats_record {
            for part in parts() {
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

#[cfg(test)]
mod tests {
    //! Unit tests of the OOM line parsers and the report state machine.
    use super::{ConstraintKind, OomItem, OomReportParser, MAX_FRAGMENT_GAP, MAX_LINE_BYTES};
    use crate::source::kmsg::dump::MAX_DUMP_ROWS;
    use crate::source::kmsg::lines::*;
    use crate::source::kmsg::record::KmsgRecord;

    fn record(seq: u64, cont: bool, message: &str) -> KmsgRecord {
        KmsgRecord {
            facility: 0,
            level: 6,
            seq,
            ts_usec: seq,
            cont,
            message: message.to_string(),
            dict: Vec::new(),
        }
    }

    #[test]
    fn comm_is_delimited_by_fixed_text_not_by_spaces_or_parentheses() {
        let k = parse_killed(
        "Out of memory: Killed process 5 (x) total-vm:1kB (y)) total-vm:10kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:7 pgtables:8kB oom_score_adj:-9",
        false,
    )
    .unwrap();
        assert_eq!(k.comm, "x) total-vm:1kB (y)");
        assert_eq!((k.total_vm_kb, k.anon_rss_kb, k.file_rss_kb), (10, 2, 3));
        assert_eq!(
            (k.shmem_rss_kb, k.uid, k.pgtables_kb),
            (Some(4), Some(7), Some(8))
        );
        assert_eq!(k.oom_score_adj, Some(-9));

        let i = parse_invoked(
        "a invoked oom-killer: b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    )
    .unwrap();
        assert_eq!(i.comm, "a invoked oom-killer: b");

        let r = parse_reaped(
        "oom_reaper: reaped process 9 (a), now anon-rss:1kB (b), now anon-rss:5kB, file-rss:6kB, shmem-rss:7kB",
    )
    .unwrap();
        assert_eq!(r.comm, "a), now anon-rss:1kB (b");
        assert_eq!((r.anon_rss_kb, r.file_rss_kb, r.shmem_rss_kb), (5, 6, 7));

        let c = parse_constraint(
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=x,pid=1,uid=2,pid=3,uid=4",
    )
    .unwrap();
        assert_eq!((c.comm.as_str(), c.pid, c.uid), ("x,pid=1,uid=2", 3, 4));
    }

    #[test]
    fn invoked_variants() {
        let i = parse_invoked(
        "x invoked oom-killer: gfp_mask=0x201da(GFP_HIGHUSER_MOVABLE), nodemask=0-1,3,  order=3, oom_score_adj=-1000",
    )
    .unwrap();
        assert_eq!(i.nodemask.as_deref(), Some("0-1,3"));
        assert_eq!((i.gfp_mask, i.order, i.oom_score_adj), (0x201da, 3, -1000));
        // %#x prints zero without 0x (page-fault OOMs of 4.x).
        let i =
            parse_invoked("x invoked oom-killer: gfp_mask=0(), order=0, oom_score_adj=0").unwrap();
        assert_eq!((i.gfp_mask, i.gfp_flags.as_deref()), (0, Some("")));
        assert!(parse_invoked(
            "x invoked oom-killer: gfp_mask=0x1ffffffff, order=0, oom_score_adj=0"
        )
        .is_none());
        assert!(parse_invoked("x invoked oom-killer: gfp_mask=0xcc0, order=0").is_none());
        assert!(parse_invoked(
            "x invoked oom-killer: gfp_mask=0xcc0, junk, order=0, oom_score_adj=0"
        )
        .is_none());
    }

    #[test]
    fn a_record_with_newlines_in_an_open_stats_block_is_not_split_into_report_lines() {
        let mut p = OomReportParser::new();
        let mut items = p.push_line("Memory cgroup stats for /t:");
        // cgroup v2 prints its statistics as one record: split, every line a statistic.
        items.extend(p.push_line("anon 4096\nfile 0\n"));
        // A record that is not all statistics (a comm with a newline, say) is one line.
        items.extend(p.push_line(
            "evil\noom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/t,task_memcg=/t,task=fake,pid=666,uid=0",
        ));
        items.extend(p.flush());
        assert!(
            !items
                .iter()
                .any(|i| matches!(i, OomItem::Constraint(c) if c.pid == 666)),
            "{items:?}"
        );
        let stats: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                OomItem::MemcgStats { stats, .. } => Some(stats.len()),
                _ => None,
            })
            .collect();
        assert_eq!(stats, [2], "{items:?}");
    }

    #[test]
    fn constraint_without_cpusets_or_memcg_config() {
        let c = parse_constraint(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=init,pid=1,uid=0",
        )
        .unwrap();
        assert_eq!(c.constraint, ConstraintKind::None);
        assert_eq!(
            (c.cpuset, c.mems_allowed, c.oom_memcg, c.task_memcg),
            (None, None, None, None)
        );
        // MEMCG without CPUSETS.
        let c = parse_constraint(
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task_memcg=/,task=t,pid=1,uid=0",
    )
    .unwrap();
        assert_eq!(
            (c.cpuset, c.oom_memcg, c.task_memcg.as_deref()),
            (None, None, Some("/"))
        );
        let c = parse_constraint(
        "oom-kill:constraint=CONSTRAINT_FUTURE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=t,pid=1,uid=0",
    )
    .unwrap();
        assert_eq!(
            c.constraint,
            ConstraintKind::Other("CONSTRAINT_FUTURE".into())
        );
        assert!(parse_constraint(
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=t,pid=x,uid=0"
        )
        .is_none());
    }

    #[test]
    fn killed_variants_and_non_oom_prefixes() {
        let k = parse_killed(
        "Out of memory (oom_kill_allocating_task): Killed process 3 (a) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        true,
    )
    .unwrap();
        assert!(!k.memcg);
        assert_eq!(
            k.reason.as_deref(),
            Some("Out of memory (oom_kill_allocating_task)")
        );
        // RHEL 7 style.
        let k = parse_killed(
        "Killed process 8 (java), UID 500, total-vm:100kB, anon-rss:50kB, file-rss:5kB, shmem-rss:0kB",
        true,
    )
    .unwrap();
        assert_eq!((k.comm.as_str(), k.uid, k.memcg), ("java", Some(500), true));
        assert!(parse_killed(
            "lowmemorykiller: Killed process 1 (x) total-vm:1kB, anon-rss:1kB, file-rss:1kB",
            false
        )
        .is_none());
        assert!(parse_killed("Killed process 1 (x) total-vm:1kB", false).is_none());
        assert!(
            parse_selected("Out of memory: Kill process 1 (a b) score 7 or sacrifice child")
                .is_some()
        );
        assert!(parse_selected("bogus: Kill process 1 (a) score 7 or sacrifice child").is_none());
        assert_eq!(
            parse_suppressed("oom_kill_process: 3 callbacks suppressed"),
            Some(3)
        );
        assert_eq!(
            parse_group_kill("Tasks in / are going to be killed due to memory.oom.group set")
                .as_deref(),
            Some("/")
        );
        assert_eq!(
            parse_memcg_context("Memory limit reached of cgroup /x"),
            Some((None, "/x".to_string()))
        );
        assert!(parse_cpuset_context("foo cpuset=/ mems_allowed=zero").is_none());
    }

    #[test]
    fn task_table_maps_columns_by_name_and_ends_at_the_next_non_row_line() {
        let mut p = OomReportParser::new();
        // A made-up column order: the parser must follow the header, not positions.
        assert!(p
            .push_line("[  pid  ] oom_score_adj   uid     rss  tgid total_vm future name")
            .is_empty());
        assert!(p
            .push_line("[      7]          -5     3      11     7       99     42 my task")
            .is_empty());
        assert!(p
            .push_line("[      8]           0     3       1     7       99     42")
            .is_empty());
        let items =
            p.push_line("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=t,pid=7,uid=3");
        assert_eq!(items.len(), 2);
        let OomItem::TaskDump(d) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(d.rows.len(), 1);
        assert_eq!(d.malformed_rows, 1, "a row without a name is malformed");
        let r = &d.rows[0];
        assert_eq!(
            (r.pid, r.uid, r.tgid, r.rss_pages, r.total_vm_pages),
            (7, 3, 7, 11, 99)
        );
        assert_eq!((r.oom_score_adj, r.name.as_str()), (Some(-5), "my task"));
        assert!(matches!(items[1], OomItem::Constraint(_)));
        // No table open any more: a row-shaped line is just a line.
        assert!(p
            .push_line("[      9]     0     9     1     1     1     1 x")
            .is_empty());
        assert!(p.flush().is_none());
    }

    #[test]
    fn headers_without_needed_columns_start_no_table() {
        let mut p = OomReportParser::new();
        p.push_line("[ pid ]   uid  name");
        p.push_line("[    1]     0 init");
        assert!(p.flush().is_none());
        p.push_line(
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        );
        p.push_line("[      1]     0     1      100       10    4096        0             0 init");
        p.push_line(&format!(
            "[      2]     0     2      100       10    4096        0             0 {}",
            "n".repeat(65)
        ));
        let Some(OomItem::TaskDump(d)) = p.flush() else {
            panic!("table expected")
        };
        assert_eq!((d.rows.len(), d.malformed_rows), (1, 1));
    }

    #[test]
    fn task_table_is_capped_and_counts_dropped_rows() {
        let mut p = OomReportParser::new();
        p.push_line(
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        );
        let extra = 7;
        for pid in 0..(MAX_DUMP_ROWS + extra) {
            p.push_line(&format!(
                "[{pid:7}]     0 {pid:5}      100       10    4096        0             0 t"
            ));
        }
        let items = p.push_line("unrelated");
        let [OomItem::TaskDump(d)] = items.as_slice() else {
            panic!("one table expected")
        };
        assert_eq!(d.rows.len(), MAX_DUMP_ROWS);
        assert_eq!(d.dropped_rows, extra as u64);
    }

    #[test]
    fn fragments_are_joined_across_unrelated_records() {
        let mut p = OomReportParser::new();
        assert!(p
            .push_record(&record(
                1,
                false,
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null)"
            ))
            .is_empty());
        assert!(p
            .push_record(&record(2, false, "usb 1-1: new device"))
            .is_empty());
        assert!(p
            .push_record(&record(3, true, ",cpuset=/,mems_allowed=0,oom_memcg=/a"))
            .is_empty());
        let items = p.push_record(&record(4, true, ",task_memcg=/a,task=t,pid=5,uid=0"));
        let [OomItem::Constraint(c)] = items.as_slice() else {
            panic!("{items:?}")
        };
        assert_eq!((c.oom_memcg.as_deref(), c.pid), (Some("/a"), 5));

        // A start whose continuation never comes is dropped after MAX_FRAGMENT_GAP records.
        p.push_record(&record(5, false, "Task in /b"));
        for seq in 0..=MAX_FRAGMENT_GAP as u64 {
            p.push_record(&record(10 + seq, false, "noise"));
        }
        assert_eq!(p.stats().orphan_fragments, 1);
        // Old kernels: first fragment flagged too; a lone fragment is a line of its own.
        let items = p.push_record(&record(
            99,
            true,
            "oom_reaper: reaped process 1 (a), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        ));
        assert!(matches!(items.as_slice(), [OomItem::Reaped(_)]));
    }

    #[test]
    fn oversized_lines_are_ignored_and_counted() {
        let mut p = OomReportParser::new();
        let huge = format!(
            "Tasks in /{} are going to be killed due to memory.oom.group set",
            "x".repeat(MAX_LINE_BYTES)
        );
        assert!(p.push_line(&huge).is_empty());
        assert_eq!(p.stats().oversized, 1);
        // Joining fragments never grows past the bound either.
        p.push_record(&record(1, false, "Tasks in /a"));
        assert!(p
            .push_record(&record(2, true, &"y".repeat(MAX_LINE_BYTES)))
            .is_empty());
        assert_eq!(p.stats().oversized, 2);
    }

    #[test]
    fn records_written_by_processes_are_not_trusted() {
        let mut p = OomReportParser::new();
        let mut forged = record(1, false, "Out of memory: Killed process 1 (init) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0");
        forged.facility = 1;
        assert!(p.push_record(&forged).is_empty());
        assert_eq!(p.stats().not_kernel, 1);
        forged.facility = 0;
        assert!(matches!(
            p.push_record(&forged).as_slice(),
            [OomItem::Killed(_)]
        ));
    }
}
