//! Where the agent's finished records go ([`Sink`]): enriched, written as JSON, counted, kept
//! for the page, and the kernel-log position saved.
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::RunError;
use crate::enrich::stack::StackSymbolizer;
use crate::enrich::Enricher;
use crate::host::HostCollectors;
use crate::kill_outcome::sigkill::Sigkills;
use crate::kill_outcome::{self, Lifecycle};
use crate::record::{OomEvent, KILLER_KERNEL};
use crate::recovery::Recovery;
use crate::sink::json::JsonLines;
use crate::sink::metrics::Metrics;
use crate::sink::recent::RecentEvents;
use crate::sys::cgroup::MemoryHierarchy;
use crate::sys::clock::monotonic_ns;
use oomwatch_common::SigkillRecord;

/// Where finished records go: enriched, written as JSON, counted; the victim's memory cgroup
/// is watched for its `memory.events`.
pub(super) struct Sink {
    pub(super) out: JsonLines,
    pub(super) metrics: Arc<Metrics>,
    pub(super) recent: Arc<RecentEvents>,
    pub(super) enricher: Enricher,
    pub(super) host: Arc<HostCollectors>,
    pub(super) hierarchy: Option<MemoryHierarchy>,
    pub(super) recovery: Option<Recovery>,
    pub(super) lifecycle: Lifecycle,
    /// The triggers' stacks, symbolized as they arrive, for the events of their invocation.
    pub(super) stacks: StackSymbolizer,
    /// Who sent each SIGKILL (`sigkill`, `container_killed` lines).
    pub(super) sigkills: Sigkills,
}

impl Sink {
    pub(super) fn emit(&mut self, evs: Vec<OomEvent>) -> Result<(), RunError> {
        if evs.is_empty() {
            return Ok(());
        }
        for mut ev in evs {
            let t0 = Instant::now();
            self.stacks.attach(&mut ev);
            self.enricher.enrich(&mut ev);
            // Userspace killers' kills are counted by the lifecycle tracker, not as OOM kills.
            let kernel = ev.killer.as_deref() == Some(KILLER_KERNEL);
            // The kill no longer waits for a live record; the position counts it as recorded
            // once stdout has taken its line: saved by the writer right after that line.
            let recovery = self.recovery.as_mut().filter(|_| kernel);
            let after = recovery.and_then(|r| {
                r.recorded(ev.pid);
                r.commit_once_written()
            });
            let line = self.out.write_then(&ev, after);
            if let Some(r) = self.recovery.as_mut().filter(|_| kernel) {
                r.queued(ev.pid, line.as_ref().ok().copied().flatten());
            }
            line.map_err(RunError::Stdout)?;
            // Kill → record latency: the kernel's timestamp to the line written.
            let latency_us = monotonic_ns().saturating_sub(ev.ktime_ns) / 1000;
            if kernel {
                self.metrics.observe(&ev);
            }
            self.recent.push(&ev);
            let emit_us = t0.elapsed().as_micros() as u64;
            tracing::debug!(pid = ev.pid, latency_us, emit_us, "event written");
            if let (Some(h), Some(cg)) = (&self.hierarchy, &ev.cgroup) {
                self.host.watch_memcg(h.dir(cg), cg.clone());
            }
            for line in self.lifecycle.on_event(&ev, Instant::now()) {
                self.out.write_line(&line).map_err(RunError::Stdout)?;
            }
            let lines = self.sigkills.on_event(&ev);
            self.write_lines(lines)?;
        }
        self.save_position();
        Ok(())
    }

    /// Writes the lifecycle tracker's follow-up records and userspace kills.
    pub(super) fn emit_lifecycle(
        &mut self,
        outs: Vec<kill_outcome::Output>,
    ) -> Result<(), RunError> {
        for out in outs {
            match out {
                kill_outcome::Output::Line(l) => {
                    self.out.write_line(&l).map_err(RunError::Stdout)?
                }
                kill_outcome::Output::Kill(ev) => self.emit(vec![*ev])?,
            }
        }
        Ok(())
    }

    /// Records of the `SIGKILLS` ring.
    pub(super) fn push_sigkills(&mut self, recs: Vec<SigkillRecord>) -> Result<(), RunError> {
        let now = Instant::now();
        for r in recs {
            let lines = self.sigkills.push(&r, now, &mut self.enricher);
            self.write_lines(lines)?;
        }
        Ok(())
    }

    pub(super) fn write_lines(&mut self, lines: Vec<String>) -> Result<(), RunError> {
        for l in lines {
            self.out.write_line(&l).map_err(RunError::Stdout)?;
        }
        Ok(())
    }

    /// Counts as recorded the kills whose lines stdout has taken, and saves the kernel-log
    /// position when no kill's line is queued any more: never waits for the writer (the event
    /// loop calls it again as each line goes out). While lines are queued the writer saves,
    /// right after each, the position prepared with it (`Recovery::commit_once_written`). A
    /// kill whose line still waits in the queue (stdout slow or stalled) is not counted, so a
    /// `kill -9` now makes the next start replay it, and only it (CI's `tests/kill_cycles.rs`
    /// and `tests/resilience.rs` each lost kills to a position that counted queued lines).
    pub(super) fn save_position(&mut self) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        r.written_through(self.out.written());
        r.save();
    }

    /// Whether kills' lines wait for stdout (the position follows each line it takes).
    pub(super) fn waits_for_stdout(&self) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(Recovery::waits_for_stdout)
    }

    /// [`Self::save_position`] when lines of kills were waiting for stdout.
    pub(super) fn follow_stdout(&mut self) {
        if self.waits_for_stdout() {
            self.save_position();
        }
    }

    pub(super) fn recovery_deadline(&self) -> Option<Instant> {
        self.recovery.as_ref().and_then(|r| r.next_deadline())
    }
}

/// How often a victim waiting for its kernel-log report looks for it.
pub(super) const KMSG_POLL: Duration = Duration::from_millis(1);
