//! No kill lost: the kernel log as the agent's safety net.
//!
//! * At start-up, kills logged while the agent was down (after the position saved in
//!   [`crate::recovery::position`]) are rebuilt from the log ([`crate::recovery::replay`]) and recorded with
//!   `"replayed": true`.
//! * While running, every "Killed process" line is matched with a live record; a kill the
//!   probes never reported (e.g. the ring buffer was full) is recorded from its line after
//!   [`GIVE_UP`], also marked `replayed`.
//! * The position saved after each record is just before the oldest kill still unrecorded, so
//!   a crash (even `kill -9`) never loses one; the pids recorded live are saved with it, so none
//!   is recorded twice.
pub mod position;
pub mod replay;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::record::{OomEvent, ProbeId};
use crate::recovery::position::{Position, StateFile, Tracker};
use crate::recovery::replay::{LogKills, LoggedKill};
use crate::source::kmsg::record::KmsgRecord;
use crate::source::kmsg::{KmsgError, KmsgEvent, KmsgReader, KmsgSource};
use crate::source::probe::silence::Silence;

/// How long a "Killed process" line waits for its live record before it is recorded from the
/// line itself (the live path takes at most the correlation window plus the kernel-log wait).
pub const GIVE_UP: Duration = Duration::from_secs(3);
/// Kill lines held while waiting for their live record.
const HELD: usize = 1024;

#[derive(Debug)]
pub struct Recovery {
    kills: LogKills,
    tracker: Tracker,
    /// Where the position is saved; none for a log whose record numbers mean nothing after a
    /// restart ([`Self::live_only`]).
    file: Option<Arc<StateFile>>,
    boot_id: String,
    held: VecDeque<(Instant, LoggedKill)>,
    /// Kills whose records are queued for stdout but not yet written, in queue order: no
    /// longer waiting for a live record, not yet counted as recorded by the position.
    unwritten: VecDeque<Unwritten>,
    /// The last position written, to skip identical writes.
    saved: Option<Position>,
    /// Where a kill line without a live record makes the attached `mark_victim` rows silent.
    silence: Silence,
    /// The attached `mark_victim` rows.
    victim_rows: Vec<ProbeId>,
}

/// A kill whose record is on its way to stdout.
#[derive(Debug)]
struct Unwritten {
    pid: i32,
    /// Its line's number in the writer's queue, once [`Recovery::queued`] told it.
    line: Option<u64>,
}

/// What start-up found in the log.
#[derive(Debug, Default)]
pub struct StartUp {
    /// Kills logged while the agent was down, oldest first.
    pub missed: Vec<OomEvent>,
    /// Kernel-log records overwritten before they could be read (kills among them are lost).
    pub lost_records: u64,
    /// Whether a saved position was found (else this is a first run: nothing is replayed).
    pub resumed: bool,
}

impl Recovery {
    /// Reads the saved position and the kernel log up to now. `reader` is left at the end of
    /// the log, ready to follow it live.
    pub fn start<S: KmsgSource>(
        file: StateFile,
        boot_id: String,
        host: String,
        reader: &mut KmsgReader<S>,
    ) -> Result<(Self, StartUp), KmsgError> {
        let prev = file.load();
        let mut up = StartUp::default();
        let mut recent: Vec<i32> = Vec::new();
        match &prev {
            Some(p) if p.boot_id == boot_id => {
                reader.resume_after(p.seq)?;
                recent.clone_from(&p.recent);
                up.resumed = true;
            }
            // Another boot: every kill in the log happened after the last run.
            Some(_) => {
                reader.seek_to_start()?;
                up.resumed = true;
            }
            None => reader.seek_to_start()?,
        }
        let mut kills = LogKills::new(host);
        let mut tracker = Tracker::new(&recent, None);
        while let Some(ev) = reader.next_event()? {
            match ev {
                KmsgEvent::Record(rec) => {
                    tracker.record(rec.seq);
                    for k in kills.push(&rec) {
                        // Pending until its replayed record is written: a position saved
                        // before then (after a live record, or by the first replayed ones)
                        // stays before it, so a crash during start-up replays it again
                        // instead of losing it.
                        if up.resumed && tracker.killed(k.seq, k.event.pid) {
                            up.missed.push(k.event);
                        }
                    }
                }
                KmsgEvent::Gap(g) => up.lost_records += g.lost(),
            }
        }
        let r = Self {
            kills,
            tracker,
            file: Some(Arc::new(file)),
            boot_id,
            held: VecDeque::new(),
            unwritten: VecDeque::new(),
            saved: None,
            silence: Silence::new(),
            victim_rows: Vec::new(),
        };
        Ok((r, up))
    }

