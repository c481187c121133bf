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
use crate::record::{OomEvent, Source, Victim};
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
        if let Some((id, mut ctx)) = self.contexts.take(k.pid) {
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
        ev.victim = Victim {
            pid: ev.pid,
            tgid: None,
            comm: ev.comm.clone(),
            cgroup: ev.cgroup.clone(),
            ..Victim::default()
        };
        ev
    }
}

/// Wall-clock time of a kernel-log timestamp (µs since boot, the same clock family as
/// CLOCK_MONOTONIC; suspend time is not counted by either).
fn time_of(ktime_ns: u64) -> SystemTime {
    wall_clock_of(ktime_ns)
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
