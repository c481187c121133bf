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
//! of listed userspace killers (which become events themselves, `killer` set to their comm)
//! when [`sender`] finds the sender is that killer's privileged executable, within its rate.
mod metrics;
mod records;
pub mod sender;
pub mod sigkill;
mod tracked;
mod userspace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oomwatch_common::{lifecycle_field, LifecycleRecord, RecordKind};

use crate::record::{OomEvent, ProbeId, KILLER_KERNEL};
use crate::source::probe::ringbuf::Record;
use crate::source::probe::silence::Silence;
use crate::sys::cgroup::IdResolver;

pub use metrics::{collector, near_oom_collector, Hist, Stats, BUCKETS};
pub use records::{LifecycleLine, StuckLine};
pub use tracked::Reaper;
use tracked::Tracked;

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
    /// Where a victim gone without its exit record makes the exit row silent.
    silence: Silence,
    senders: sender::Senders,
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
            silence: Silence::new(),
            senders: sender::Senders::default(),
        }
    }

    /// A victim gone from `/proc` without an exit record makes the exit row silent in
    /// `silence`.
    pub fn with_silence(mut self, silence: Silence) -> Self {
        self.silence = silence;
        self
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
                if !userspace::is_userspace_kill(s) {
                    return Vec::new();
                }
                let comm = crate::sys::text::comm_str(&s.sender_comm);
                let admitted = self
                    .senders
                    .admit(&self.proc_root, s.sender_tgid, &comm, now);
                if let Err(why) = admitted {
                    self.stats_mut().userspace_dropped(why);
                    return Vec::new();
                }
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
                        self.silence.observe(
                            ProbeId::ProcessExit,
                            "the exit of each killed process",
                            "the lifecycle record without kill_to_exit_ns",
                        );
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
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use oomwatch_common::{signal_field, SignalRecord};
    use serde_json::Value;

    use super::records::parse_state;
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn tracker(proc_root: &std::path::Path, exits: bool) -> Lifecycle {
        Lifecycle::new("h".into(), 10 * SEC, exits).with_proc_root(proc_root.to_path_buf())
    }

    fn kill(pid: i32, ktime_ns: u64) -> OomEvent {
        OomEvent {
            tgid: Some(pid),
            comm: Some("tail".into()),
            cgroup: Some("/t".into()),
            oom_id: Some(7),
            ..OomEvent::new(pid, ktime_ns, SystemTime::now(), "h".into())
        }
    }

    fn rec(kind: RecordKind, pid: i32, ktime_ns: u64) -> Record {
        let mut r = LifecycleRecord::zeroed();
        r.kind = kind as u32;
        r.present = lifecycle_field::PID;
        r.pid = pid;
        r.ktime_ns = ktime_ns;
        Record::Lifecycle(r)
    }

    fn lines(outs: Vec<Output>) -> Vec<Value> {
        outs.into_iter()
            .map(|o| match o {
                Output::Line(l) => serde_json::from_str(&l).unwrap(),
                Output::Kill(ev) => panic!("unexpected kill {ev:?}"),
            })
            .collect()
    }

    fn json(l: &[String]) -> Vec<Value> {
        l.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn exit_after_the_event_gives_kill_to_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        assert!(lc.on_event(&kill(10, 1_000), now).is_empty());
        assert_eq!(lc.tracked(), 1);
        let out = lines(lc.push(&rec(RecordKind::VictimExit, 10, 6_000), now));
        assert_eq!(out.len(), 1);
        let v = &out[0];
        assert_eq!(v["type"], "oom_kill_lifecycle");
        assert_eq!(
            (v["pid"].as_i64(), v["oom_id"].as_u64()),
            (Some(10), Some(7))
        );
        assert_eq!(v["kill_to_exit_ns"], 5_000);
        assert_eq!(v["exit_ktime_ns"], 6_000);
        assert_eq!(v["reaper"], "none");
        assert!(v["kill_to_reaped_ns"].is_null());
        assert_eq!(
            (v["killer"].as_str(), v["stuck"].as_bool()),
            (Some("kernel"), Some(false))
        );
        assert_eq!(lc.tracked(), 0);
        let stats = lc.stats();
        let s = stats.lock().unwrap();
        assert_eq!(s.to_exit["kernel"].count(), 1);
        assert_eq!(s.to_reaped.count(), 0);
    }

    #[test]
    fn exit_before_the_event_is_kept_until_the_event_comes() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        // The event waits in the correlator (kernel-log context) while the victim already exited.
        assert!(lc
            .push(&rec(RecordKind::VictimExit, 11, 9_000), now)
            .is_empty());
        // An older exit of the same pid (before this kill) must not be taken.
        assert!(lc
            .push(&rec(RecordKind::VictimExit, 12, 500), now)
            .is_empty());
        let out = json(&lc.on_event(&kill(11, 4_000), now));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["kill_to_exit_ns"], 5_000);
        assert!(
            lc.on_event(&kill(12, 1_000), now).is_empty(),
            "stale exit taken"
        );
    }

    #[test]
    fn exit_waits_for_the_reaper_at_work_and_records_reaping() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        lc.on_event(&kill(20, 1_000), now);
        assert!(lc
            .push(&rec(RecordKind::WakeReaper, 20, 2_000), now)
            .is_empty());
        assert!(lc
            .push(&rec(RecordKind::StartReaping, 20, 2_100), now)
            .is_empty());
        assert!(lc
            .push(&rec(RecordKind::VictimExit, 20, 2_200), now)
            .is_empty());
        let out = lines(lc.push(&rec(RecordKind::FinishReaping, 20, 2_300), now));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["reaper"], "reaped");
        assert_eq!(out[0]["kill_to_reaper_woken_ns"], 1_000);
        assert_eq!(out[0]["kill_to_reaped_ns"], 1_300);
        assert_eq!(out[0]["kill_to_exit_ns"], 1_200);
        assert_eq!(lc.stats().lock().unwrap().to_reaped.count(), 1);
    }

    #[test]
    fn an_exit_whose_reaper_never_finishes_is_written_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        lc.on_event(&kill(21, 1_000), now);
        lc.push(&rec(RecordKind::WakeReaper, 21, 2_000), now);
        assert!(lc
            .push(&rec(RecordKind::VictimExit, 21, 3_000), now)
            .is_empty());
        let at = lc.next_deadline().unwrap();
        assert!(at <= now + 10 * SEC);
        let out = lines(lc.due(at));
        assert_eq!(out[0]["reaper"], "woken");
        assert_eq!(out[0]["kill_to_exit_ns"], 2_000);
        assert!(lc.next_deadline().is_none());
    }

    #[test]
    fn reaper_skips_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        lc.on_event(&kill(30, 1_000), now);
        lc.push(&rec(RecordKind::WakeReaper, 30, 2_000), now);
        lc.push(&rec(RecordKind::SkipReaping, 30, 2_500), now);
        // A skip of a task the agent does not follow still counts.
        lc.push(&rec(RecordKind::SkipReaping, 31, 2_600), now);
        let out = lines(lc.push(&rec(RecordKind::VictimExit, 30, 4_000), now));
        assert_eq!(out[0]["reaper"], "skipped");
        assert!(out[0]["kill_to_reaped_ns"].is_null());
        assert_eq!(lc.stats().lock().unwrap().reaper_skips, 2);
    }

    #[test]
    fn a_victim_alive_after_the_bound_is_stuck_with_its_state() {
        let dir = tempfile::tempdir().unwrap();
        // The leader has exited (a zombie); another thread is blocked in the kernel.
        for (tid, state) in [(40, "Z"), (41, "D"), (42, "S")] {
            let task = dir.path().join(format!("40/task/{tid}"));
            fs::create_dir_all(&task).unwrap();
            fs::write(
                task.join("stat"),
                format!("{tid} (a) b) {state} 1 40 40 0 -1\n"),
            )
            .unwrap();
            fs::write(task.join("wchan"), "request_wait_answer").unwrap();
        }
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        lc.on_event(&kill(40, 1_000), now);
        assert!(lc.due(now + 9 * SEC).is_empty(), "not yet");
        let out = lines(lc.due(now + 10 * SEC));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["type"], "oom_kill_stuck");
        assert_eq!(out[0]["state"], "D");
        assert_eq!(out[0]["tid"], 41);
        assert_eq!(out[0]["wchan"], "request_wait_answer");
        assert_eq!(out[0]["oom_id"], 7);
        {
            let s = lc.stats();
            let s = s.lock().unwrap();
            assert_eq!((s.stuck_now, s.stuck_total), (1, 1));
        }
        // Reported once; checked again later.
        assert!(lc.due(now + 20 * SEC).is_empty());
        let out = lines(lc.push(&rec(RecordKind::VictimExit, 40, 60_000_000_000), now));
        assert_eq!(out[0]["stuck"], true);
        let s = lc.stats();
        let s = s.lock().unwrap();
        assert_eq!((s.stuck_now, s.stuck_total), (0, 1));
    }

    #[test]
    fn a_victim_gone_without_an_exit_record_has_no_exit_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let mut lc = tracker(dir.path(), true);
        lc.on_event(&kill(50, 1_000), now);
        let out = lines(lc.due(now + 10 * SEC));
        assert_eq!(out[0]["type"], "oom_kill_lifecycle");
        assert!(out[0]["kill_to_exit_ns"].is_null());
        assert_eq!(lc.stats().lock().unwrap().to_exit.len(), 0);
        // Without the exit probe nothing is claimed about it.
        let mut lc = tracker(dir.path(), false);
        lc.on_event(&kill(50, 1_000), now);
        assert!(lc.due(now + 10 * SEC).is_empty());
        assert_eq!(lc.tracked(), 0);
    }

    #[test]
    fn replayed_kills_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let ev = OomEvent {
            replayed: true,
            ..kill(60, 1_000)
        };
        lc.on_event(&ev, Instant::now());
        assert_eq!(lc.tracked(), 0);
    }

    fn sigkill(sender: &str) -> SignalRecord {
        let mut s = SignalRecord::zeroed();
        s.kind = RecordKind::SignalTracepoint as u32;
        s.present = signal_field::TARGET_PID
            | signal_field::TARGET_COMM
            | signal_field::CODE
            | signal_field::RESULT;
        s.ktime_ns = crate::sys::clock::monotonic_ns();
        s.sig = 9;
        s.sender_pid = 900;
        s.sender_tgid = 899;
        s.target_pid = 70;
        s.sender_comm[..sender.len()].copy_from_slice(sender.as_bytes());
        s.target_comm[..4].copy_from_slice(b"java");
        s
    }

    /// `/proc/899` of a sender running `exe` (root-owned `/bin/sh`: comm `sh`), with or
    /// without `CAP_KILL`.
    fn sender_proc(proc_root: &std::path::Path, cap_kill: bool) {
        let d = proc_root.join("899");
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink("/bin/sh", d.join("exe")).unwrap();
        let caps = if cap_kill { "0000000000000020" } else { "0" };
        std::fs::write(d.join("status"), format!("Name:\tsh\nCapEff:\t{caps}\n")).unwrap();
        std::fs::write(d.join("cmdline"), "/bin/sh\0-c\0").unwrap();
    }

    #[test]
    fn a_forged_or_unprivileged_killer_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        // Gone, then not the killer's executable (sh named earlyoom), then no CAP_KILL.
        assert!(lc.push(&Record::Signal(sigkill("sh")), now).is_empty());
        sender_proc(dir.path(), false);
        assert!(lc
            .push(&Record::Signal(sigkill("earlyoom")), now)
            .is_empty());
        assert!(lc.push(&Record::Signal(sigkill("sh")), now).is_empty());
        let stats = lc.stats();
        let s = stats.lock().unwrap();
        assert!(s.userspace_kills.is_empty());
        assert_eq!(
            s.userspace_dropped.values().copied().collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn a_userspace_killers_sigkill_is_an_event_with_killer_set() {
        let dir = tempfile::tempdir().unwrap();
        sender_proc(dir.path(), true);
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        let out = lc.push(&Record::Signal(sigkill("sh")), now);
        let [Output::Kill(ev)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(ev.killer.as_deref(), Some("sh"));
        assert_eq!(ev.killer_pid, Some(899));
        assert_eq!((ev.pid, ev.comm.as_deref()), (70, Some("java")));
        assert_eq!(ev.trigger.as_ref().unwrap().comm, "sh");
        assert!(ev.oom_id.is_none() && !ev.replayed);
        let v: Value = serde_json::from_str(&ev.to_json_line()).unwrap();
        assert_eq!(v["sources"]["killer"], "tracepoint:signal/signal_generate");
        assert_eq!(v["victim"]["comm"], "java");
        assert_eq!(lc.stats().lock().unwrap().userspace_kills["sh"], 1);
        // Followed to its exit like a kernel kill.
        let ktime = ev.ktime_ns;
        lc.on_event(ev, now);
        let out = lines(lc.push(&rec(RecordKind::VictimExit, 70, ktime + 3_000), now));
        assert_eq!(
            (
                out[0]["killer"].as_str(),
                out[0]["kill_to_exit_ns"].as_u64()
            ),
            (Some("sh"), Some(3_000))
        );
        assert_eq!(lc.stats().lock().unwrap().to_exit["sh"].count(), 1);
    }

    #[test]
    fn kernel_sent_and_undelivered_sigkills_are_not_userspace_kills() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        let mut by_kernel = sigkill("earlyoom");
        by_kernel.code = 0x80;
        assert!(lc.push(&Record::Signal(by_kernel), now).is_empty());
        let mut pending = sigkill("earlyoom");
        pending.result = 2;
        assert!(lc.push(&Record::Signal(pending), now).is_empty());
        let mut no_target = sigkill("earlyoom");
        no_target.present &= !signal_field::TARGET_PID;
        assert!(lc.push(&Record::Signal(no_target), now).is_empty());
    }

    #[test]
    fn stat_state_survives_odd_comms() {
        assert_eq!(parse_state("1 (systemd) S 0 1"), Some('S'));
        assert_eq!(parse_state("7 (a) D (b) R 1"), Some('R'));
        assert_eq!(parse_state("garbage"), None);
        assert_eq!(parse_state("1 (x)"), None);
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut s = Stats::default();
        s.observe("kernel", Some(3_000_000), Some(2_000_000_000));
        s.observe("kernel", Some(20_000_000_000), None);
        s.observe("kernel", Some(100_000_000_000), None);
        let fams = s.families();
        let exit = fams
            .iter()
            .find(|f| f.name() == "oomwatch_oom_kill_to_exit_seconds")
            .unwrap();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(std::slice::from_ref(exit), &mut text)
            .unwrap();
        assert!(
            text.contains(
                "oomwatch_oom_kill_to_exit_seconds_bucket{killer=\"kernel\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"30\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        assert!(
            text.contains("oomwatch_oom_kill_to_exit_seconds_count{killer=\"kernel\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn a_victim_thread_is_followed_by_its_process_and_named_by_the_reaper() {
        let dir = tempfile::tempdir().unwrap();
        let mut lc = tracker(dir.path(), true);
        let now = Instant::now();
        // The kernel picked thread 80 of process 79: the reaper names 80, the exit names 79.
        let ev = OomEvent {
            tgid: Some(79),
            ..kill(80, 1_000)
        };
        assert!(lc
            .push(&rec(RecordKind::WakeReaper, 80, 1_500), now)
            .is_empty());
        lc.on_event(&ev, now);
        lc.push(&rec(RecordKind::StartReaping, 80, 1_600), now);
        lc.push(&rec(RecordKind::FinishReaping, 80, 1_700), now);
        // An exit of another process with the victim thread's number is not this one's.
        assert!(lc
            .push(&rec(RecordKind::VictimExit, 80, 1_800), now)
            .is_empty());
        let out = lines(lc.push(&rec(RecordKind::VictimExit, 79, 2_000), now));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0]["pid"].as_i64(), out[0]["tgid"].as_i64()),
            (Some(80), Some(79))
        );
        assert_eq!(out[0]["reaper"], "reaped");
        assert_eq!(out[0]["kill_to_reaper_woken_ns"], 500);
        assert_eq!(out[0]["kill_to_exit_ns"], 1_000);
    }
}
