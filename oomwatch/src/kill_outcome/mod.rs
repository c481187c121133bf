//! How each kill ended: kill→exit and kill→reaped times, OOM-reaper skips, victims stuck (not
//! exited after a bound: a common cause of OOM livelock), and kills by userspace OOM killers.
//!
//! The main event is never delayed for this (it is written as soon as the victim is known):
//! what happens after the kill goes into follow-up JSON lines with the same `pid` and `oom_id`:
//! - `{"type":"oom_kill_lifecycle", ...}` when the killed task exits (after the OOM reaper, if it
//!   was at work, finished);
//! - `{"type":"oom_kill_stuck", ...}` when it has not exited `--stuck-after-ms` after the kill.
//!
//! Inputs: the events written ([`Lifecycle::on_event`]) and the probe records the correlator
//! does not take ([`Lifecycle::push`]): exits of killed tasks, the reaper's steps, and SIGKILLs
//! of listed userspace killers (which become events themselves, `killer` set to their comm).
mod metrics;
mod records;
mod userspace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oomwatch_common::{lifecycle_field, LifecycleRecord, RecordKind};

use crate::record::{OomEvent, KILLER_KERNEL};
use crate::source::probe::ringbuf::Record;
use crate::sys::cgroup::IdResolver;

pub use metrics::{collector, near_oom_collector, Hist, Stats, BUCKETS};
pub use records::{LifecycleLine, Reaper, StuckLine};

/// Default bound after which a killed task that has not exited is reported stuck.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(10);
/// Most killed tasks followed at once; the oldest is dropped beyond (as the eBPF map does).
pub const MAX_TRACKED: usize = 4096;
/// How long records of a pid not (yet) known as a victim are kept: its event may still be
/// waiting in the correlator (at most its window plus the kernel-log wait).
const EARLY_KEEP: Duration = Duration::from_secs(5);
/// Most such records kept.
const MAX_EARLY: usize = 1024;

/// What [`Lifecycle`] produces.
#[derive(Debug)]
pub enum Output {
    /// A follow-up record (`oom_kill_lifecycle` or `oom_kill_stuck`), one JSON line.
    Line(String),
    /// A userspace OOM killer's kill, to be written like any event.
    Kill(Box<OomEvent>),
}

/// One killed task being followed.
#[derive(Clone, Debug)]
struct Tracked {
    /// The process followed: the victim's tgid (its pid when the tgid is unknown).
    key: i32,
    /// The victim task as the event names it.
    pid: i32,
    tgid: Option<i32>,
    comm: Option<String>,
    cgroup: Option<String>,
    oom_id: Option<u64>,
    killer: String,
    kill_ns: u64,
    /// Kernel timestamps of the reaper's steps.
    woken_ns: Option<u64>,
    start_ns: Option<u64>,
    reaped_ns: Option<u64>,
    skipped_ns: Option<u64>,
    exit_ns: Option<u64>,
    /// When to look at it next: the stuck check, or (after its exit) the last wait for the
    /// reaper to finish.
    deadline: Instant,
    stuck: bool,
    /// Order of registration, to drop the oldest beyond [`MAX_TRACKED`].
    seq: u64,
}

