//! Reading `/dev/kmsg` one record per `read()`, with loss detection and resumption.
//!
//! The kernel keeps one read position per open file. When records we have not read yet are
//! overwritten, the next `read()` fails with `EPIPE` and the position jumps to the oldest record
//! still there; `EAGAIN` (non-blocking) means there is nothing more for now. [`KmsgReader`] turns
//! both into events: lost records become one [`Gap`] (from the jump in sequence numbers), and
//! "nothing more" becomes `Ok(None)`.
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::record::{parse_record, KmsgRecord, MAX_RECORD_BYTES};

/// The kernel's log device.
pub const KMSG_PATH: &str = "/dev/kmsg";

/// Where to move the read position (`lseek` on `/dev/kmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// `SEEK_SET`: the oldest record still in the buffer.
    Start,
    /// `SEEK_END`: after the newest record; only records logged from now on are read.
    End,
    /// `SEEK_DATA`: after the last record that was in the buffer when the log was last cleared
    /// (`dmesg -C`, `SYSLOG_ACTION_CLEAR`); the same as `Start` if it never was.
    Data,
}

/// Something that behaves like an open `/dev/kmsg`: each read returns one whole record, or
/// fails with `WouldBlock` (`EAGAIN`) or `BrokenPipe` (`EPIPE`).
pub trait KmsgSource {
    /// One `read()`.
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// One `lseek(fd, 0, whence)`.
    fn seek_to(&mut self, to: SeekTo) -> io::Result<()>;
}

impl KmsgSource for File {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn seek_to(&mut self, to: SeekTo) -> io::Result<()> {
        let whence = match to {
            SeekTo::Start => libc::SEEK_SET,
            SeekTo::End => libc::SEEK_END,
            SeekTo::Data => libc::SEEK_DATA,
        };
        // SAFETY: lseek takes a plain integer fd that `self` owns and keeps open for the call;
        // it reads and writes no memory of ours.
        let r = unsafe { libc::lseek(self.as_raw_fd(), 0, whence) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Records that were overwritten before we read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The sequence number we expected next.
    pub expected_seq: u64,
    /// The sequence number of the record actually read next.
    pub next_seq: u64,
}

impl Gap {
    /// How many records were lost.
    pub fn lost(&self) -> u64 {
        self.next_seq.saturating_sub(self.expected_seq)
    }
}

/// What [`KmsgReader::next_event`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KmsgEvent {
    /// The next record.
    Record(KmsgRecord),
    /// Records were lost; the record after the gap comes next.
    Gap(Gap),
}

/// Counters kept by a reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Records returned.
    pub records: u64,
    /// Gaps reported, and the records lost in them.
    pub gaps: u64,
    pub lost: u64,
    /// `EPIPE` results (the kernel overwrote unread records).
    pub overruns: u64,
    /// Reads that were not a parseable record (skipped).
    pub malformed: u64,
    /// Records skipped because their sequence number was at or below the last one seen
    /// (already processed, see [`KmsgReader::resume_after`]).
    pub skipped: u64,
}

/// A `/dev/kmsg` reader over any [`KmsgSource`].
pub struct KmsgReader<S> {
    source: S,
    buf: Box<[u8]>,
    last_seq: Option<u64>,
    pending: Option<KmsgRecord>,
    stats: ReaderStats,
}

impl KmsgReader<File> {
    /// Opens `/dev/kmsg` read-only, non-blocking and close-on-exec, positioned at the oldest
    /// record (the kernel's default for a new open).
    pub fn open() -> Result<Self, KmsgError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(KMSG_PATH)
            .map_err(KmsgError::Open)?;
        Ok(Self::new(file))
    }
}

impl<S: KmsgSource> KmsgReader<S> {
    /// Wraps a source. For a real `/dev/kmsg` the file must be non-blocking.
    pub fn new(source: S) -> Self {
        KmsgReader {
            source,
            buf: vec![0u8; MAX_RECORD_BYTES].into_boxed_slice(),
            last_seq: None,
            pending: None,
            stats: ReaderStats::default(),
        }
    }

    /// Moves the read position and forgets the last sequence number, so records skipped on
    /// purpose are not reported as a gap.
    pub fn seek(&mut self, to: SeekTo) -> Result<(), KmsgError> {
        self.source.seek_to(to).map_err(KmsgError::Seek)?;
        self.last_seq = None;
        self.pending = None;
        Ok(())
    }

    /// Only records logged from now on will be read (`SEEK_END`).
    pub fn seek_to_end(&mut self) -> Result<(), KmsgError> {
        self.seek(SeekTo::End)
    }

    /// Read from the oldest record still in the buffer (`SEEK_SET`).
    pub fn seek_to_start(&mut self) -> Result<(), KmsgError> {
        self.seek(SeekTo::Start)
    }

