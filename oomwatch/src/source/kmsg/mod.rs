//! Kernel log (`/dev/kmsg`) reader and OOM report parser.
//!
//! Three layers, each usable alone:
//!
//! - [`record`]: one `/dev/kmsg` record (`prio,seq,ts_usec,flags;message` plus `KEY=value`
//!   dictionary lines) parsed into a [`KmsgRecord`], `\xNN` escapes decoded.
//! - [`reader`]: [`KmsgReader`] reads records one per `read()` from `/dev/kmsg` (or any
//!   [`KmsgSource`]), reports records the kernel overwrote before we read them as a [`Gap`],
//!   and can resume after a saved sequence number; [`AsyncKmsgReader`] waits for records on a
//!   tokio reactor (epoll), never polling.
//! - [`oom`]: [`OomReportParser`] turns the messages of the kernel's OOM report into typed
//!   [`OomItem`]s (`Invoked`, `TaskDump`, `Constraint`, `Killed`, `Reaped`, …), for the formats
//!   of Linux 2.6.32 to 6.18.
//!
//! ```ignore
//! let mut kmsg = AsyncKmsgReader::open_at_end()?;
//! let mut parser = OomReportParser::new();
//! loop {
//!     match kmsg.next_event().await? {
//!         KmsgEvent::Record(rec) => {
//!             for item in parser.push_record(&rec) { /* … */ }
//!         }
//!         KmsgEvent::Gap(gap) => tracing::warn!(lost = gap.lost(), "kernel log records lost"),
//!     }
//! }
//! ```
use std::io;

pub mod async_reader;
mod dump;
mod lines;
pub mod meminfo;
pub mod oom;
pub mod reader;
pub mod record;
pub mod report;

#[cfg(test)]
pub(crate) mod fixture_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod oom_tests;
#[cfg(test)]
mod reader_tests;

pub use async_reader::AsyncKmsgReader;
pub use dump::{MAX_DUMP_ROWS, MAX_NAME_BYTES};
pub use oom::{
    Constraint, ConstraintKind, DumpRow, Invoked, Killed, OomItem, OomReportParser, ParserStats,
    Reaped, TaskDump, MAX_FRAGMENT_GAP, MAX_LINE_BYTES,
};
pub use reader::{Gap, KmsgEvent, KmsgReader, KmsgSource, ReaderStats, SeekTo, KMSG_PATH};
pub use record::{parse_record, KmsgRecord, RecordError, MAX_RECORD_BYTES};

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
