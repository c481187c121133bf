//! One killed task being followed, and how far the OOM reaper got with it.
use std::time::Instant;

use oomwatch_common::{LifecycleRecord, RecordKind};
use serde::Serialize;

/// How far the OOM reaper got with a victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reaper {
    /// Never woken for it: it exited (and freed its memory) before the reaper's delay, or it
    /// was not a kernel OOM kill.
    None,
    /// `oom:wake_reaper` only.
    Woken,
    /// `oom:start_task_reaping`, not finished.
    Started,
    /// `oom:finish_task_reaping`: its memory was reaped.
    Reaped,
    /// `oom:skip_task_reaping`: the reaper gave up (e.g. could not take the mmap lock).
    Skipped,
}

/// One killed task being followed.
#[derive(Clone, Debug)]
pub(super) struct Tracked {
    /// The process followed: the victim's tgid (its pid when the tgid is unknown).
    pub(super) key: i32,
    /// The victim task as the event names it.
    pub(super) pid: i32,
    pub(super) tgid: Option<i32>,
    pub(super) comm: Option<String>,
    pub(super) cgroup: Option<String>,
    pub(super) oom_id: Option<u64>,
    pub(super) killer: String,
    pub(super) kill_ns: u64,
    /// Kernel timestamps of the reaper's steps.
    pub(super) woken_ns: Option<u64>,
    pub(super) start_ns: Option<u64>,
    pub(super) reaped_ns: Option<u64>,
    pub(super) skipped_ns: Option<u64>,
    pub(super) exit_ns: Option<u64>,
    /// When to look at it next: the stuck check, or (after its exit) the last wait for the
    /// reaper to finish.
    pub(super) deadline: Instant,
    pub(super) stuck: bool,
    /// Order of registration, to drop the oldest beyond [`super::MAX_TRACKED`].
    pub(super) seq: u64,
}

impl Tracked {
    pub(super) fn reaper(&self) -> Reaper {
        match (
            self.reaped_ns,
            self.skipped_ns,
            self.start_ns,
            self.woken_ns,
        ) {
            (Some(_), _, _, _) => Reaper::Reaped,
            (_, Some(_), _, _) => Reaper::Skipped,
            (_, _, Some(_), _) => Reaper::Started,
            (_, _, _, Some(_)) => Reaper::Woken,
            _ => Reaper::None,
        }
    }

    /// The reaper was woken for it and has not finished: its exit record waits (bounded).
    pub(super) fn reaping(&self) -> bool {
        matches!(self.reaper(), Reaper::Woken | Reaper::Started)
    }

    pub(super) fn apply(&mut self, rec: &LifecycleRecord) {
        let t = Some(rec.ktime_ns);
        match RecordKind::from_u32(rec.kind) {
            Some(RecordKind::VictimExit) => self.exit_ns = t,
            Some(RecordKind::WakeReaper) => self.woken_ns = self.woken_ns.or(t),
            Some(RecordKind::StartReaping) => self.start_ns = self.start_ns.or(t),
            Some(RecordKind::FinishReaping) => self.reaped_ns = self.reaped_ns.or(t),
            Some(RecordKind::SkipReaping) => self.skipped_ns = self.skipped_ns.or(t),
            _ => {}
        }
    }
}
