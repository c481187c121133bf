//! [`KmsgReader`] driven by tokio: waits for `/dev/kmsg` to become readable (epoll, through
//! [`AsyncFd`]) instead of polling or sleeping.
use std::fs::File;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::reader::{KmsgError, KmsgEvent, KmsgReader, ReaderStats};

/// An async `/dev/kmsg` reader. Build the [`KmsgReader`] (open, seek, `resume_after`) first,
/// then wrap it; the file descriptor must be non-blocking, as [`KmsgReader::open`] makes it.
pub struct AsyncKmsgReader {
    fd: AsyncFd<KmsgReader<File>>,
}

impl AsyncKmsgReader {
    /// Registers the reader's file with the current tokio runtime's reactor (readable interest
    /// only). Must be called inside a runtime with I/O enabled.
    pub fn new(reader: KmsgReader<File>) -> Result<Self, KmsgError> {
        // SAFETY: `reader` owns its `File` and never replaces it, so `as_raw_fd()` returns the same
        // open descriptor until the `AsyncFd` is dropped. This type hands out only shared access
        // to the reader (`get_ref`), so nobody can swap or close the file while it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) }
            .map_err(|e| KmsgError::Register(e.into()))?;
        Ok(AsyncKmsgReader { fd })
    }

    /// Opens `/dev/kmsg` positioned after the newest record and registers it.
    pub fn open_at_end() -> Result<Self, KmsgError> {
        let mut reader = KmsgReader::open()?;
        reader.seek_to_end()?;
        Self::new(reader)
    }

    /// The next record or gap, waiting as long as needed. Each wake-up reads until the kernel
    /// says `EAGAIN`, then waits for the next readiness edge.
    pub async fn next_event(&mut self) -> Result<KmsgEvent, KmsgError> {
        loop {
            let mut guard = self.fd.readable_mut().await.map_err(KmsgError::Poll)?;
            match guard.get_inner_mut().next_event()? {
                Some(event) => return Ok(event),
                None => guard.clear_ready(),
            }
        }
    }

    /// The next record or gap if one can be read now, without waiting (`Ok(None)` otherwise).
    /// For a caller that knows a record is due (a victim waits for its report): the kernel
    /// stores a record before it wakes readers, which can be a scheduler tick later.
    pub fn try_next_event(&mut self) -> Result<Option<KmsgEvent>, KmsgError> {
        self.fd.get_mut().next_event()
    }

    /// The wrapped reader (last sequence number, counters).
    pub fn get_ref(&self) -> &KmsgReader<File> {
        self.fd.get_ref()
    }

    /// Sequence number of the last record returned.
    pub fn last_seq(&self) -> Option<u64> {
        self.fd.get_ref().last_seq()
    }

    /// The reader's counters.
    pub fn stats(&self) -> ReaderStats {
        self.fd.get_ref().stats()
    }

    /// Deregisters and returns the reader.
    pub fn into_inner(self) -> KmsgReader<File> {
        self.fd.into_inner()
    }
}
