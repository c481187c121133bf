//! Keeps the event loop off a CPU the kernel holds ([`LoopSteer`]).
//!
//! An OOM kill runs in the task whose allocation failed, and the kernel keeps that CPU for a
//! while after the kill: `__oom_kill_process` walks every process of the host looking for
//! others sharing the victim's memory (about 2 ms on a node with 10,000 processes), with no
//! preemption point under `PREEMPT_NONE`. The probes' ring-buffer wake-ups come from that CPU,
//! and when every CPU is busy the scheduler often queues the event loop there, where it
//! waits for the whole walk before it can read the kill it was woken for.
//!
//! Two watcher threads, each pinned to a different CPU, wait on the same ring buffers. A
//! watcher that finds the loop woken but not yet run (still parked, runnable) on another CPU,
//! and still so [`GRACE`] later, moves it to its own CPU: `sched_setaffinity` migrates a
//! queued task at once. The grace leaves alone a loop that was about to run anyway (moving a
//! running task takes the kernel's stopper thread). One move per wait. As soon as it runs,
//! the loop takes back the CPU set it started with (a set pinned on the loop alone since is
//! not kept: the loop would be sent back to the CPU it was moved off). With one CPU there is
//! nowhere else to go and no watcher starts.
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::thread::spawn_after;

/// How long a woken loop may stay queued on another CPU before a watcher moves it (it
/// normally runs within tens of microseconds; a killer holds its CPU for milliseconds).
pub const GRACE: Duration = Duration::from_micros(150);

/// The event loop's thread, watched over.
#[derive(Clone)]
pub struct LoopSteer(Arc<Shared>);

struct Shared {
    /// The loop's thread id: the process id (it runs on the main thread).
    tid: libc::pid_t,
    /// Its CPU set at start, taken back after each move.
    full: libc::cpu_set_t,
    /// Between the runtime's park and its next unpark: waiting, or woken and not yet run.
    parked: AtomicBool,
    /// A watcher is moving or has moved the loop during this wait (fast path of `saved`).
    narrowed: AtomicBool,
    /// Whether the move is done, to undo: set by the watcher that moves the loop, cleared by
    /// the loop's unpark. Held across the move, so an unpark either sees the move done or
    /// stops it before it starts.
    moved: Mutex<bool>,
    moves: AtomicU64,
}

impl LoopSteer {
    /// For the calling thread, the event loop's; `None` on a thread other than the main one
    /// (the seccomp filter allows moving the process's main thread only) or with fewer than
    /// two CPUs.
    pub fn for_this_thread() -> Option<LoopSteer> {
        // SAFETY: getpid and gettid take no arguments and cannot fail.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        let full = affinity(0).ok()?;
        if pid != tid || cpus(&full).len() < 2 {
            return None;
        }
        Some(LoopSteer(Arc::new(Shared {
            tid,
            full,
            parked: AtomicBool::new(false),
            narrowed: AtomicBool::new(false),
            moved: Mutex::new(false),
            moves: AtomicU64::new(0),
        })))
    }

