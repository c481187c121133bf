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
    if let Some(c) = r.prepare_recorded(pid) {
        r.commit(c);
    }
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

#[test]
fn a_first_run_replays_nothing_and_saves_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, missed) = start(dir.path());
    assert!(missed.is_empty());
    r.save();
    assert_eq!(saved(dir.path()).seq, 4);
}
