//! CPU stalls the steal counter misses: one thread per CPU, pinned to it at `SCHED_FIFO`,
//! sleeps [`TICK`] at a time and notes every wake-up later than [`STALL`]. Nothing but a CPU
//! that ran nothing (a virtual CPU its host left unscheduled, which the guest's steal counter
//! does not always count: a host's CPU quota throttles a whole VM's threads, here on a 100 ms
//! grid), a kernel section that kept every task off it that long, or a higher real-time
//! kernel thread, delays a real-time thread so much. A kill whose span overlaps such a stall says nothing of the agent, as with steal.
use std::{
    ffi::{c_int, c_void},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use super::sys::monotonic_ns;

/// How long each watcher sleeps.
pub const TICK: Duration = Duration::from_millis(1);
/// A wake-up this much later than asked is a stall (the killers' longest holds of a CPU in
/// the kernel, a few ms, stay below it).
pub const STALL: Duration = Duration::from_millis(20);

#[repr(C)]
struct SchedParam {
    sched_priority: c_int,
}

extern "C" {
    fn sched_getaffinity(pid: c_int, size: usize, mask: *mut c_void) -> c_int;
    fn sched_setaffinity(pid: c_int, size: usize, mask: *const c_void) -> c_int;
    fn sched_setscheduler(pid: c_int, policy: c_int, param: *const SchedParam) -> c_int;
}

const SCHED_FIFO: c_int = 1;

/// The stall watchers, until [`StallWatch::finish`].
pub struct StallWatch {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<(u64, u64)>>>,
}

impl StallWatch {
    /// One watcher per CPU this process may use; a CPU whose watcher cannot be pinned or made
    /// real-time gets none (said on stderr, at each storm).
    pub fn start() -> StallWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = allowed_cpus()
            .into_iter()
            .map(|cpu| {
                let flag = Arc::clone(&stop);
                thread::spawn(move || watch(cpu, &flag))
            })
            .collect();
        StallWatch { stop, threads }
    }

    /// Stops the watchers; each stall as (`CLOCK_MONOTONIC` ns of the last wake-up before it,
    /// of the late one).
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut self.threads);
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for StallWatch {
    /// An error path that never calls `finish` still stops the threads.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The CPUs this thread may run on (its affinity, cpuset included).
fn allowed_cpus() -> Vec<usize> {
    let mut mask = [0u64; 16];
    // SAFETY: `mask` is writable for its whole size (a 1024-bit cpu_set_t); pid 0 is the
    // calling thread.
    let rc =
        unsafe { sched_getaffinity(0, std::mem::size_of_val(&mask), mask.as_mut_ptr().cast()) };
    if rc != 0 {
        return Vec::new();
    }
    (0..mask.len() * 64)
        .filter(|&cpu| mask[cpu / 64] & (1 << (cpu % 64)) != 0)
        .collect()
}

/// Pins the calling thread to `cpu` at `SCHED_FIFO` 1; `false` if either fails.
fn pin_realtime(cpu: usize) -> bool {
    let mut mask = [0u64; 16];
    if cpu >= mask.len() * 64 {
        return false;
    }
    mask[cpu / 64] |= 1 << (cpu % 64);
    let param = SchedParam { sched_priority: 1 };
    // SAFETY: `mask` is a readable cpu_set_t-sized bitmask (1024 bits) for its whole size;
    // `param` is a valid sched_param; pid 0 is the calling thread.
    unsafe {
        sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr().cast()) == 0
            && sched_setscheduler(0, SCHED_FIFO, &param) == 0
    }
}

/// One CPU's watcher: its stalls.
fn watch(cpu: usize, stop: &AtomicBool) -> Vec<(u64, u64)> {
    if !pin_realtime(cpu) {
        eprintln!("[bench] no stall watcher on CPU {cpu} (affinity or SCHED_FIFO refused)");
        return Vec::new();
    }
    let (tick, stall) = (TICK.as_nanos() as u64, STALL.as_nanos() as u64);
    let mut stalls = Vec::new();
    let mut last = monotonic_ns();
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(TICK);
        let now = monotonic_ns();
        if let Some(w) = stall_of(last, now, tick, stall) {
            stalls.push(w);
        }
        last = now;
    }
    stalls
}

/// The stall between wake-ups at `last` and `now` (ns) of a thread that slept `tick`, if it
/// woke more than `stall` late.
fn stall_of(last: u64, now: u64, tick: u64, stall: u64) -> Option<(u64, u64)> {
    (now.saturating_sub(last) > tick + stall).then_some((last, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wake_up_later_than_the_stall_bound_is_a_stall() {
        let (tick, stall) = (1_000_000, 20_000_000);
        assert_eq!(stall_of(0, 1_100_000, tick, stall), None);
        assert_eq!(stall_of(0, 21_000_000, tick, stall), None);
        assert_eq!(
            stall_of(5, 100_000_000, tick, stall),
            Some((5, 100_000_000))
        );
    }
}