    /// Read from the first record after the last `dmesg -C` (`SEEK_DATA`).
    pub fn seek_data(&mut self) -> Result<(), KmsgError> {
        self.seek(SeekTo::Data)
    }

    /// Continues after record `seq`, e.g. the [`last_seq`](Self::last_seq) saved by an earlier
    /// run: reads from the oldest record still in the buffer, silently skips every record up
    /// to and including `seq`, and reports a [`Gap`] if records after `seq` were already
    /// overwritten.
    pub fn resume_after(&mut self, seq: u64) -> Result<(), KmsgError> {
        self.seek(SeekTo::Start)?;
        self.last_seq = Some(seq);
        Ok(())
    }

    /// The sequence number of the last record returned (or given to `resume_after`).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The underlying source.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// The next record or gap; `Ok(None)` when there is nothing more for now (`EAGAIN`).
    /// Each call does at most one `read()` per record it skips, and never blocks on a
    /// non-blocking source.
    pub fn next_event(&mut self) -> Result<Option<KmsgEvent>, KmsgError> {
        if let Some(rec) = self.pending.take() {
            self.stats.records += 1;
            return Ok(Some(KmsgEvent::Record(rec)));
        }
        loop {
            let n = match self.source.read_record(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::BrokenPipe => {
                        // The position moved to the oldest record still there; the jump in
                        // sequence numbers of the next record tells how many were lost.
                        self.stats.overruns += 1;
                        continue;
                    }
                    _ => return Err(KmsgError::Read(e)),
                },
            };
            let Ok(rec) = parse_record(&self.buf[..n.min(self.buf.len())]) else {
                self.stats.malformed += 1;
                continue;
            };
            match self.last_seq {
                Some(last) if rec.seq <= last => {
                    self.stats.skipped += 1;
                    continue;
                }
                Some(last) if rec.seq > last.saturating_add(1) => {
                    let gap = Gap {
                        expected_seq: last + 1,
                        next_seq: rec.seq,
                    };
                    self.stats.gaps += 1;
                    self.stats.lost += gap.lost();
                    self.last_seq = Some(rec.seq);
                    self.pending = Some(rec);
                    return Ok(Some(KmsgEvent::Gap(gap)));
                }
                _ => {}
            }
            self.last_seq = Some(rec.seq);
            self.stats.records += 1;
            return Ok(Some(KmsgEvent::Record(rec)));
        }
    }
}

impl<S: AsRawFd> AsRawFd for KmsgReader<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.source.as_raw_fd()
    }
}