    /// Follows the log from now on without a state file: each kill line is matched with its
    /// live record, and a kill the probes did not report is recorded from its line after
    /// [`GIVE_UP`]; nothing is saved, so nothing is replayed at the next start. For the log
    /// read with `syslog(2)`, whose record numbers are the agent's own.
    pub fn live_only(host: String) -> Self {
        Self {
            kills: LogKills::new(host),
            tracker: Tracker::new(&[], None),
            file: None,
            boot_id: String::new(),
            held: VecDeque::new(),
            unwritten: VecDeque::new(),
            saved: None,
            silence: Silence::new(),
            victim_rows: Vec::new(),
        }
    }

    /// A kill line with no live record makes each of `victim_rows` (the attached `mark_victim`
    /// rows) silent in `silence`.
    pub fn with_silence(mut self, silence: Silence, victim_rows: Vec<ProbeId>) -> Self {
        self.silence = silence;
        self.victim_rows = victim_rows;
        self
    }

    /// A live kernel-log record; returns whether it was a kill line that now waits for its
    /// live record.
    pub fn on_record(&mut self, rec: &KmsgRecord, now: Instant) -> bool {
        self.tracker.record(rec.seq);
        let mut waits = false;
        for k in self.kills.push(rec) {
            let pid = k.event.pid;
            if self.tracker.killed(k.seq, pid) && !self.unwritten.iter().any(|u| u.pid == pid) {
                if self.held.len() == HELD {
                    self.held.pop_front();
                }
                self.held.push_back((now, k));
                waits = true;
            }
        }
        waits
    }

    /// A record for `pid` is about to be queued for stdout: its kill line no longer waits for
    /// a live record. The position counts it as recorded only once stdout has taken the line
    /// ([`Self::written_through`]): counted earlier, a `kill -9` while the line still waits in
    /// the writer's queue would lose the kill.
    pub fn recorded(&mut self, pid: i32) {
        self.held.retain(|(_, k)| k.event.pid != pid);
        self.unwritten.push_back(Unwritten { pid, line: None });
    }

    /// Where the record of `pid` just [`Self::recorded`] went: line `line` of the writer's
    /// queue, or `None` when the queue was full and the line was dropped (the position then
    /// stays before its kill line, so the next start replays it).
    pub fn queued(&mut self, pid: i32, line: Option<u64>) {
        let Some(i) = (self.unwritten.iter()).rposition(|u| u.pid == pid && u.line.is_none())
        else {
            return;
        };
        match line {
            Some(n) => self.unwritten[i].line = Some(n),
            None => drop(self.unwritten.remove(i)),
        }
    }

    /// Stdout has taken every line up to number `n`: the position counts their kills as
    /// recorded (saved at the next [`Self::save`]).
    pub fn written_through(&mut self, n: u64) {
        while let Some(u) = (self.unwritten.front()).filter(|u| u.line.is_some_and(|l| l <= n)) {
            let pid = u.pid;
            self.unwritten.pop_front();
            self.tracker.recorded(pid);
        }
    }

    /// Whether lines of kills wait for stdout (the position follows each line it takes).
    pub fn waits_for_stdout(&self) -> bool {
        !self.unwritten.is_empty()
    }

    /// Whether a "Killed process" line of `pid` waits for its live record, naming `comm`
    /// when both it and the line name one (a pid reused by another task is not its victim).
    pub fn holds_kill_line(&self, pid: i32, comm: Option<&str>) -> bool {
        self.held.iter().any(|(_, k)| {
            let line = k.event.comm.as_deref();
            k.event.pid == pid && (comm.is_none() || line.is_none() || line == comm)
        })
    }

