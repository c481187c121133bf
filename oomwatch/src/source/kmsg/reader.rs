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
use super::KmsgError;

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
