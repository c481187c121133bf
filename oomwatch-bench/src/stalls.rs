//! CPU stalls the steal counter misses: one thread per CPU, pinned to it at `SCHED_FIFO`,
//! sleeps [`TICK`] at a time and notes every wake-up later than [`STALL`]. Nothing but a CPU
//! that ran nothing (a virtual CPU its host left unscheduled, which the guest's steal counter
//! does not always count: a host's CPU quota throttles a whole VM's threads, here on a 100 ms
//! grid), a kernel section that kept every task off it that long, or a higher real-time
//! kernel thread, delays a real-time thread so much. A kill whose span overlaps such a stall says nothing of the agent, as with steal.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use oomwatch_testkit::cpus;

use super::sys::monotonic_ns;

/// How long each watcher sleeps.
pub const TICK: Duration = Duration::from_millis(1);
/// A wake-up this much later than asked is a stall (the killers' longest holds of a CPU in
/// the kernel, a few ms, stay below it).
pub const STALL: Duration = Duration::from_millis(20);

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
        let threads = cpus::allowed()
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

/// Pins the calling thread to `cpu` at `SCHED_FIFO` 1; `false` if either fails.
fn pin_realtime(cpu: usize) -> bool {
    cpus::pin(0, cpu).and_then(|()| cpus::realtime(1)).is_ok()
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
