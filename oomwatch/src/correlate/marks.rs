//! Which `mark_victim` calls are OOM kills.
//!
//! The kernel marks a task as an OOM victim when it kills it, and also when it only lets a task
//! that is already exiting use the memory reserves (`task_will_free_mem()`): most often another
//! thread of a process just killed, which allocates again before it exits. Those marks are not
//! kills: the kernel neither counts them (`oom_kill` in `/proc/vmstat`, `memory.events`) nor
//! logs "Killed process" for them. They get no record; `oomwatch_oom_marks_without_kill_total`
//! counts them.
//!
//! With a `signal_generate` program attached, a mark is a kill exactly when the marking thread
//! sent the victim SIGKILL just before (`field::KILL_SENT`, see the eBPF `kill_signal`
//! module). Without one, the first mark of a process is its kill and later marks of its other
//! threads are not. (The victim's pending signals cannot tell: the victim may already have
//! taken its SIGKILL off the pending set, on another CPU, before the killer marks it.)
//!
//! The kernel's "Killed process" line has the last word: a mark judged no kill whose line the
//! kernel logs (its SIGKILL was missed: a lost `KILLS_SENT` entry, or a CPU stalled between the
//! two calls longer than the eBPF window) is a kill after all, and gets its live record
//! ([`crate::correlate::Correlator::confirm_kills`]).
use std::collections::VecDeque;

use oomwatch_common::{field, VictimRecord};

/// How long a killed process's other threads may be marked after the kill (fallback only).
const SAME_PROCESS_NS: u64 = 30_000_000_000;
/// Killed processes remembered for the fallback.
const KEPT: usize = 256;

#[derive(Debug, Default)]
pub struct KillVerdict {
    /// `bpf_ktime_get_ns()` from which a `signal_generate` program was attached.
    signals_since: Option<u64>,
    /// (tgid, kill time) of recent kills, newest last (fallback).
    recent: VecDeque<(i32, u64)>,
    without_kill: u64,
}

impl KillVerdict {
    /// Marks at or after `ktime_ns` carry `KILL_SENT` when they are kills.
    pub fn with_signals_since(mut self, ktime_ns: u64) -> Self {
        self.signals_since = Some(ktime_ns);
        self
    }

    /// Whether the mark made of `recs` (the records of one `mark_victim` call) is a kill of
    /// process `tgid` at `ktime_ns`. A mark judged no kill is not counted yet: the kernel's
    /// "Killed process" line may still prove it one ([`Self::confirmed`]), else
    /// [`Self::not_a_kill`] counts it.
    pub fn is_kill(&mut self, recs: &[&VictimRecord], tgid: Option<i32>, ktime_ns: u64) -> bool {
        let kill = self.judge(recs, tgid, ktime_ns);
        if kill {
            self.confirmed(tgid, ktime_ns);
        }
        kill
    }

    /// A mark of process `tgid` at `ktime_ns` was a kill (judged so, or proved by its kill
    /// line): later marks of the process's other threads are not (fallback).
    pub fn confirmed(&mut self, tgid: Option<i32>, ktime_ns: u64) {
        if let Some(t) = tgid {
            if self.recent.len() == KEPT {
                self.recent.pop_front();
            }
            self.recent.push_back((t, ktime_ns));
        }
    }

    /// A mark judged no kill that no kill line proved one: counted.
    pub fn not_a_kill(&mut self) {
        self.without_kill += 1;
    }

    fn judge(&self, recs: &[&VictimRecord], tgid: Option<i32>, ktime_ns: u64) -> bool {
        if self.signals_since.is_some_and(|s| ktime_ns >= s) {
            return recs.iter().any(|r| r.present & field::KILL_SENT != 0);
        }
        let Some(tgid) = tgid else {
            return true;
        };
        !self
            .recent
            .iter()
            .any(|&(t, at)| t == tgid && ktime_ns.saturating_sub(at) < SAME_PROCESS_NS)
    }

    /// Marks that were not kills, so far.
    pub fn without_kill(&self) -> u64 {
        self.without_kill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(present: u32) -> VictimRecord {
        let mut r = VictimRecord::zeroed();
        r.present = field::PID | present;
        r
    }

    #[test]
    fn with_the_signal_probe_only_a_mark_after_its_sigkill_is_a_kill() {
        let mut v = KillVerdict::default().with_signals_since(1_000);
        let killed = rec(field::KILL_SENT | field::SIGNALS | field::SIGKILL_PENDING);
        assert!(v.is_kill(&[&killed], Some(7), 2_000));
        // Another thread of the same process: SIGKILL pending (the group's), none sent to it.
        let other = rec(field::SIGNALS | field::SIGKILL_PENDING);
        assert!(!v.is_kill(&[&other], Some(7), 3_000));
        // Either record of the call may carry the bit (tracepoint + tp_btf).
        assert!(v.is_kill(&[&rec(0), &rec(field::KILL_SENT)], Some(8), 4_000));
        assert!(!v.is_kill(&[&rec(0)], Some(9), 5_000));
        assert_eq!(
            v.without_kill(),
            0,
            "counted only when no kill line proves it one"
        );
        v.not_a_kill();
        assert_eq!(v.without_kill(), 1);
        // Before the probe was attached the bit means nothing: the fallback decides.
        assert!(v.is_kill(&[&rec(0)], Some(10), 500));
    }

    #[test]
    fn without_it_a_process_is_killed_once() {
        let mut v = KillVerdict::default();
        // The victim may already have dequeued its SIGKILL: pending signals do not decide.
        assert!(v.is_kill(&[&rec(field::SIGNALS)], Some(7), 1_000));
        let pending = rec(field::SIGNALS | field::SIGKILL_PENDING);
        assert!(!v.is_kill(&[&pending], Some(7), 2_000), "second thread");
        assert!(
            v.is_kill(&[&pending], Some(7), 1_000 + SAME_PROCESS_NS),
            "pid reused"
        );
        assert!(v.is_kill(&[&rec(0)], Some(8), 4_000));
        assert!(v.is_kill(&[&rec(0)], None, 5_000), "tgid unknown");
        // A mark its kill line proved a kill: the process's next marks are not.
        v.confirmed(Some(9), 6_000);
        assert!(!v.is_kill(&[&pending], Some(9), 7_000));
    }
}
