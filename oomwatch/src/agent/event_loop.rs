//! The event loop: ring-buffer records become events (correlated, then enriched and written by
//! the sink), the kernel log feeds recovery and the OOM context, deadlines flush what waits.
use std::io;
use std::time::Instant;

use aya::maps::{MapData, RingBuf};
use aya::Ebpf;
use tokio::io::unix::{AsyncFd, AsyncFdReadyMutGuard};
use tokio::signal::unix::Signal;
use tokio::sync::oneshot;

use super::error::RunError;
use super::sink::{Sink, KMSG_POLL};
use crate::correlate::Correlator;
use crate::record::{OomEvent, ProbeId};
use crate::server::ServerError;
use crate::source::kmsg::{AsyncKmsgReader, KmsgError, KmsgEvent};
use crate::source::probe::candidates as candidates_probe;
use crate::source::probe::ringbuf::{self, Record};
use crate::source::probe::sigkills as sigkills_probe;
use crate::source::probe::stacks as stacks_probe;
use crate::sys::clock::monotonic_ns;
use oomwatch_common::RecordKind;

/// The aya-log reader of the eBPF programs' own log.
pub type EbpfLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Everything the loop reads from and writes to.
pub struct Agent {
    pub(super) correlator: Correlator,
    pub(super) sink: Sink,
    /// The kernel log, while readable.
    pub(super) kmsg: Option<AsyncKmsgReader>,
    /// Whether the kernel log gives the OOM context (no `oom_kill_process` probe, or the
    /// candidates and domain memory the probes cannot read).
    pub(super) kmsg_context: bool,
    pub(super) ring: AsyncFd<RingBuf<MapData>>,
    pub(super) scored_ring: AsyncFd<RingBuf<MapData>>,
    /// The triggers' stacks (`probe::stacks`).
    pub(super) stack_ring: AsyncFd<RingBuf<MapData>>,
    /// Every SIGKILL to a task in a memory cgroup (`probe::sigkills`).
    pub(super) sigkill_ring: AsyncFd<RingBuf<MapData>>,
    pub(super) log_fd: Option<AsyncFd<EbpfLog>>,
    pub(super) sigint: Signal,
    pub(super) sigterm: Signal,
    /// Kept until the end: dropping them detaches the probes and stops the server.
    pub(super) shutdown: Shutdown,
    /// Test knob: rows whose records are dropped right after decoding.
    pub(super) drop_rows: Vec<ProbeId>,
    /// Test knob: every victim record's `KILL_SENT` cleared (its SIGKILL unseen).
    pub(super) miss_kill_signals: bool,
    /// The attached `oom_kill_process` row (the one its records come from).
    pub(super) oom_row: ProbeId,
}

