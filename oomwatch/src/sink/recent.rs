//! The last N events, kept in memory for the HTTP server (`/` and `/events`).
//!
//! A bounded ring behind a mutex: the run loop pushes each record it writes, the server takes
//! snapshots. Share it as `Arc<RecentEvents>`; every method takes `&self`.
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::record::OomEvent;

/// How many events are kept when `--recent-events` is not given.
pub const DEFAULT_CAPACITY: usize = 100;

/// The newest events, at most [`capacity`](Self::capacity) of them.
#[derive(Debug)]
pub struct RecentEvents {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    ring: VecDeque<OomEvent>,
    /// Events pushed since start, including those already dropped from the ring.
    seen: u64,
}

impl Default for RecentEvents {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl RecentEvents {
    /// An empty ring keeping the last `capacity` events (0 is treated as 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RecentEvents {
            capacity,
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
                seen: 0,
            }),
        }
    }

    /// Keeps a copy of `ev`, dropping the oldest event when full.
    pub fn push(&self, ev: &OomEvent) {
        let mut inner = self.lock();
        if inner.ring.len() >= self.capacity {
            inner.ring.pop_front();
        }
        inner.ring.push_back(ev.clone());
        inner.seen = inner.seen.saturating_add(1);
    }

    /// Every event kept, newest first.
    pub fn snapshot(&self) -> Vec<OomEvent> {
        self.latest(usize::MAX)
    }

    /// At most `limit` events, newest first.
    pub fn latest(&self, limit: usize) -> Vec<OomEvent> {
        self.lock().ring.iter().rev().take(limit).cloned().collect()
    }

    /// Events pushed since start (those dropped from the ring included).
    pub fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// Events currently kept.
    pub fn len(&self) -> usize {
        self.lock().ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most events kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Locks, ignoring poisoning: a push either happened whole or not at all.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn ev(pid: i32) -> OomEvent {
        OomEvent::new(pid, 1, SystemTime::UNIX_EPOCH, "h".into())
    }

    fn pids(v: &[OomEvent]) -> Vec<i32> {
        v.iter().map(|e| e.pid).collect()
    }

    #[test]
    fn keeps_the_newest_first_and_drops_the_oldest() {
        let r = RecentEvents::new(3);
        assert!(r.is_empty());
        for pid in 1..=5 {
            r.push(&ev(pid));
        }
        assert_eq!(pids(&r.snapshot()), [5, 4, 3]);
        assert_eq!(pids(&r.latest(2)), [5, 4]);
        assert_eq!(pids(&r.latest(0)), Vec::<i32>::new());
        assert_eq!((r.len(), r.seen(), r.capacity()), (3, 5, 3));
    }

    #[test]
    fn zero_capacity_keeps_one() {
        let r = RecentEvents::new(0);
        r.push(&ev(1));
        r.push(&ev(2));
        assert_eq!(pids(&r.snapshot()), [2]);
    }

    #[test]
    fn shared_between_threads() {
        let r = std::sync::Arc::new(RecentEvents::default());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let r = std::sync::Arc::clone(&r);
                std::thread::spawn(move || {
                    for i in 0..50 {
                        r.push(&ev(t * 100 + i));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!((r.len(), r.seen()), (DEFAULT_CAPACITY, 200));
    }
}