    /// When the oldest held kill line is given up on.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.front().map(|(t, _)| *t + GIVE_UP)
    }

    /// Kill lines whose live record never came: recorded from the log now.
    pub fn due(&mut self, now: Instant) -> Vec<OomEvent> {
        let mut out = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= GIVE_UP)
        {
            if let Some((_, k)) = self.held.pop_front() {
                if self.tracker.is_pending(k.event.pid) {
                    tracing::warn!(
                        pid = k.event.pid,
                        "no live record for a kill in the kernel log; recording it from the log"
                    );
                    for &row in &self.victim_rows {
                        self.silence.observe(
                            row,
                            "a record for each \"Killed process\" line in the kernel log",
                            "the kill line itself (replayed: true)",
                        );
                    }
                    out.push(k.event);
                }
            }
        }
        out
    }

    /// What to run once stdout has taken the line of the kill just [`Self::recorded`]: it
    /// saves the position that counts as recorded every kill whose line is queued so far.
    /// The writer thread runs it between that line's write and its count as written, so no
    /// `kill -9` can fall between a burst of written lines and the save that counts them
    /// (only between one line and its save). Commits must run in the order they were made:
    /// the writer runs them in queue order, and [`Self::save`] waits while any is queued.
    pub fn commit_once_written(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let pos = self
            .tracker
            .position_once_recorded(&self.boot_id, self.unwritten.iter().map(|u| &u.pid))?;
        let file = Arc::clone(self.file.as_ref()?);
        let prepared = file.prepare(&pos);
        Some(Box::new(move || {
            if let Err(e) = file.commit(prepared) {
                tracing::warn!("{e}");
            }
        }))
    }

    /// Writes the position if it changed; a failure is logged (the next write retries). Not
    /// while the line of a kill is still queued for stdout: the writer commits the positions
    /// then ([`Self::commit_once_written`]), and a save now would take a later generation
    /// than those and hide them.
    pub fn save(&mut self) {
        if !self.unwritten.is_empty() {
            return;
        }
        let Some(pos) = self.tracker.position(&self.boot_id) else {
            return;
        };
        if self.saved.as_ref() == Some(&pos) {
            return;
        }
        let Some(file) = &self.file else {
            return;
        };
        match file.save(&pos) {
            Ok(()) => self.saved = Some(pos),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! [`Recovery`] against a scripted kernel log and a real state file: what a crash at each
    //! point of start-up leaves for the next start.
    use std::collections::VecDeque;
    use std::io;

    use super::*;
    use crate::source::kmsg::SeekTo;

    /// A kernel log that holds `records` (each read returns one); `seek_to(Start)` rewinds.
    struct Log {
        records: Vec<String>,
        next: VecDeque<String>,
    }

    impl Log {
        fn new(msgs: &[(u64, &str)]) -> Self {
            let records: Vec<String> = msgs
                .iter()
                .map(|(seq, msg)| format!("3,{seq},{},-;{msg}\n", seq * 1000))
                .collect();
            Log {
                next: records.iter().cloned().collect(),
                records,
            }
        }
    }

    impl KmsgSource for Log {
        fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let r = self.next.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..r.len()].copy_from_slice(r.as_bytes());
            Ok(r.len())
        }

        fn seek_to(&mut self, to: SeekTo) -> io::Result<()> {
            if to == SeekTo::Start {
                self.next = self.records.iter().cloned().collect();
            }
            Ok(())
        }
    }

    fn killed(pid: i32) -> String {
        format!(
            "Memory cgroup out of memory: Killed process {pid} (tail) total-vm:17992kB, \
         anon-rss:15104kB, file-rss:1468kB, shmem-rss:0kB, UID:0 pgtables:80kB oom_score_adj:0"
        )
    }

    /// Log: an unrelated line (seq 1), kills of 100 and 101 (seqs 2, 3), another line (seq 4).
    fn log() -> Log {
        let (k100, k101) = (killed(100), killed(101));
        Log::new(&[(1, "eth0: link up"), (2, &k100), (3, &k101), (4, "done")])
    }

    /// A start of the agent on `log()` with the state in `dir`: the pids it replays.
    fn start(dir: &std::path::Path) -> (Recovery, Vec<i32>) {
        let file = StateFile::open(dir).unwrap();
        let mut reader = KmsgReader::new(log());
        let (r, up) = Recovery::start(file, "boot".into(), "host".into(), &mut reader).unwrap();
        (r, up.missed.iter().map(|e| e.pid).collect())
    }

    fn save(dir: &std::path::Path, pos: Position) {
        StateFile::open(dir).unwrap().save(&pos).unwrap();
    }

    fn saved(dir: &std::path::Path) -> Position {
        StateFile::open(dir).unwrap().load().unwrap()
    }

    fn record(r: &mut Recovery, pid: i32) {
        r.recorded(pid);
        r.queued(pid, Some(1));
        r.written_through(1);
        r.save();
    }

    #[test]
    fn a_doubtful_mark_waits_at_least_as_long_as_a_kill_line_waits_for_it() {
        // The line follows its mark at once; the mark must not be given up on (counted as no
        // kill) while its line, read late, could still wait for it.
        assert!(crate::correlate::DOUBT >= GIVE_UP);
    }

    #[test]
    fn a_crash_during_the_replay_loses_no_kill_and_repeats_none() {
        let dir = tempfile::tempdir().unwrap();
        let at_seq_1 = Position {
            boot_id: "boot".into(),
            seq: 1,
            recent: vec![],
        };
        save(dir.path(), at_seq_1.clone());
        let (mut r, missed) = start(dir.path());
        assert_eq!(missed, vec![100, 101]);

        // A kill the probes reported at start-up is written first: the position saved with it
        // must stay before both kills still to be replayed.
        record(&mut r, 200);
        let p = saved(dir.path());
        assert_eq!((p.seq, p.recent.clone()), (1, vec![200]));
        // Crash here: the next start replays both.
        assert_eq!(start(dir.path()).1, vec![100, 101]);

        // The first replayed record is written, then a crash: only the second is replayed.
        save(dir.path(), at_seq_1);
        let (mut r, _) = start(dir.path());
        record(&mut r, 100);
        assert_eq!(saved(dir.path()).seq, 2);
        assert_eq!(start(dir.path()).1, vec![101]);

        // Both written: the position is the end of the log and nothing is replayed again.
        let (mut r, _) = start(dir.path());
        record(&mut r, 101);
        let p = saved(dir.path());
        assert_eq!(p.seq, 4);
        assert_eq!(start(dir.path()).1, Vec::<i32>::new());
    }

    /// CI's `kill_cycles` (at cf9638f..77e46ba): an agent replayed a burst of kills, its
    /// writer put several lines out, and `kill -9` came before the event loop had saved the
    /// position that counted them: the next agent replayed them all again. The writer now
    /// saves, right after each line, the position prepared with it.
    #[test]
    fn each_line_written_is_counted_by_the_save_that_follows_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        save(
            dir.path(),
            Position {
                boot_id: "boot".into(),
                seq: 1,
                recent: vec![],
            },
        );
        let (mut r, missed) = start(dir.path());
        assert_eq!(missed, vec![100, 101]);
        // Both replayed lines are queued; each carries the save that counts it.
        r.recorded(100);
        let after_100 = r.commit_once_written().unwrap();
        r.queued(100, Some(1));
        r.recorded(101);
        let after_101 = r.commit_once_written().unwrap();
        r.queued(101, Some(2));
        // The event loop saves nothing while lines of kills wait for stdout.
        r.save();
        assert_eq!(
            saved(dir.path()).seq,
            1,
            "no save while kills' lines are queued"
        );
        // The writer puts out the first line and runs its save; `kill -9` now: the next
        // start replays only the second.
        after_100();
        assert_eq!(start(dir.path()).1, vec![101]);
        // The second line and its save: nothing is replayed again.
        after_101();
        assert_eq!(start(dir.path()).1, Vec::<i32>::new());
        // The loop learns both are written and saves (a later generation, the same or more).
        r.written_through(2);
        r.save();
        assert_eq!(saved(dir.path()).seq, 4);
        assert_eq!(start(dir.path()).1, Vec::<i32>::new());
    }

    #[test]
    fn a_first_run_replays_nothing_and_saves_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, missed) = start(dir.path());
        assert!(missed.is_empty());
        r.save();
        assert_eq!(saved(dir.path()).seq, 4);
    }
}