impl Agent {
    /// Handles records until a signal or a fatal error; returns the signal's name.
    pub async fn run(&mut self) -> Result<&'static str, RunError> {
        loop {
            self.sink
                .metrics
                .set_marks_without_kill(self.correlator.marks_without_kill());
            let deadline = self.next_deadline();
            let stdout = self.sink.out.stats();
            let waits_for_stdout = self.sink.waits_for_stdout();
            tokio::select! {
                _ = self.sigint.recv() => return Ok("SIGINT"),
                _ = self.sigterm.recv() => return Ok("SIGTERM"),
                guard = self.ring.readable_mut() => {
                    let mut batch = drain_ring(guard)?;
                    self.drop_knob(&mut batch);
                    self.on_records(batch)?;
                }
                guard = self.scored_ring.readable_mut() => {
                    let mut g = guard.map_err(RunError::RingBuf)?;
                    g.clear_ready();
                    let (correlator, drop) = (&mut self.correlator, &self.drop_rows);
                    candidates_probe::drain(g.get_inner_mut(), |r| {
                        if !candidates_probe::dropped(drop, &r) {
                            correlator.push_candidate(r);
                        }
                    });
                }
                guard = self.stack_ring.readable_mut() => {
                    let mut g = guard.map_err(RunError::RingBuf)?;
                    g.clear_ready();
                    let stacks = &mut self.sink.stacks;
                    stacks_probe::drain(g.get_inner_mut(), |r| stacks.push(&r));
                }
                guard = self.sigkill_ring.readable_mut() => {
                    let mut g = guard.map_err(RunError::RingBuf)?;
                    g.clear_ready();
                    let mut recs = Vec::new();
                    sigkills_probe::drain(g.get_inner_mut(), |r| recs.push(r));
                    self.sink.push_sigkills(recs)?;
                }
                _ = sleep_until_opt(deadline) => self.on_deadline()?,
                // A kill's line went out: the position counts it at once.
                _ = stdout.wrote(), if waits_for_stdout => self.sink.follow_stdout(),
                ev = next_kmsg(&mut self.kmsg) => {
                    if self.on_kmsg(ev)? {
                        self.on_kill_line()?;
                    }
                }
                guard = readable_opt(&mut self.log_fd) => {
                    if let Some(Ok(mut g)) = guard {
                        g.clear_ready();
                        g.get_inner_mut().flush();
                    }
                }
            }
        }
    }

    /// The earliest of: a victim's correlation window, recovery's give-up time, a lifecycle
    /// deadline, and (while a victim waits for its kernel-log report) the next look at the log,
    /// every millisecond rather than at the kernel's wake-up (which comes after the console
    /// print).
    fn next_deadline(&self) -> Option<Instant> {
        let kmsg_poll =
            (self.kmsg.is_some() && self.correlator.has_held()).then(|| Instant::now() + KMSG_POLL);
        [
            self.correlator.next_deadline(),
            self.sink.recovery_deadline(),
            self.sink.lifecycle.next_deadline(),
            self.sink.sigkills.next_deadline(),
            kmsg_poll,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Victim records make events; exits, reaper steps and userspace kills go to the lifecycle
    /// tracker, after the events they may follow.
    fn on_records(&mut self, batch: Vec<Record>) -> Result<(), RunError> {
        // The scored tasks and the trigger's stack of these kills were submitted before them:
        // read them after.
        self.drain_scored();
        let stacks = &mut self.sink.stacks;
        stacks_probe::drain(self.stack_ring.get_mut(), |r| stacks.push(&r));
        let now = Instant::now();
        if let Some(first) = batch.first() {
            let age_us = monotonic_ns().saturating_sub(first.ktime_ns()) / 1000;
            tracing::trace!(records = batch.len(), age_us, "ring buffer drained");
        }
        let (victims, others): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(Record::is_victim_record);
        let evs: Vec<OomEvent> = victims
            .into_iter()
            .flat_map(|rec| self.correlator.push(rec, now))
            .collect();
        self.sink.emit(evs)?;
        self.confirm_logged_kills()?;
        // A kill line read here is checked against the marks judged no kill; its own records,
        // if committed after the ring was read above, come with their wake-up.
        if self.correlator.has_held() && self.drain_kmsg_now()? {
            self.confirm_logged_kills()?;
        }
        // The SIGKILLs before these exits: a container init's end needs its SIGKILL first.
        let mut recs = Vec::new();
        sigkills_probe::drain(self.sigkill_ring.get_mut(), |r| recs.push(r));
        self.sink.push_sigkills(recs)?;
        for r in &others {
            if let Record::Lifecycle(l) = r {
                if RecordKind::from_u32(l.kind) == Some(RecordKind::VictimExit) {
                    let lines = self.sink.sigkills.on_exit(l.pid, l.ktime_ns);
                    self.sink.write_lines(lines)?;
                }
            }
        }
        let outs = others
            .iter()
            .flat_map(|r| self.sink.lifecycle.push(r, now))
            .collect();
        self.sink.emit_lifecycle(outs)
    }

    /// Reads what the events ring holds without waiting for its wake-up, where the kernel
    /// must have committed records (`at`): before a deadline gives up on a victim's partner
    /// record, and when a kill line waits for its live record. A record committed but not yet
    /// announced (the kernel wakes readers from an irq_work, later on a slow or busy CPU) is
    /// then merged rather than written as a second, partial event of the same kill, or
    /// replayed from the line. Found records are logged (debug): their wake-up was late, or
    /// never came.
    fn drain_ring_now(&mut self, at: &'static str) -> Result<(), RunError> {
        let mut batch = read_all(self.ring.get_mut());
        if batch.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            records = batch.len(),
            at,
            "records found in the ring buffer before their wake-up"
        );
        self.drop_knob(&mut batch);
        self.on_records(batch)
    }

    /// Reads every record waiting in the scored-tasks ring into the correlator.
    pub(super) fn drain_scored(&mut self) {
        let (correlator, drop) = (&mut self.correlator, &self.drop_rows);
        candidates_probe::drain(self.scored_ring.get_mut(), |r| {
            if !candidates_probe::dropped(drop, &r) {
                correlator.push_candidate(r);
            }
        });
    }

    /// Test knobs (`--drop-probe-records`, `--miss-kill-signals`): forgets the records of the
    /// named rows, as if their hooks fired nowhere useful, and the SIGKILL seen before each
    /// mark. Off in the product build.
    pub(super) fn drop_knob(&self, batch: &mut Vec<Record>) {
        if self.miss_kill_signals {
            for r in batch.iter_mut() {
                if let Record::Victim(v) = r {
                    v.present &= !oomwatch_common::field::KILL_SENT;
                }
            }
        }
        if !self.drop_rows.is_empty() {
            batch.retain(|r| {
                r.row(self.oom_row)
                    .is_none_or(|p| !self.drop_rows.contains(&p))
            });
        }
    }

    fn on_deadline(&mut self) -> Result<(), RunError> {
        // Only a partner-record wait that ends now looks at the ring unasked (the other
        // deadlines, the 1 ms kernel-log look among them, leave it to its wake-up).
        if self.correlator.partner_wait_due(Instant::now()) {
            self.drain_ring_now("a partner-record wait's end")?;
        }
        if self.drain_kmsg_now()? {
            self.on_kill_line()?;
        }
        let now = Instant::now();
        let evs = self.correlator.flush_expired(now);
        self.sink.emit(evs)?;
        // A mark just judged no kill whose line waits is proved a kill before that line is
        // given up on.
        self.confirm_logged_kills()?;
        let replayed = self.sink.recovery.as_mut().map(|r| r.due(now));
        self.sink.emit(replayed.unwrap_or_default())?;
        let lines = self.sink.sigkills.due(now);
        self.sink.write_lines(lines)?;
        let outs = self.sink.lifecycle.due(now);
        self.sink.emit_lifecycle(outs)
    }

    /// One kernel-log event: a record feeds recovery and, when the log is the context source,
    /// the correlator; a gap is logged; an error ends reading the log. Returns whether it was
    /// a kill line that waits for its live record.
    fn on_kmsg(&mut self, ev: Result<KmsgEvent, KmsgError>) -> Result<bool, RunError> {
        let mut line_waits = false;
        match ev {
            Ok(KmsgEvent::Record(rec)) => {
                let now = Instant::now();
                line_waits = self
                    .sink
                    .recovery
                    .as_mut()
                    .is_some_and(|r| r.on_record(&rec, now));
                if self.kmsg_context {
                    let evs = self.correlator.push_kmsg(&rec, now);
                    self.sink.emit(evs)?;
                }
            }
            Ok(KmsgEvent::Gap(gap)) => tracing::warn!(
                lost = gap.lost(),
                "kernel log overwrote records before they were read; OOM context may be missing"
            ),
            Err(e) => {
                tracing::warn!("kernel log unreadable, no more OOM context from it: {e}");
                self.kmsg = None;
            }
        }
        Ok(line_waits)
    }

    /// A "Killed process" line now waits for its live record. The kernel submitted the kill's
    /// records before it logged the line: they are in the ring even if their wake-up is late,
    /// so they are read first; then a mark judged no kill that the line proves a kill is one.
    fn on_kill_line(&mut self) -> Result<(), RunError> {
        self.drain_ring_now("a kill line")?;
        self.confirm_logged_kills()
    }

    /// Marks judged no kill whose "Killed process" line the kernel logged (recovery holds it,
    /// waiting for a live record): kills after all, written now as live records.
    fn confirm_logged_kills(&mut self) -> Result<(), RunError> {
        let Some(r) = self.sink.recovery.as_ref() else {
            return Ok(());
        };
        if !self.correlator.has_doubtful() {
            return Ok(());
        }
        let evs = self
            .correlator
            .confirm_kills(|pid, comm| r.holds_kill_line(pid, comm), Instant::now());
        self.sink.emit(evs)
    }

    /// Handles the kernel-log records available now, without waiting (a victim waits for its
    /// report); returns whether a kill line among them waits for its live record.
    fn drain_kmsg_now(&mut self) -> Result<bool, RunError> {
        let mut line_waits = false;
        while let Some(reader) = self.kmsg.as_mut() {
            let ev = match reader.try_next_event() {
                Ok(None) => break,
                Ok(Some(ev)) => Ok(ev),
                Err(e) => Err(e),
            };
            line_waits |= self.on_kmsg(ev)?;
        }
        Ok(line_waits)
    }

    /// Flushes what still waits, saves the kernel-log position, stops the server, detaches.
    pub async fn finish(mut self, result: Result<&'static str, RunError>) -> Result<(), RunError> {
        let leftover = self.correlator.flush_all();
        let flushed = self.sink.emit(leftover);
        // What stdout has not taken yet gets 2 s (a stalled reader must not hold the exit);
        // the position counts the kills whose lines it took.
        self.sink.out.close(std::time::Duration::from_secs(2));
        self.sink.save_position();
        self.shutdown.stop().await;
        drop(self.ring);
        drop(self.shutdown);
        let signal = result?;
        flushed?;
        tracing::info!(signal, "probes detached; exiting");
        Ok(())
    }
}

