//! The kernel log through `syslog(2)` (`SYSLOG_ACTION_READ_ALL`), for where `/dev/kmsg` cannot be
//! opened: a container whose device cgroup does not allow the device (a hostPath mount of a
//! device node grants no access to it) still reads the log with `CAP_SYSLOG`, which the
//! DaemonSet grants.
//!
//! `READ_ALL` copies the whole buffer as text, one `<prio>[seconds.micros] message` line per
//! record, without sequence numbers. [`SyslogBuffer`] reads it at most every [`MIN_INTERVAL`],
//! finds the last line it already returned (by its timestamp and text), and hands out each new
//! line as a `/dev/kmsg`-format record, so the same parser and reader serve both. Its sequence
//! numbers are made up (one more for each line) and mean nothing across restarts, so the agent
//! does not resume or replay from them. A last line no longer in the buffer (overwritten
//! between two reads) makes the next number jump by one: the reader reports a gap of unknown
//! size (counted as one). It keeps no read position of the kernel's: a syslog
//! daemon reading `/proc/kmsg` loses nothing.
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::reader::{KmsgSource, SeekTo};

/// `syslog(2)` actions (include/linux/syslog.h).
const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;

/// Shortest time between two reads of the whole buffer.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Largest buffer read (the kernel's `log_buf_len` is at most 2 GiB; cloud kernels use
/// 128 KiB to a few MiB).
const MAX_BUFFER: usize = 32 << 20;

/// Reads the whole kernel log into a buffer; `syslog(2)` in the product, a script in tests.
pub type ReadAll = Box<dyn FnMut(&mut [u8]) -> io::Result<usize> + Send>;

/// One line of the buffer as identified between reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    ts_usec: u64,
    text_hash: u64,
}

/// The kernel log read through `syslog(2)`; see the module documentation.
pub struct SyslogBuffer {
    read_all: ReadAll,
    buf: Vec<u8>,
    queue: VecDeque<Vec<u8>>,
    last: Option<Mark>,
    next_seq: u64,
    last_read: Option<Instant>,
    min_interval: Duration,
}

impl SyslogBuffer {
    /// Sizes the buffer (`SYSLOG_ACTION_SIZE_BUFFER`) and checks that the log may be read.
    pub fn open() -> io::Result<Self> {
        // SAFETY: SIZE_BUFFER reads no memory of ours (null buffer, length 0).
        let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut s = Self::with_reader(size as usize, Box::new(read_all));
        let SyslogBuffer { read_all, buf, .. } = &mut s;
        read_all(buf)?;
        Ok(s)
    }

    /// A buffer of `size` bytes read by `read_all`.
    pub fn with_reader(size: usize, read_all: ReadAll) -> Self {
        Self {
            read_all,
            buf: vec![0; size.clamp(4096, MAX_BUFFER)],
            queue: VecDeque::new(),
            last: None,
            next_seq: 1,
            last_read: None,
            min_interval: MIN_INTERVAL,
        }
    }

    /// Reads the buffer (unless read less than [`MIN_INTERVAL`] ago) and queues its new lines.
    fn refill(&mut self) -> io::Result<()> {
        if self
            .last_read
            .is_some_and(|t| t.elapsed() < self.min_interval)
        {
            return Ok(());
        }
        self.last_read = Some(Instant::now());
        let n = (self.read_all)(&mut self.buf)?.min(self.buf.len());
        let lines = parse(&self.buf[..n]);
        let start = match self.last {
            None => 0,
            Some(last) => match lines.iter().rposition(|l| l.same(&last)) {
                Some(i) => i + 1,
                // Our last line was overwritten: everything is new, after a gap.
                None => {
                    self.next_seq += 1;
                    0
                }
            },
        };
        for l in &lines[start..] {
            self.queue.push_back(l.record(self.next_seq));
            self.next_seq += 1;
            self.last = Some(Mark {
                ts_usec: l.ts_usec,
                text_hash: l.text_hash,
            });
        }
        Ok(())
    }
}

impl KmsgSource for SyslogBuffer {
    fn read_record(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.queue.is_empty() {
            self.refill()?;
        }
        let Some(rec) = self.queue.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = rec.len().min(buf.len());
        buf[..n].copy_from_slice(&rec[..n]);
        Ok(n)
    }

    fn seek_to(&mut self, to: SeekTo) -> io::Result<()> {
        self.queue.clear();
        self.last = None;
        self.last_read = None;
        if to == SeekTo::End {
            // Number the lines there now, and hand none of them out.
            self.refill()?;
            self.queue.clear();
        }
        Ok(())
    }
}

