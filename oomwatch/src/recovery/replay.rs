//! OOM kills rebuilt from the kernel log alone: for `oomwatch history` and for the kills that
//! happened while the agent was not running (replayed at start-up, see [`crate::recovery::position`]).
//!
//! Each "Killed process" line gives one [`OomEvent`] in the live schema, `replayed: true`, every
//! field group sourced from `kmsg:oom_report`: the victim's memory from its line, the
//! invocation's context (constraint, gfp, order, oom_memcg, badness, chosen, group) from the
//! report around it, and the victim's cgroup from the `oom-kill:` summary when the summary
//! names this victim (`task_memcg`; for other members of a group kill it is unknown). The
//! report names the trigger only by comm, so `trigger` is `null`.
use std::time::{Duration, Instant, SystemTime};

use crate::correlate::kmsg_context::KmsgContexts;
use crate::record::{OomEvent, Source};
use crate::source::kmsg::oom::{Killed, OomItem, OomReportParser};
use crate::source::kmsg::record::KmsgRecord;
use crate::sys::clock::wall_clock_of;

/// One kill found in the kernel log, with the sequence number of its "Killed process" record.
#[derive(Clone, Debug)]
pub struct LoggedKill {
    pub seq: u64,
    pub event: OomEvent,
}

/// Turns kernel-log records, in order, into [`LoggedKill`]s.
#[derive(Debug)]
pub struct LogKills {
    host: String,
    contexts: KmsgContexts,
    parser: OomReportParser,
    /// The last `oom-kill:` summary: (victim pid, task_memcg).
    summary: Option<(i32, Option<String>)>,
    /// Instants for [`KmsgContexts`] (only their order matters here).
    base: Instant,
}

impl LogKills {
    pub fn new(host: String) -> Self {
        Self {
            host,
            contexts: KmsgContexts::new(),
            parser: OomReportParser::new(),
            summary: None,
            base: Instant::now(),
        }
    }

    /// Feeds one record; returns the kills it completed (usually none, at most a few).
    pub fn push(&mut self, rec: &KmsgRecord) -> Vec<LoggedKill> {
        // Both see every record: the contexts for the invocation, the parser for the lines.
        let now = self.base + Duration::from_micros(rec.ts_usec);
        self.contexts.push_record(rec, now);
        let mut out = Vec::new();
        for item in self.parser.push_record(rec) {
            match item {
                OomItem::Invoked(_) => self.summary = None,
                OomItem::Constraint(c) => self.summary = Some((c.pid, c.task_memcg)),
                OomItem::Killed(k) => {
                    let ev = self.event(rec, &k);
                    out.push(LoggedKill {
                        seq: rec.seq,
                        event: ev,
                    });
                }
                _ => {}
            }
        }
        out
    }

    fn event(&mut self, rec: &KmsgRecord, k: &Killed) -> OomEvent {
        let ktime_ns = rec.ts_usec.saturating_mul(1000);
        let mut ev = OomEvent::new(k.pid, ktime_ns, time_of(ktime_ns), self.host.clone());
        ev.replayed = true;
        ev.comm = Some(k.comm.clone());
        ev.uid = k.uid;
        ev.total_vm = Some(k.total_vm_kb.saturating_mul(1024));
        ev.anon_rss = Some(k.anon_rss_kb.saturating_mul(1024));
        ev.file_rss = Some(k.file_rss_kb.saturating_mul(1024));
        ev.shmem_rss = k.shmem_rss_kb.map(|v| v.saturating_mul(1024));
        ev.pgtables = k.pgtables_kb.map(|v| v.saturating_mul(1024));
        ev.oom_score_adj = k.oom_score_adj;
        for group in ["pid", "comm", "memory"] {
            ev.sources.insert(group, Source::Kmsg);
        }
        if k.uid.is_some() {
            ev.sources.insert("uid", Source::Kmsg);
        }
        if k.pgtables_kb.is_some() {
            ev.sources.insert("pgtables", Source::Kmsg);
        }
        if k.oom_score_adj.is_some() {
            ev.sources.insert("oom_score_adj", Source::Kmsg);
        }
        if let Some((pid, memcg)) = &self.summary {
            if *pid == k.pid {
                ev.cgroup = memcg.clone();
                ev.sources.insert("cgroup", Source::Kmsg);
            }
        }
        if let Some((id, mut ctx)) = self.contexts.take(k.pid, None) {
            ev.oom_id = Some(id);
            ev.allocating_task_kill = ctx.settle_allocating_task_kill();
            ev.domain_memory = ctx.domain_memory.take();
            ev.oom = ctx;
            // Killed without being the chosen task: a member of a memory.oom.group kill.
            // The log names the killed thread, and the chosen process by the pid the kernel
            // chose (the leader): the task dump row of the thread links the two.
            ev.oom.group_kill = ev.oom.chosen.as_ref().map(|c| {
                c.pid != k.pid
                    && !crate::correlate::victim_row_of(ev.oom.candidates.as_deref(), k.pid, c.pid)
            });
            ev.sources.insert("oom", Source::Kmsg);
        }
        // The kernel log names neither the tgid nor the cgroup id: both stay null.
        ev.sync_victim();
        ev
    }
}