/// What ends the agent: the server to stop, the programs to detach.
/// The server thread's result, sent when it ends.
pub type ServerDone = oneshot::Receiver<Result<(), ServerError>>;

pub struct Shutdown {
    stop: Option<oneshot::Sender<()>>,
    server: Option<ServerDone>,
    /// Keeps programs and links alive; dropping it detaches everything.
    _ebpf: Ebpf,
}

impl Shutdown {
    pub(super) fn new(stop: oneshot::Sender<()>, server: ServerDone, ebpf: Ebpf) -> Self {
        Shutdown {
            stop: Some(stop),
            server: Some(server),
            _ebpf: ebpf,
        }
    }

    /// Stops the server and waits for its in-flight requests.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.server.take() {
            let _ = done.await;
        }
    }
}

/// Every record waiting in the events ring, readiness cleared first: a record submitted after
/// the drain then wakes the loop again instead of waiting for the next kill.
fn drain_ring(
    guard: io::Result<AsyncFdReadyMutGuard<'_, RingBuf<MapData>>>,
) -> Result<Vec<Record>, RunError> {
    let mut guard = guard.map_err(RunError::RingBuf)?;
    guard.clear_ready();
    Ok(read_all(guard.get_inner_mut()))
}

/// Every record the ring holds now.
fn read_all(rb: &mut RingBuf<MapData>) -> Vec<Record> {
    let mut batch = Vec::new();
    while let Some(item) = rb.next() {
        batch.extend(ringbuf::decode(&item));
    }
    batch
}

async fn next_kmsg(reader: &mut Option<AsyncKmsgReader>) -> Result<KmsgEvent, KmsgError> {
    match reader {
        Some(r) => r.next_event().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn readable_opt<T: std::os::fd::AsRawFd>(
    fd: &mut Option<AsyncFd<T>>,
) -> Option<io::Result<AsyncFdReadyMutGuard<'_, T>>> {
    match fd {
        Some(fd) => Some(fd.readable_mut().await),
        None => std::future::pending().await,
    }
}