fn read_all(buf: &mut [u8]) -> io::Result<usize> {
    let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `len` bytes into `buf`, which is valid for writes of
    // `buf.len() >= len` bytes for the duration of the call.
    let n = unsafe { libc::klogctl(SYSLOG_ACTION_READ_ALL, buf.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One line of `READ_ALL` output.
#[derive(Debug)]
struct Line<'a> {
    prio: u16,
    ts_usec: u64,
    text: &'a [u8],
    text_hash: u64,
}

impl Line<'_> {
    fn same(&self, m: &Mark) -> bool {
        self.ts_usec == m.ts_usec && self.text_hash == m.text_hash
    }

    /// The line as a `/dev/kmsg` record: `prio,seq,ts_usec,-;text`, backslashes escaped (the
    /// record parser decodes `\xNN`).
    fn record(&self, seq: u64) -> Vec<u8> {
        let mut r = format!("{},{seq},{},-;", self.prio, self.ts_usec).into_bytes();
        for &b in self.text {
            if b == b'\\' {
                r.extend_from_slice(b"\\x5c");
            } else {
                r.push(b);
            }
        }
        r
    }
}

/// The buffer's lines; lines without the `<prio>[time]` prefix (no `printk.time`, or cut by
/// the buffer's start) are skipped.
fn parse(text: &[u8]) -> Vec<Line<'_>> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

/// `<6>[  123.456789] text`, with an optional caller id (`[    T1] `) after the time.
fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let rest = line.strip_prefix(b"<")?;
    let gt = rest.iter().position(|&b| b == b'>')?;
    let prio: u16 = std::str::from_utf8(&rest[..gt]).ok()?.parse().ok()?;
    let rest = rest[gt + 1..].strip_prefix(b"[")?;
    let close = rest.iter().position(|&b| b == b']')?;
    let ts = std::str::from_utf8(&rest[..close]).ok()?.trim();
    let (secs, micros) = ts.split_once('.')?;
    let ts_usec = secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?;
    let mut text = &rest[close + 1..];
    if let Some(after) = caller_id(text) {
        text = after;
    }
    let text = text.strip_prefix(b" ").unwrap_or(text);
    Some(Line {
        prio,
        ts_usec,
        text,
        text_hash: fnv1a(text),
    })
}

/// The text after a `[ T123]`/`[ C1]` caller id (`CONFIG_PRINTK_CALLER`), if there is one.
fn caller_id(text: &[u8]) -> Option<&[u8]> {
    let inner = text.strip_prefix(b"[")?;
    let close = inner.iter().position(|&b| b == b']')?;
    let id = std::str::from_utf8(&inner[..close]).ok()?.trim();
    let digits = id.strip_prefix('T').or_else(|| id.strip_prefix('C'))?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| &inner[close + 1..])
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kmsg::{KmsgEvent, KmsgReader};
    use std::sync::{Arc, Mutex};

    /// A buffer whose text the test sets.
    fn scripted() -> (KmsgReader<SyslogBuffer>, Arc<Mutex<String>>) {
        let text = Arc::new(Mutex::new(String::new()));
        let t = Arc::clone(&text);
        let read: ReadAll = Box::new(move |buf: &mut [u8]| {
            let s = t.lock().unwrap();
            let n = s.len().min(buf.len());
            buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            Ok(n)
        });
        let mut b = SyslogBuffer::with_reader(1 << 16, read);
        b.min_interval = Duration::ZERO;
        (KmsgReader::new(b), text)
    }

    fn next(r: &mut KmsgReader<SyslogBuffer>) -> Option<KmsgEvent> {
        r.next_event().unwrap()
    }

    fn message(ev: Option<KmsgEvent>) -> String {
        match ev {
            Some(KmsgEvent::Record(r)) => r.message,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn lines_become_records_once_each() {
        let (mut r, text) = scripted();
        *text.lock().unwrap() = "<6>[    1.000001] first\n<4>[    2.500000] second \\ x\n".into();
        assert_eq!(message(next(&mut r)), "first");
        let rec = match next(&mut r) {
            Some(KmsgEvent::Record(rec)) => rec,
            other => panic!("{other:?}"),
        };
        assert_eq!((rec.level, rec.seq, rec.ts_usec), (4, 2, 2_500_000));
        assert_eq!(rec.message, "second \\ x");
        assert_eq!(next(&mut r), None, "nothing new");
        text.lock()
            .unwrap()
            .push_str("<3>[    2.500000][    T42] third, same time\n");
        let rec = match next(&mut r) {
            Some(KmsgEvent::Record(rec)) => rec,
            other => panic!("{other:?}"),
        };
        assert_eq!(rec.message, "third, same time");
        assert_eq!(rec.seq, 3, "one more for each line");
    }

    #[test]
    fn an_overwritten_last_line_is_a_gap_and_end_skips_the_past() {
        let (mut r, text) = scripted();
        *text.lock().unwrap() = "<6>[    1.000000] a\n<6>[    2.000000] b\n".into();
        r.seek_to_end().unwrap();
        assert_eq!(next(&mut r), None, "only lines logged from now on");
        text.lock().unwrap().push_str("<6>[    3.000000] c\n");
        assert_eq!(message(next(&mut r)), "c");
        // The buffer wrapped: `c` is gone.
        *text.lock().unwrap() = "<6>[    5.000000] e\n<6>[    6.000000] f\n".into();
        match next(&mut r) {
            Some(KmsgEvent::Gap(g)) => assert_eq!(g.lost(), 1, "{g:?}"),
            other => panic!("want a gap: {other:?}"),
        }
        assert_eq!(message(next(&mut r)), "e");
        assert_eq!(message(next(&mut r)), "f");
    }

    #[test]
    fn garbage_is_skipped_without_panic() {
        let (mut r, text) = scripted();
        *text.lock().unwrap() =
            "no prefix\n<x>[1.0] bad prio\n<6>[nan] bad time\n<6>[ 5.000001] ok\n\
                                 <6>[ 6.1] \u{0}\u{1}\n<6"
                .into();
        assert_eq!(message(next(&mut r)), "ok");
        assert!(matches!(next(&mut r), Some(KmsgEvent::Record(_))));
        assert_eq!(next(&mut r), None);
    }
}
