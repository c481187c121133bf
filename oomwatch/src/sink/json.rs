//! JSON lines: one object per victim, one line each, flushed at once (docs/events.md).
//!
//! The lines go through a bounded queue to a writer thread of their own, so a stalled reader
//! of stdout (a full log pipe, a stopped collector) never stops the event loop, and with it
//! the HTTP server and the other sinks: the event loop only queues. When the queue is full a
//! line is dropped and counted (`oomwatch_stdout_lines_dropped_total`, one warning a minute);
//! the event is still counted in the metrics and kept for `/` and `/events`. A write error
//! (stdout closed) is returned by the next write, which stops the agent as before.
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::proto::{MetricFamily, MetricType};

use crate::record::OomEvent;
use crate::sink::metrics::prom::{counter, family, gauge};

/// Lines queued for stdout at most (a few MiB of events).
pub const QUEUE_LINES: usize = 1024;

/// What the writer thread and the event loop share.
#[derive(Debug, Default)]
pub struct WriterStats {
    queued: AtomicU64,
    /// Lines stdout has taken since start (in queue order).
    written: AtomicU64,
    /// Woken after each line stdout has taken (one stored permit when nobody waits).
    wrote: tokio::sync::Notify,
    dropped: AtomicU64,
    failed: Mutex<Option<io::Error>>,
}

impl WriterStats {
    /// Completes once stdout has taken a line since the last time it completed.
    pub async fn wrote(&self) {
        self.wrote.notified().await
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The `oomwatch_stdout_*` families, for `Metrics::add_collector`.
    pub fn families(&self) -> Vec<MetricFamily> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        vec![
            family(
                "oomwatch_stdout_lines_dropped_total",
                "JSON lines dropped because stdout did not take them and 1024 were already \
                 queued (the events are still in the metrics and /events).",
                MetricType::COUNTER,
                vec![counter(&[], get(&self.dropped))],
            ),
            family(
                "oomwatch_stdout_lines_queued",
                "JSON lines waiting for stdout to take them.",
                MetricType::GAUGE,
                vec![gauge(&[], get(&self.queued))],
            ),
        ]
    }
}

/// What the writer thread runs once stdout has taken a line, before it counts the line as
/// written (the agent saves the kernel-log position there).
pub type AfterWrite = Box<dyn FnOnce() + Send>;

/// Writes events as JSON lines, through a bounded queue to a writer thread.
pub struct JsonLines {
    tx: Option<SyncSender<(String, Option<AfterWrite>)>>,
    /// Lines queued since start: the number of the next one is this plus 1.
    sent: u64,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
    warned: Option<Instant>,
}

impl JsonLines {
    /// Starts the writer thread on `out`, with at most `capacity` lines queued. The thread
    /// runs `prelude` first (the agent drops the thread's capabilities there) and the call
    /// returns its error.
    pub fn spawn<W: Write + Send + 'static>(
        mut out: W,
        capacity: usize,
        prelude: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<(String, Option<AfterWrite>)>(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let s = Arc::clone(&stats);
        let thread = crate::sys::thread::spawn_after("oomwatch-stdout", prelude, move || {
            for (line, after) in rx {
                let r = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                // Release: what counts the line as taken follows its write (and `after`).
                if r.is_ok() {
                    if let Some(after) = after {
                        after();
                    }
                    s.written.fetch_add(1, Ordering::Release);
                    s.wrote.notify_one();
                }
                s.queued.fetch_sub(1, Ordering::Release);
                if let Err(e) = r {
                    *s.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
            }
        })?;
        Ok(Self {
            tx: Some(tx),
            sent: 0,
            thread: Some(thread),
            stats,
            warned: None,
        })
    }

    /// How many of the lines queued so far stdout has taken: line `n` (as [`Self::write`]
    /// numbers it) is out once this is `n` or more.
    pub fn written(&self) -> u64 {
        self.stats.written.load(Ordering::Acquire)
    }

    /// The counters, for the metrics.
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// Queues one line (never waits): its number among the lines queued (see
    /// [`Self::written`]), or `None` when a full queue dropped it (counted).
    pub fn write(&mut self, ev: &OomEvent) -> io::Result<Option<u64>> {
        self.write_then(ev, None)
    }

    /// [`Self::write`], and `after` runs on the writer thread once stdout has taken the line
    /// (never, when the line is dropped or stdout fails).
    pub fn write_then(
        &mut self,
        ev: &OomEvent,
        after: Option<AfterWrite>,
    ) -> io::Result<Option<u64>> {
        let mut line = ev.to_json_line();
        line.push('\n');
        self.send(line, after)
    }

    /// Queues one line of other JSON (the kill-lifecycle records).
    pub fn write_line(&mut self, json: &str) -> io::Result<()> {
        self.send(format!("{json}\n"), None).map(|_| ())
    }

    fn send(&mut self, line: String, after: Option<AfterWrite>) -> io::Result<Option<u64>> {
        if let Some(e) = self
            .stats
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        let Some(tx) = &self.tx else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "writer closed"));
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send((line, after)) {
            Ok(()) => {
                self.sent += 1;
                Ok(Some(self.sent))
            }
            Err(TrySendError::Full(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if self
                    .warned
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.warned = Some(Instant::now());
                    tracing::warn!(
                        dropped = self.stats.dropped(),
                        "stdout does not take the JSON lines ({QUEUE_LINES} queued): dropping \
                         lines; counted in oomwatch_stdout_lines_dropped_total"
                    );
                }
                Ok(None)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                let e = self
                    .stats
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                Err(e.unwrap_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "writer gone")))
            }
        }
    }

    /// Lets the writer finish what is queued, waiting at most `within` (stdout may be stalled).
    pub fn close(&mut self, within: Duration) {
        self.tx = None;
        let end = Instant::now() + within;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.thread.take().filter(|t| t.is_finished()) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// A writer shared with the test; blocks while `stall` is held.
    #[derive(Clone, Default)]
    struct Shared {
        buf: Arc<Mutex<Vec<u8>>>,
        stall: Arc<Mutex<()>>,
    }

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _wait = self.stall.lock().unwrap();
            self.buf.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn event() -> OomEvent {
        OomEvent {
            comm: Some("a\nb".into()),
            ..OomEvent::new(1, 1, SystemTime::UNIX_EPOCH, "h".into())
        }
    }

    #[test]
    fn one_line_per_event() {
        let out = Shared::default();
        let mut w = JsonLines::spawn(out.clone(), 8, || Ok(())).unwrap();
        w.write(&event()).unwrap();
        w.write(&event()).unwrap();
        w.close(Duration::from_secs(5));
        let text = String::from_utf8(out.buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2, "a newline in comm is escaped");
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["comm"], "a\nb");
        }
    }

    #[test]
    fn a_stalled_stdout_never_blocks_and_drops_are_counted() {
        let out = Shared::default();
        let stall = out.stall.lock().unwrap();
        let mut w = JsonLines::spawn(out.clone(), 4, || Ok(())).unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            w.write(&event()).unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        // 4 queued, 1 taken by the stalled thread, the rest dropped.
        assert!(w.stats().dropped() >= 95, "{}", w.stats().dropped());
        drop(stall);
        w.close(Duration::from_secs(5));
        let n = out
            .buf
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        assert_eq!(n as u64 + w.stats().dropped(), 100);
    }

    #[test]
    fn a_write_error_is_returned() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = JsonLines::spawn(Closed, 4, || Ok(())).unwrap();
        w.write_line("{}").unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if w.write_line("{}").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the write error was never returned");
    }
}
