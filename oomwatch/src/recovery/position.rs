//! Restart without loss or duplicates: how far into the kernel log the agent has handled OOM
//! kills, kept in a small file under `--state-dir`.
//!
//! The file holds the boot id, the sequence number of the last kernel-log record up to which
//! every kill has a record, and the pids of the newest kills recorded live (a live record can
//! be written before its "Killed process" line is read; those pids are never replayed). On
//! start, kills in the log after that position are replayed (`"replayed": true`); after a
//! reboot (another boot id) every kill in the log is. Without a file (first run) nothing is.
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys::owned_dir::OwnedDir;

/// File name below the state directory.
pub const FILE: &str = "kmsg-position.json";
/// Live-recorded pids remembered.
const RECENT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use state directory {0}: {1}; or choose another with --state-dir")]
    Dir(PathBuf, io::Error),
    #[error("cannot write {0}: {1}: make it writable or choose another --state-dir")]
    Write(PathBuf, io::Error),
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub boot_id: String,
    /// Every kill logged at or before this record has a record.
    pub seq: u64,
    /// Pids of the newest kills recorded live, newest last.
    pub recent: Vec<i32>,
}

/// The state file, in a directory only the agent writes ([`OwnedDir`]: nothing planted there
/// is followed, hung on or read whole).
#[derive(Debug)]
pub struct StateFile {
    dir: OwnedDir,
    path: PathBuf,
    /// Opened at the first save (after the saved position was read).
    file: std::sync::Mutex<Option<fs::File>>,
    /// Generation of the next save (one more than the newest loaded).
    next_gen: std::sync::Mutex<u64>,
}

/// Size of one saved record (a page): a position with 64 pids takes under a quarter of it.
const RECORD: usize = 4096;
/// Records written in turn; the newest (highest `gen`) is the position.
const SLOTS: usize = 8;
/// The largest state file read: the slots, or a position written whole by rename.
const MAX_FILE: u64 = 64 * 1024;
/// The write probe's name.
const PROBE: &str = ".write-test";

/// A position encoded for its slot, not yet written.
#[derive(Debug)]
pub struct Prepared {
    gen: u64,
    /// Exactly [`RECORD`] bytes (padded), or longer: then it is written by rename.
    body: Vec<u8>,
}

/// One saved record: the position and its generation.
#[derive(Serialize, Deserialize)]
struct Slot {
    #[serde(default)]
    gen: u64,
    #[serde(flatten)]
    pos: Position,
}

/// A slot's JSON without the padding (spaces, newline, or zeros of a never-written slot).
fn trim_slot(c: &[u8]) -> &[u8] {
    let end = c
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\n' | 0))
        .map_or(0, |i| i + 1);
    &c[..end]
}