/// Errors from opening and reading the kernel log.
#[derive(Debug, thiserror::Error)]
pub enum KmsgError {
    /// `/dev/kmsg` could not be opened (missing, or no permission: reading needs
    /// `CAP_SYSLOG` when `kernel.dmesg_restrict=1`).
    #[error("cannot open {KMSG_PATH}: {0}")]
    Open(#[source] io::Error),
    /// `lseek` failed.
    #[error("cannot seek {KMSG_PATH}: {0}")]
    Seek(#[source] io::Error),
    /// `read` failed with something other than `EAGAIN`, `EINTR` or `EPIPE`.
    #[error("cannot read {KMSG_PATH}: {0}")]
    Read(#[source] io::Error),
    /// The descriptor could not be registered with the tokio reactor.
    #[error("cannot register {KMSG_PATH} with the async runtime: {0}")]
    Register(#[source] io::Error),
    /// Waiting for readiness failed.
    #[error("waiting for {KMSG_PATH} to become readable failed: {0}")]
    Poll(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    //! [`KmsgReader`] against a scripted source: EAGAIN, EPIPE, sequence jumps, resumption.
    use std::collections::VecDeque;
    use std::io;

    use super::{Gap, KmsgEvent, KmsgReader, KmsgSource, SeekTo};

    /// Replays reads; `seek_to(Start)` rewinds to the first scripted read.
    #[derive(Default)]
    struct Script {
        all: Vec<Step>,
        next: VecDeque<Step>,
        seeks: Vec<SeekTo>,
    }

    #[derive(Clone)]
    enum Step {
        Rec(String),
        Again,
        Pipe,
        Intr,
        Fail,
    }

    impl Script {
        fn new(steps: &[Step]) -> Self {
            Script {
                all: steps.to_vec(),
                next: steps.iter().cloned().collect(),
                seeks: Vec::new(),
            }
        }
    }

    fn rec(seq: u64, msg: &str) -> Step {
        Step::Rec(format!("6,{seq},{},-;{msg}\n", seq * 10))
    }

    impl KmsgSource for Script {
        fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.next.pop_front() {
                None | Some(Step::Again) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Pipe) => Err(io::Error::from_raw_os_error(libc::EPIPE)),
                Some(Step::Intr) => Err(io::Error::from_raw_os_error(libc::EINTR)),
                Some(Step::Fail) => Err(io::Error::from_raw_os_error(libc::EIO)),
                Some(Step::Rec(s)) => {
                    buf[..s.len()].copy_from_slice(s.as_bytes());
                    Ok(s.len())
                }
            }
        }

        fn seek_to(&mut self, to: SeekTo) -> io::Result<()> {
            self.seeks.push(to);
            if to == SeekTo::Start {
                self.next = self.all.iter().cloned().collect();
            }
            Ok(())
        }
    }

    fn seqs(r: &mut KmsgReader<Script>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(ev) = r.next_event().unwrap() {
            out.push(match ev {
                KmsgEvent::Record(rec) => format!("{}", rec.seq),
                KmsgEvent::Gap(g) => {
                    format!("gap {}..{} lost {}", g.expected_seq, g.next_seq, g.lost())
                }
            });
        }
        out
    }

    #[test]
    fn reads_until_eagain_then_continues_later() {
        let mut r = KmsgReader::new(Script::new(&[
            rec(1, "a"),
            rec(2, "b"),
            Step::Again,
            rec(3, "c"),
        ]));
        assert_eq!(seqs(&mut r), ["1", "2"]);
        assert_eq!(seqs(&mut r), ["3"]);
        assert_eq!(r.last_seq(), Some(3));
        assert!(r.next_event().unwrap().is_none());
        assert_eq!(r.stats().records, 3);
    }

    #[test]
    fn epipe_then_jump_reports_one_gap_with_the_lost_count() {
        let mut r = KmsgReader::new(Script::new(&[
            rec(10, "a"),
            rec(11, "b"),
            Step::Pipe,
            rec(42, "c"),
            rec(43, "d"),
        ]));
        assert_eq!(seqs(&mut r), ["10", "11", "gap 12..42 lost 30", "42", "43"]);
        let s = r.stats();
        assert_eq!((s.overruns, s.gaps, s.lost, s.records), (1, 1, 30, 4));
    }

    #[test]
    fn a_jump_without_epipe_is_also_a_gap() {
        let mut r = KmsgReader::new(Script::new(&[rec(5, "a"), rec(9, "b")]));
        assert_eq!(seqs(&mut r), ["5", "gap 6..9 lost 3", "9"]);
        assert_eq!(
            Gap {
                expected_seq: 6,
                next_seq: 9
            }
            .lost(),
            3
        );
    }

    #[test]
    fn resume_after_skips_processed_records_without_returning_them() {
        let steps = [rec(1, "a"), rec(2, "b"), rec(3, "c"), rec(4, "d")];
        let mut first = KmsgReader::new(Script::new(&steps));
        assert_eq!(seqs(&mut first), ["1", "2", "3", "4"]);
        // A later run (new open) continues after what was processed.
        let mut second = KmsgReader::new(Script::new(&steps));
        second.resume_after(2).unwrap();
        assert_eq!(second.get_ref().seeks, [SeekTo::Start]);
        assert_eq!(seqs(&mut second), ["3", "4"]);
        assert_eq!(second.stats().skipped, 2);
    }

    #[test]
    fn resume_after_a_record_already_overwritten_reports_the_gap() {
        let mut r = KmsgReader::new(Script::new(&[rec(100, "x"), rec(101, "y")]));
        r.resume_after(90).unwrap();
        assert_eq!(seqs(&mut r), ["gap 91..100 lost 9", "100", "101"]);
    }

    #[test]
    fn seeking_forgets_the_position_so_skipped_records_are_no_gap() {
        let mut r = KmsgReader::new(Script::new(&[rec(1, "a"), Step::Again, rec(50, "b")]));
        assert_eq!(seqs(&mut r), ["1"]);
        r.seek_to_end().unwrap();
        assert_eq!(seqs(&mut r), ["50"]);
        r.seek_data().unwrap();
        assert_eq!(r.get_ref().seeks, [SeekTo::End, SeekTo::Data]);
    }

    #[test]
    fn eintr_is_retried_malformed_reads_are_skipped_and_eio_is_an_error() {
        let mut r = KmsgReader::new(Script::new(&[
            Step::Intr,
            Step::Rec("garbage without header".into()),
            rec(7, "ok"),
            Step::Fail,
        ]));
        assert!(matches!(
            r.next_event().unwrap(),
            Some(KmsgEvent::Record(ref rec)) if rec.seq == 7 && rec.message == "ok"
        ));
        assert_eq!(r.stats().malformed, 1);
        assert!(matches!(r.next_event(), Err(super::KmsgError::Read(_))));
    }
}