    /// For the runtime's `on_thread_park`: the loop is about to wait.
    pub fn on_park(&self) -> impl Fn() + Send + Sync + 'static {
        let s = Arc::clone(&self.0);
        move || s.parked.store(true, Ordering::SeqCst)
    }

    /// For the runtime's `on_thread_unpark`: the loop runs; if a watcher moved it, it takes
    /// back its CPU set.
    pub fn on_unpark(&self) -> impl Fn() + Send + Sync + 'static {
        let s = Arc::clone(&self.0);
        move || {
            s.parked.store(false, Ordering::SeqCst);
            if s.narrowed.load(Ordering::SeqCst) {
                s.restore();
            }
        }
    }

    /// Times a watcher moved the loop.
    pub fn moves(&self) -> u64 {
        self.0.moves.load(Ordering::Relaxed)
    }

    /// Starts the watchers on the ring buffers `rings`, each running `prelude` first (the
    /// agent drops the thread's capabilities there). Returns the CPUs of those that run: an
    /// error only when none does.
    pub fn watch(
        &self,
        rings: &[BorrowedFd<'_>],
        prelude: impl Fn() -> io::Result<()> + Clone + Send + 'static,
    ) -> io::Result<Vec<usize>> {
        // Two watchers on different CPUs: whichever CPU the kernel holds, one of them runs.
        let all = cpus(&self.0.full);
        let on = [all[0], all[all.len() - 1]];
        let watchers = on
            .iter()
            .map(|&cpu| Watcher::new(Arc::clone(&self.0), cpu, rings))
            .collect::<io::Result<Vec<_>>>()?;
        let mut running = Vec::new();
        let mut failed = None;
        for w in watchers {
            let (cpu, prelude) = (w.cpu, prelude.clone());
            let pin = move || {
                let mut set = empty_set();
                // SAFETY: `set` is a valid cpu_set_t and `cpu` was taken from one.
                unsafe { libc::CPU_SET(cpu, &mut set) };
                set_affinity(0, &set)?;
                let slack_ns: libc::c_ulong = 1_000;
                // The grace's sleep as asked, not 50 µs later (the default slack).
                // SAFETY: prctl(PR_SET_TIMERSLACK, ns) takes integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack_ns, 0, 0, 0) };
                prelude()
            };
            match spawn_after(&format!("oomwatch-steer{cpu}"), pin, move || w.run()) {
                Ok(_) => running.push(cpu),
                Err(e) => failed = Some(e),
            }
        }
        match (running.is_empty(), failed) {
            (true, Some(e)) => Err(e),
            (false, Some(e)) => {
                tracing::warn!("one of the event loop's watchers did not start: {e}");
                Ok(running)
            }
            (_, None) => Ok(running),
        }
    }
}

impl Shared {
    /// Moves the loop to CPU `here` unless it has run meanwhile or was moved in this wait.
    fn narrow(&self, here: usize) {
        let mut moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
        if *moved {
            return;
        }
        // Announced before `parked` is read: an unpark that follows either sees it and waits
        // for this lock, or came first and is seen here.
        self.narrowed.store(true, Ordering::SeqCst);
        if !self.parked.load(Ordering::SeqCst) {
            self.narrowed.store(false, Ordering::SeqCst);
            return;
        }
        let mut set = empty_set();
        // SAFETY: `set` is a valid cpu_set_t and `here` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(here, &mut set) };
        match set_affinity(self.tid, &set) {
            Ok(()) => {
                *moved = true;
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.narrowed.store(false, Ordering::SeqCst);
                tracing::debug!("cannot move the event loop to CPU {here}: {e}");
            }
        }
    }

    /// Gives the loop back the CPU set it started with (every CPU its cpuset allows when that
    /// set is no longer possible: the cpuset changed).
    fn restore(&self) {
        let mut moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
        self.narrowed.store(false, Ordering::SeqCst);
        if !std::mem::take(&mut *moved) {
            return;
        }
        if set_affinity(self.tid, &self.full).is_err() {
            let mut all = empty_set();
            for cpu in 0..libc::CPU_SETSIZE as usize {
                // SAFETY: `cpu` is below CPU_SETSIZE, the size of `all`.
                unsafe { libc::CPU_SET(cpu, &mut all) };
            }
            if let Err(e) = set_affinity(self.tid, &all) {
                tracing::warn!("cannot give the event loop its CPUs back: {e}");
            }
        }
    }
}

/// One watcher: its CPU, its epoll set over the rings, and the loop's `stat` file.
struct Watcher {
    shared: Arc<Shared>,
    cpu: usize,
    epoll: OwnedFd,
    stat: File,
}