impl StateFile {
    /// Creates the directory (0700) if needed, checks only the agent can write it (else a
    /// one-line error), and that it is writable.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let dir = OwnedDir::open(dir).map_err(|e| StateError::Dir(dir.to_path_buf(), e))?;
        let probe_err = |e| StateError::Write(dir.path().join(PROBE), e);
        dir.create_new(PROBE).map_err(probe_err)?;
        dir.remove(PROBE).map_err(probe_err)?;
        Ok(Self {
            path: dir.path().join(FILE),
            dir,
            file: std::sync::Mutex::new(None),
            next_gen: std::sync::Mutex::new(0),
        })
    }

    /// The saved position; `None` when there is none or it is unusable (a one-line warning:
    /// not a regular file of the agent's own, too big, malformed; it is replaced at the next
    /// save).
    pub fn load(&self) -> Option<Position> {
        let bytes = match self.dir.read_own(FILE, MAX_FILE) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(
                    "state file {} {e}: ignored (no replay), replaced at the next save",
                    self.path.display()
                );
                return None;
            }
        };
        // The newest of the slots that parse; else the whole file (written by rename).
        let newest = bytes
            .chunks(RECORD)
            .filter_map(|c| serde_json::from_slice::<Slot>(trim_slot(c)).ok())
            .max_by_key(|s| s.gen);
        if let Some(slot) = newest {
            *self.next_gen.lock().unwrap_or_else(|p| p.into_inner()) = slot.gen + 1;
            return Some(slot.pos);
        }
        match serde_json::from_slice::<Slot>(&bytes) {
            Ok(s) => Some(s.pos),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "state file malformed: {e}; no replay");
                None
            }
        }
    }

    /// Writes the position in place: one `pwrite` of a fixed-size, space-padded record at the
    /// start of the file (JSON ignores the trailing spaces). It is saved after every record,
    /// so it must be cheap: no temporary file, no rename, no fsync. A single small write lands
    /// whole in the page cache, so a crash of the agent (even `kill -9`) never leaves half of
    /// it; only a power loss could, and then the next start finds it malformed, says so, and
    /// replays nothing. A position too large for the record is written with a rename instead.
    pub fn save(&self, pos: &Position) -> Result<(), StateError> {
        self.commit(self.prepare(pos))
    }

    /// The bytes [`Self::commit`] writes for `pos`, with the next generation: commits must
    /// happen in the order of their preparation (a later one may reuse an earlier's slot).
    pub fn prepare(&self, pos: &Position) -> Prepared {
        let gen = {
            let mut g = self.next_gen.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g - 1
        };
        let slot = Slot {
            gen,
            pos: pos.clone(),
        };
        let mut body = serde_json::to_vec(&slot).unwrap_or_default();
        if body.len() < RECORD {
            body.resize(RECORD - 1, b' ');
            body.push(b'\n');
        }
        Prepared { gen, body }
    }

    /// Writes a prepared position: one `pwrite`.
    pub fn commit(&self, p: Prepared) -> Result<(), StateError> {
        use std::os::unix::fs::FileExt;
        let mut slot = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if p.body.len() > RECORD {
            // The renamed file replaces the one held open: reopen at the next save.
            *slot = None;
            return self.save_by_rename(&p.body);
        }
        let file = match slot.as_ref() {
            Some(f) => f,
            None => slot.insert(self.open_slots()?),
        };
        // Each save goes to the next slot: a page the kernel is writing back can stall a write
        // to it (stable pages), and consecutive saves never touch the same page.
        let offset = (p.gen % SLOTS as u64) * RECORD as u64;
        file.write_all_at(&p.body, offset)
            .map_err(|e| StateError::Write(self.path.clone(), e))
    }

    /// The file to write slots into: the agent's own, or a new one in its place.
    fn open_slots(&self) -> Result<fs::File, StateError> {
        let err = |e| StateError::Write(self.path.clone(), e);
        let len = (RECORD * SLOTS) as u64;
        match self.dir.open_own(FILE) {
            Ok(Some(f)) => {
                // Drop any longer content an older format (or anyone) left behind.
                f.set_len(len).map_err(err)?;
                f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(err)?;
                Ok(f)
            }
            Ok(None) => self.replace_with(|f| f.set_len(len)),
            Err(e) => {
                tracing::info!("state file {} {e}: replaced", self.path.display());
                self.replace_with(|f| f.set_len(len))
            }
        }
    }

    fn save_by_rename(&self, body: &[u8]) -> Result<(), StateError> {
        self.replace_with(|mut f| io::Write::write_all(&mut f, body))
            .map(drop)
    }

    /// A new file, filled by `fill`, renamed over the state file (whatever is there is
    /// replaced, not followed); returns it open.
    fn replace_with(
        &self,
        fill: impl FnOnce(&fs::File) -> io::Result<()>,
    ) -> Result<fs::File, StateError> {
        // A temporary name of this process's own: two agents given the same directory by
        // mistake must not rename each other's half-written file.
        let tmp = format!("{FILE}.{}.tmp", std::process::id());
        let err = |e| StateError::Write(self.dir.path().join(&tmp), e);
        let f = self.dir.create_new(&tmp).map_err(err)?;
        fill(&f).map_err(err)?;
        self.dir.rename(&tmp, FILE).map_err(err)?;
        Ok(f)
    }
}