/// Wall-clock time of a kernel-log timestamp (µs since boot, the same clock family as
/// CLOCK_MONOTONIC; suspend time is not counted by either).
fn time_of(ktime_ns: u64) -> SystemTime {
    wall_clock_of(ktime_ns)
}

#[cfg(test)]
mod tests {
    //! Kills rebuilt from real kernel-log fixtures.
    use super::*;
    use crate::source::kmsg::tests::load;

    fn kills(name: &str) -> Vec<LoggedKill> {
        let mut b = LogKills::new("node-1".into());
        load(name).iter().flat_map(|r| b.push(r)).collect()
    }

    #[test]
    fn a_memcg_kill_carries_the_reports_context_and_cgroup() {
        let k = kills("oom-memcg-v6.1.kmsg");
        assert_eq!(k.len(), 1);
        let ev = &k[0].event;
        assert!(ev.replayed);
        assert_eq!(ev.oom.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert!(ev.oom.gfp_mask.is_some() && ev.oom.order.is_some());
        assert!(ev.cgroup.is_some(), "task_memcg of the summary");
        assert_eq!(ev.cgroup, ev.victim.cgroup);
        assert!(ev.anon_rss.is_some_and(|b| b % 1024 == 0));
        assert_eq!(ev.sources.get("oom"), Some(&Source::Kmsg));
        assert_eq!(ev.sources.get("memory"), Some(&Source::Kmsg));
        assert!(ev.trigger.is_none(), "the report names no trigger pid");
        assert!(ev.oom_id.is_some());
    }

    #[test]
    fn a_group_kill_gives_one_event_per_member_sharing_the_invocation() {
        let k = kills("oom-memcg-group-v6.6.kmsg");
        assert_eq!(k.len(), 2);
        let (a, b) = (&k[0].event, &k[1].event);
        assert_eq!((a.pid, b.pid), (483880, 483881));
        assert_eq!(a.oom_id, b.oom_id);
        assert_eq!(a.cgroup.as_deref(), Some("/app.slice/job, with, commas"));
        // Only the summary's victim has a known cgroup.
        assert_eq!(b.cgroup, None);
        assert_eq!(b.oom.group_kill, Some(true));
        assert_eq!(a.oom_score_adj, Some(200));
        assert_eq!(b.pgtables, Some(48 * 1024));
        assert!(k[0].seq < k[1].seq);
    }

    #[test]
    fn every_fixture_kill_line_gives_exactly_one_event() {
        let dir: std::path::PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/kmsg"]
            .iter()
            .collect();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let lines = text
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains("Killed process"))
                .count();
            let k = kills(&name);
            assert_eq!(k.len(), lines, "{name}");
            for lk in &k {
                assert!(lk.event.replayed && lk.event.comm.is_some(), "{name}");
                assert_eq!(lk.event.victim.pid, lk.event.pid);
            }
        }
    }

    #[test]
    fn the_reports_memory_lines_give_the_domain_at_the_kill() {
        // cgroup v1: page counters in kB, then `Memory cgroup stats` (total_* are hierarchical).
        let k = kills("oom-memcg-v6.18-host-tail.kmsg");
        let d = k[0].event.domain_memory.as_ref().expect("domain_memory");
        assert_eq!(d.source, "kmsg:oom_report");
        assert_eq!(d.cgroup.as_deref(), Some("/kmsgfix"));
        assert_eq!((d.limit, d.usage), (Some(64 << 20), Some(64 << 20)));
        assert_eq!(d.kernel, Some(192 * 1024));
        assert_eq!(d.swap_limit, None, "memory+swap unlimited");
        assert_eq!(d.anon, d.stat.get("total_rss").copied());
        assert!(d.anon.unwrap() > 60 << 20, "{d:?}");
        assert!(d.stat.keys().all(|k| k.starts_with("total_")));
        // A global OOM: Mem-Info pages.
        let g = kills("oom-global-v6.12.kmsg");
        let d = g[0].event.domain_memory.as_ref().expect("domain_memory");
        assert_eq!(d.cgroup, None);
        assert!(d.anon.is_some() && d.limit.is_none());
    }

    #[test]
    fn v2_statistics_printed_as_one_record_are_split_into_lines() {
        let mut p = crate::source::kmsg::oom::OomReportParser::new();
        assert!(p.push_line("Memory cgroup stats for /t:").is_empty());
        assert!(p
            .push_line("anon 66846720\nfile 4096\nkernel 196608\nshmem 0\npgfault 12\n")
            .is_empty());
        let items = p.push_line("Tasks state (memory values in pages):");
        let crate::source::kmsg::oom::OomItem::MemcgStats { cgroup, stats } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(cgroup, "/t");
        assert_eq!(stats.len(), 5);
        let d = crate::record::domain_memory::from_report(Some("/t"), &[], stats);
        assert_eq!(
            (d.anon, d.file, d.kernel),
            (Some(66846720), Some(4096), Some(196608))
        );
        assert!(!d.stat.contains_key("pgfault"));
    }
}