impl Watcher {
    fn new(shared: Arc<Shared>, cpu: usize, rings: &[BorrowedFd<'_>]) -> io::Result<Watcher> {
        // SAFETY: epoll_create1 takes an integer flag; a non-negative result is a new fd
        // owned by nobody else.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned here alone.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for ring in rings {
            add_edge_triggered(epoll.as_raw_fd(), ring.as_raw_fd())?;
        }
        let stat = File::open(format!("/proc/self/task/{}/stat", shared.tid))?;
        Ok(Watcher {
            shared,
            cpu,
            epoll,
            stat,
        })
    }

    /// Waits for ring-buffer wake-ups for the agent's whole life.
    fn run(self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        loop {
            // SAFETY: `events` is valid for 8 entries; the epoll fd is owned by `self`.
            let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 8, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!("the event loop's watcher on CPU {} stops: {e}", self.cpu);
                return;
            }
            self.rescue();
        }
    }

    /// Moves the loop here if it was woken and still waits, [`GRACE`] later, queued on
    /// another CPU.
    fn rescue(&self) {
        if self.shared.narrowed.load(Ordering::SeqCst) || self.stuck_elsewhere().is_none() {
            return;
        }
        std::thread::sleep(GRACE);
        if let Some(here) = self.stuck_elsewhere() {
            self.shared.narrow(here);
        }
    }

    /// This watcher's CPU, when the loop is parked (not run since its wake-up), runnable and
    /// queued on another CPU.
    fn stuck_elsewhere(&self) -> Option<usize> {
        if !self.shared.parked.load(Ordering::SeqCst) {
            return None;
        }
        // Where this watcher runs now (someone may have moved it since it pinned itself).
        // SAFETY: sched_getcpu takes no arguments; a negative result is an error.
        let here = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        let mut buf = [0u8; 1024];
        let n = self.stat.read_at(&mut buf, 0).ok()?;
        let queued = queued_on(&buf[..n])?;
        (queued != here && here < libc::CPU_SETSIZE as usize).then_some(here)
    }
}

/// The CPU of a runnable task from its `/proc/<pid>/task/<tid>/stat` (`None` when it is not
/// runnable or the text is not a stat line). The name in parentheses may hold anything, so
/// the fields are counted from the last `)`.
fn queued_on(stat: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(stat).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; field 39 the CPU the task last ran or is queued on.
    if fields.next()? != "R" {
        return None;
    }
    fields.nth(35)?.parse().ok()
}

fn add_edge_triggered(epoll: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: fd as u64,
    };
    // SAFETY: both fds are open; `ev` is valid for the call.
    match unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The CPU set of thread `tid` (0: the caller).
fn affinity(tid: libc::pid_t) -> io::Result<libc::cpu_set_t> {
    let mut set = empty_set();
    // SAFETY: `set` is valid and its size is passed.
    match unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) } {
        0 => Ok(set),
        _ => Err(io::Error::last_os_error()),
    }
}

fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is valid and its size is passed; the kernel only reads it.
    match unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(set), set) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The CPUs in `set`, lowest first.
fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runnable_tasks_cpu_is_read_past_a_hostile_name() {
        let tail = "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        // The state (field 3), 35 fields (4 to 38), then the CPU (field 39), then more.
        let fields: Vec<&str> = tail.split(' ').take(35).collect();
        let line =
            |state: &str, name: &str| format!("42 ({name}) {state} {} 7 0 0 0\n", fields.join(" "));
        assert_eq!(queued_on(line("R", "oomwatch").as_bytes()), Some(7));
        assert_eq!(queued_on(line("R", "a) S 1 (b").as_bytes()), Some(7));
        assert_eq!(queued_on(line("S", "oomwatch").as_bytes()), None);
        assert_eq!(queued_on(b"42 (oomwatch) R 1 2"), None);
        assert_eq!(queued_on(b"\xff\xfe"), None);
    }

    #[test]
    fn the_cpus_of_a_set_are_listed_lowest_first() {
        let mut set = empty_set();
        // SAFETY: both CPUs are below CPU_SETSIZE.
        unsafe {
            libc::CPU_SET(5, &mut set);
            libc::CPU_SET(1, &mut set);
        }
        assert_eq!(cpus(&set), vec![1, 5]);
    }
}