/// The kernel's boot id (changes at every boot), read under the host's `/proc`.
pub fn boot_id(proc_root: &Path) -> Option<String> {
    fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Follows the live kernel log: which "Killed process" lines still wait for their record.
#[derive(Debug, Default)]
pub struct Tracker {
    /// (seq of the Killed line, pid) not yet recorded, oldest first.
    pending: VecDeque<(u64, i32)>,
    /// Pids recorded live, newest last.
    recent: VecDeque<i32>,
    last_seq: Option<u64>,
}

impl Tracker {
    pub fn new(recent: &[i32], last_seq: Option<u64>) -> Self {
        // Only the newest RECENT: a longer list (an edited file) would never shrink.
        let newest = &recent[recent.len().saturating_sub(RECENT)..];
        Self {
            pending: VecDeque::new(),
            recent: newest.iter().copied().collect(),
            last_seq,
        }
    }

    /// A kernel-log record was read.
    pub fn record(&mut self, seq: u64) {
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
    }

    /// Its "Killed process" line was read; `false` if the pid was already recorded.
    pub fn killed(&mut self, seq: u64, pid: i32) -> bool {
        self.record(seq);
        if self.recent.contains(&pid) {
            return false;
        }
        if self.pending.len() == 4096 {
            self.pending.pop_front();
        }
        self.pending.push_back((seq, pid));
        true
    }

    /// A record for `pid` was written.
    pub fn recorded(&mut self, pid: i32) {
        self.pending.retain(|(_, p)| *p != pid);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(pid);
    }

    /// Kill lines read but never recorded, oldest first, up to and including `seq`: given up
    /// on (the caller records them from the log).
    pub fn take_pending_through(&mut self, seq: u64) -> Vec<i32> {
        let mut out = Vec::new();
        while let Some(&(s, pid)) = self.pending.front() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            out.push(pid);
        }
        out
    }

    pub fn is_pending(&self, pid: i32) -> bool {
        self.pending.iter().any(|(_, p)| *p == pid)
    }

    /// [`Self::position`] as it will be once the kills of `pids` are [`Self::recorded`] (in
    /// that order), without changing (or copying) the tracker.
    pub fn position_once_recorded<'a>(
        &self,
        boot_id: &str,
        pids: impl Iterator<Item = &'a i32> + Clone,
    ) -> Option<Position> {
        let unrecorded = self
            .pending
            .iter()
            .find(|(_, p)| !pids.clone().any(|q| q == p));
        let seq = match unrecorded {
            Some(&(s, _)) => s.checked_sub(1)?,
            None => self.last_seq?,
        };
        let all: Vec<i32> = self.recent.iter().copied().chain(pids.copied()).collect();
        Some(Position {
            boot_id: boot_id.to_string(),
            seq,
            recent: all[all.len().saturating_sub(RECENT)..].to_vec(),
        })
    }

    /// The position to save: just before the oldest unrecorded kill line, else the last
    /// record read.
    pub fn position(&self, boot_id: &str) -> Option<Position> {
        let seq = match self.pending.front() {
            Some(&(s, _)) => s.checked_sub(1)?,
            None => self.last_seq?,
        };
        Some(Position {
            boot_id: boot_id.to_string(),
            seq,
            recent: self.recent.iter().copied().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_once_recorded_is_the_position_after_recording() {
        let mut t = Tracker::new(&(0..RECENT as i32).collect::<Vec<_>>(), None);
        t.record(10);
        for (seq, pid) in [(12, 700), (13, 701), (14, 702)] {
            t.killed(seq, pid);
        }
        let pids = std::collections::BTreeSet::from([700, 702]);
        let ahead = t.position_once_recorded("b", pids.iter()).unwrap();
        for p in &pids {
            t.recorded(*p);
        }
        assert_eq!(Some(ahead), t.position("b"));
    }

    #[test]
    fn position_stops_before_the_oldest_unrecorded_kill() {
        let mut t = Tracker::new(&[], None);
        t.record(10);
        assert_eq!(t.position("b").unwrap().seq, 10);
        assert!(t.killed(12, 700));
        t.record(15);
        assert_eq!(t.position("b").unwrap().seq, 11);
        t.recorded(700);
        let p = t.position("b").unwrap();
        assert_eq!((p.seq, p.recent.as_slice()), (15, &[700][..]));
        // A line for a pid recorded live before its line was read is not pending.
        t.recorded(701);
        assert!(!t.killed(16, 701));
        assert_eq!(t.position("b").unwrap().seq, 16);
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_means_no_replay() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::open(&dir.path().join("sub")).unwrap();
        assert_eq!(f.load(), None);
        let p = Position {
            boot_id: "x".into(),
            seq: 42,
            recent: vec![1, 2],
        };
        f.save(&p).unwrap();
        assert_eq!(f.load(), Some(p));
        fs::write(dir.path().join("sub").join(FILE), "{not json").unwrap();
        assert_eq!(f.load(), None);
    }

    #[test]
    fn a_shorter_position_overwrites_a_longer_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::open(dir.path()).unwrap();
        let long = Position {
            boot_id: "b".into(),
            seq: u64::MAX,
            recent: (1..=64).map(|p| p * 1_000_000).collect(),
        };
        f.save(&long).unwrap();
        let short = Position {
            boot_id: "b".into(),
            seq: 7,
            recent: vec![],
        };
        f.save(&short).unwrap();
        assert_eq!(f.load(), Some(short.clone()));
        assert_eq!(
            fs::metadata(dir.path().join(FILE)).unwrap().len(),
            (RECORD * SLOTS) as u64
        );
        // Many saves go round the slots; the newest is the one read back.
        for seq in 100..120 {
            f.save(&Position {
                seq,
                ..short.clone()
            })
            .unwrap();
        }
        assert_eq!(
            StateFile::open(dir.path()).unwrap().load().unwrap().seq,
            119
        );
        // Too big for the record (not possible with 64 pids): written whole by rename; the
        // next in-place save goes to the new file, not the replaced one.
        let huge = Position {
            boot_id: "x".repeat(5000),
            seq: 1,
            recent: vec![],
        };
        f.save(&huge).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().load(), Some(huge));
        f.save(&short).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().load(), Some(short));
    }

    #[test]
    fn pending_kills_are_given_up_in_order() {
        let mut t = Tracker::new(&[], None);
        t.killed(5, 1);
        t.killed(6, 2);
        t.killed(9, 3);
        assert_eq!(t.take_pending_through(6), vec![1, 2]);
        assert!(t.is_pending(3));
        assert_eq!(t.position("b").unwrap().seq, 8);
    }
}