impl Tracked {
    fn reaper(&self) -> Reaper {
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
    fn reaping(&self) -> bool {
        matches!(self.reaper(), Reaper::Woken | Reaper::Started)
    }

    fn apply(&mut self, rec: &LifecycleRecord) {
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

/// Follows killed tasks to their exit; see the module documentation.
pub struct Lifecycle {
    host: String,
    proc_root: PathBuf,
    resolver: Option<IdResolver>,
    stuck_after: Duration,
    /// Whether exits are observed (the `sched_process_exit` probe is attached). Without it no
    /// `oom_kill_lifecycle` record is written; stuck victims are still found through `/proc`.
    exits: bool,
    tracked: HashMap<i32, Tracked>,
    early: Vec<(LifecycleRecord, Instant)>,
    next_seq: u64,
    stats: Arc<Mutex<Stats>>,
}

impl Lifecycle {
    pub fn new(host: String, stuck_after: Duration, exits: bool) -> Self {
        Self {
            host,
            proc_root: PathBuf::from("/proc"),
            resolver: None,
            stuck_after,
            exits,
            tracked: HashMap::new(),
            early: Vec::new(),
            next_seq: 0,
            stats: Arc::new(Mutex::new(Stats::default())),
        }
    }

    /// Reads `/proc` below this directory (`/host/proc` in a pod).
    pub fn with_proc_root(mut self, proc_root: PathBuf) -> Self {
        self.proc_root = proc_root;
        self
    }

    /// Names userspace kills' cgroups from the ids the kernel gave.
    pub fn with_resolver(mut self, resolver: Option<IdResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The counters and histograms, shared with the metrics collector.
    pub fn stats(&self) -> Arc<Mutex<Stats>> {
        Arc::clone(&self.stats)
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record the correlator does not take. Signal records become events; lifecycle records
    /// move a followed kill on.
    pub fn push(&mut self, rec: &Record, now: Instant) -> Vec<Output> {
        match rec {
            Record::Signal(s) => {
                let ev = userspace::event(s, &self.host, &self.proc_root, self.resolver.as_mut());
                match ev {
                    Some(ev) => {
                        self.stats_mut().userspace_kill(ev.killer.as_deref());
                        vec![Output::Kill(Box::new(ev))]
                    }
                    None => Vec::new(),
                }
            }
            Record::Lifecycle(l) => self.push_lifecycle(l, now).into_iter().collect(),
            Record::Victim(_) | Record::OomKill(_) => Vec::new(),
        }
    }

    fn push_lifecycle(&mut self, rec: &LifecycleRecord, now: Instant) -> Option<Output> {
        if RecordKind::from_u32(rec.kind) == Some(RecordKind::SkipReaping) {
            self.stats_mut().reaper_skips += 1;
        }
        if rec.present & lifecycle_field::PID == 0 {
            return None;
        }
        let key = match RecordKind::from_u32(rec.kind) {
            Some(RecordKind::VictimExit) => Some(rec.pid).filter(|k| self.tracked.contains_key(k)),
            // The reaper names the victim task.
            _ => self
                .tracked
                .values()
                .find(|t| t.pid == rec.pid)
                .map(|t| t.key),
        };
        let Some(t) = key.and_then(|k| self.tracked.get_mut(&k)) else {
            self.early
                .retain(|(_, at)| now.duration_since(*at) < EARLY_KEEP);
            if self.early.len() >= MAX_EARLY {
                self.early.remove(0);
            }
            self.early.push((*rec, now));
            return None;
        };
        t.apply(rec);
        let key = t.key;
        self.settle(key, now)
    }

    /// A written event: follows its victim (kernel kills not replayed, and userspace kills).
    pub fn on_event(&mut self, ev: &OomEvent, now: Instant) -> Vec<String> {
        if ev.replayed || ev.ktime_ns == 0 {
            return Vec::new();
        }
        if self.tracked.len() >= MAX_TRACKED {
            if let Some(oldest) = self.tracked.values().min_by_key(|t| t.seq).map(|t| t.key) {
                self.forget(oldest);
            }
        }
        let key = ev.tgid.unwrap_or(ev.pid);
        let mut t = Tracked {
            key,
            pid: ev.pid,
            tgid: ev.tgid,
            comm: ev.comm.clone(),
            cgroup: ev.cgroup.clone(),
            oom_id: ev.oom_id,
            killer: ev
                .killer
                .clone()
                .unwrap_or_else(|| KILLER_KERNEL.to_string()),
            kill_ns: ev.ktime_ns,
            woken_ns: None,
            start_ns: None,
            reaped_ns: None,
            skipped_ns: None,
            exit_ns: None,
            deadline: now + self.stuck_after,
            stuck: false,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        // Records that came before the event (it waited in the correlator): those of this
        // process (exit) or task (reaper) since the kill.
        let (mine, rest): (Vec<_>, Vec<_>) = self.early.drain(..).partition(|(r, _)| {
            let exit = RecordKind::from_u32(r.kind) == Some(RecordKind::VictimExit);
            let who = if exit { key } else { ev.pid };
            r.pid == who && r.ktime_ns >= ev.ktime_ns
        });
        self.early = rest;
        for (r, _) in &mine {
            t.apply(r);
        }
        if let Some(old) = self.tracked.insert(key, t) {
            // A new kill of the same process before the old one's exit (a group kill's second
            // victim thread, or pid reuse): keep the first kill time.
            if let Some(t) = self.tracked.get_mut(&key) {
                t.kill_ns = old.kill_ns.min(t.kill_ns);
                t.stuck = old.stuck;
            }
        }
        self.settle(key, now)
            .into_iter()
            .filter_map(|o| match o {
                Output::Line(l) => Some(l),
                Output::Kill(_) => None,
            })
            .collect()
    }

    /// Writes the lifecycle record of a task that exited, unless the reaper is still at work
    /// (then it waits for it, at most until the deadline).
    fn settle(&mut self, key: i32, now: Instant) -> Option<Output> {
        let t = self.tracked.get_mut(&key)?;
        t.exit_ns?;
        if t.reaping() {
            if !t.stuck {
                t.deadline = t.deadline.min(now + self.stuck_after);
            }
            return None;
        }
        let t = self.tracked.remove(&key)?;
        Some(Output::Line(self.finish(&t, true)))
    }

    fn finish(&mut self, t: &Tracked, exit_seen: bool) -> String {
        let line = LifecycleLine::of(t, &self.host, exit_seen);
        let mut stats = self.stats_mut();
        if t.stuck {
            stats.stuck_now = stats.stuck_now.saturating_sub(1);
        }
        stats.observe(&t.killer, line.kill_to_exit_ns, line.kill_to_reaped_ns);
        line.to_json()
    }

    fn drop_tracked(&mut self, t: &Tracked) {
        if t.stuck {
            let mut stats = self.stats_mut();
            stats.stuck_now = stats.stuck_now.saturating_sub(1);
        }
    }

    fn forget(&mut self, key: i32) {
        if let Some(t) = self.tracked.remove(&key) {
            self.drop_tracked(&t);
        }
    }

    /// The earliest time [`due`](Self::due) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracked.values().map(|t| t.deadline).min()
    }

    /// Stuck checks and expired waits for the reaper.
    pub fn due(&mut self, now: Instant) -> Vec<Output> {
        let due: Vec<i32> = self
            .tracked
            .values()
            .filter(|t| t.deadline <= now)
            .map(|t| t.key)
            .collect();
        let mut out = Vec::new();
        for pid in due {
            let Some(t) = self.tracked.get(&pid).cloned() else {
                continue;
            };
            if t.exit_ns.is_some() {
                // Exited; the reaper never finished in time: write what is known.
                self.tracked.remove(&pid);
                out.push(Output::Line(self.finish(&t, true)));
                continue;
            }
            let state = records::task_state(&self.proc_root, pid);
            match state {
                // Gone (or a zombie) without an exit record: the probe is missing or the
                // record was lost. Its exit time is unknown.
                None | Some(('Z' | 'X' | 'x', _)) => {
                    self.tracked.remove(&pid);
                    if self.exits {
                        out.push(Output::Line(self.finish(&t, false)));
                    } else {
                        self.drop_tracked(&t);
                    }
                }
                Some(state) => {
                    if let Some(t) = self.tracked.get_mut(&pid) {
                        t.deadline = now + self.stuck_after;
                        if !t.stuck {
                            t.stuck = true;
                            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                            stats.stuck_now += 1;
                            stats.stuck_total += 1;
                            drop(stats);
                            let line = StuckLine::of(t, &self.host, state, &self.proc_root);
                            out.push(Output::Line(line.to_json()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Killed tasks currently followed.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests;
