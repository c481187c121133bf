//! `oomwatch_oom_kills_missed_total`: kernel OOM kills since the agent started that produced no
//! record. The kernel's own count (`oom_kill` in `/proc/vmstat`) is compared with the records
//! written, using only kernel counts old enough that their records must have arrived (a
//! kill in flight is not a miss). The value never decreases.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after the kernel counted a kill its record may still be on its way: the
/// correlation wait plus the kernel-log wait, with a wide margin.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Bound on kernel-count samples kept (one per scrape; only the newest settled one matters).
const SAMPLES: usize = 64;

#[derive(Debug)]
pub struct MissedKills {
    /// The kernel's count when the agent started recording.
    start: u64,
    samples: VecDeque<(Instant, u64)>,
    missed: u64,
}

impl MissedKills {
    /// `start`: the kernel's count read once the probes were attached, at `at`.
    pub fn new(start: u64, at: Instant) -> Self {
        Self {
            start,
            samples: VecDeque::from([(at, start)]),
            missed: 0,
        }
    }

    /// Adds the kernel's count read now; `recorded` is the number of kernel kills the agent
    /// has recorded since it started. Returns the misses so far.
    pub fn update(&mut self, now: Instant, kernel: u64, recorded: u64) -> u64 {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, kernel));
        // The newest sample old enough to be settled; older ones are no longer needed.
        let settled = self
            .samples
            .iter()
            .rposition(|(t, _)| now.saturating_duration_since(*t) >= SETTLE);
        if let Some(i) = settled {
            self.samples.drain(..i);
            let since = self.samples[0].1.saturating_sub(self.start);
            self.missed = self.missed.max(since.saturating_sub(recorded));
        }
        self.missed
    }

    pub fn missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_in_flight_is_not_a_miss_until_it_settles() {
        let t0 = Instant::now();
        let mut m = MissedKills::new(100, t0);
        // The kernel counted one kill; its record is not written yet.
        assert_eq!(m.update(t0 + Duration::from_millis(10), 101, 0), 0);
        // The record arrives: never a miss.
        assert_eq!(m.update(t0 + Duration::from_secs(3), 101, 1), 0);
        // Another kill counted, never recorded: a miss once settled.
        assert_eq!(m.update(t0 + Duration::from_secs(4), 102, 1), 0);
        assert_eq!(m.update(t0 + Duration::from_secs(7), 102, 1), 1);
        // It never goes down, even when later records outnumber kernel kills.
        assert_eq!(m.update(t0 + Duration::from_secs(10), 102, 5), 1);
    }

    #[test]
    fn a_counter_read_before_start_is_ignored_and_samples_stay_bounded() {
        let t0 = Instant::now();
        let mut m = MissedKills::new(50, t0);
        for i in 0..1000u64 {
            m.update(t0 + Duration::from_millis(i * 10), 50, 0);
        }
        assert!(m.samples.len() <= SAMPLES);
        assert_eq!(m.missed(), 0);
        // A counter below the start (it cannot go back; saturates) is no miss.
        assert_eq!(m.update(t0 + Duration::from_secs(60), 10, 0), 0);
    }
}
