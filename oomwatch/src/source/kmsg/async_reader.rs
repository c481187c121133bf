//! [`KmsgReader`] driven by tokio: waits for `/dev/kmsg` to become readable (epoll, through
//! [`AsyncFd`]) instead of polling or sleeping; or, where only `syslog(2)` may read the log
//! ([`SyslogBuffer`]), looks at it every [`SYSLOG_POLL`].
use std::fs::File;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::reader::{KmsgError, KmsgEvent, KmsgReader, ReaderStats};
use super::syslog::SyslogBuffer;

/// How often the log is read through `syslog(2)` while nothing waits for it (a victim waiting
/// for its report makes the agent look every millisecond, throttled to
/// [`super::syslog::MIN_INTERVAL`]).
pub const SYSLOG_POLL: Duration = Duration::from_millis(250);

/// An async kernel-log reader. Build the [`KmsgReader`] (open, seek, `resume_after`) first,
/// then wrap it; a `/dev/kmsg` file must be non-blocking, as [`KmsgReader::open`] makes it.
pub struct AsyncKmsgReader {
    inner: Inner,
}

enum Inner {
    Device(AsyncFd<KmsgReader<File>>),
    Syslog(KmsgReader<SyslogBuffer>),
}

impl AsyncKmsgReader {
    /// Registers the reader's file with the current tokio runtime's reactor (readable interest
    /// only). Must be called inside a runtime with I/O enabled.
    pub fn new(reader: KmsgReader<File>) -> Result<Self, KmsgError> {
        // SAFETY: `reader` owns its `File` and never replaces it, so `as_raw_fd()` returns the same
        // open descriptor until the `AsyncFd` is dropped. This type hands out no access to the
        // reader's file, so nobody can swap or close it while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
            .map_err(|e| KmsgError::Register(e.into()))?;
        Ok(AsyncKmsgReader {
            inner: Inner::Device(fd),
        })
    }

    /// The log read through `syslog(2)`, polled.
    pub fn syslog(reader: KmsgReader<SyslogBuffer>) -> Self {
        AsyncKmsgReader {
            inner: Inner::Syslog(reader),
        }
    }

    /// Opens `/dev/kmsg` positioned after the newest record and registers it.
    pub fn open_at_end() -> Result<Self, KmsgError> {
        let mut reader = KmsgReader::open()?;
        reader.seek_to_end()?;
        Self::new(reader)
    }

    /// Whether the log is read through `syslog(2)`.
    pub fn is_syslog(&self) -> bool {
        matches!(self.inner, Inner::Syslog(_))
    }

    /// The next record or gap, waiting as long as needed. Each wake-up reads until the kernel
    /// says `EAGAIN`, then waits for the next readiness edge (or the next poll).
    pub async fn next_event(&mut self) -> Result<KmsgEvent, KmsgError> {
        loop {
            match &mut self.inner {
                Inner::Device(fd) => {
                    let mut guard = fd.readable_mut().await.map_err(KmsgError::Poll)?;
                    match guard.get_inner_mut().next_event()? {
                        Some(event) => return Ok(event),
                        None => guard.clear_ready(),
                    }
                }
                Inner::Syslog(r) => match r.next_event()? {
                    Some(event) => return Ok(event),
                    None => tokio::time::sleep(SYSLOG_POLL).await,
                },
            }
        }
    }

    /// The next record or gap if one can be read now, without waiting (`Ok(None)` otherwise).
    /// For a caller that knows a record is due (a victim waits for its report): the kernel
    /// stores a record before it wakes readers, which can be a scheduler tick later.
    pub fn try_next_event(&mut self) -> Result<Option<KmsgEvent>, KmsgError> {
        match &mut self.inner {
            Inner::Device(fd) => fd.get_mut().next_event(),
            Inner::Syslog(r) => r.next_event(),
        }
    }

    /// Sequence number of the last record returned.
    pub fn last_seq(&self) -> Option<u64> {
        match &self.inner {
            Inner::Device(fd) => fd.get_ref().last_seq(),
            Inner::Syslog(r) => r.last_seq(),
        }
    }

    /// The reader's counters.
    pub fn stats(&self) -> ReaderStats {
        match &self.inner {
            Inner::Device(fd) => fd.get_ref().stats(),
            Inner::Syslog(r) => r.stats(),
        }
    }
}
