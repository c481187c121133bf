//! Counters by label set, at most a given number of label sets: at the cap, the least recently
//! updated set goes first (counted in `evicted`, which `oomwatch_metric_label_sets_evicted_total`
//! and its kin report). For series whose label values come from workloads (pods, containers).
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct CappedCounts<K: Ord + Clone> {
    cap: usize,
    /// Label set → (count, LRU tick of its last update).
    series: BTreeMap<K, (u64, u64)>,
    next_tick: u64,
    pub evicted: u64,
}

impl<K: Ord + Clone> CappedCounts<K> {
    /// At most `cap` label sets (0 is treated as 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            series: BTreeMap::new(),
            next_tick: 0,
            evicted: 0,
        }
    }

    /// Adds one to `key`'s count.
    pub fn add(&mut self, key: K) {
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(s) = self.series.get_mut(&key) {
            *s = (s.0 + 1, tick);
            return;
        }
        // Rare (a new label set): a linear search for the oldest at the cap.
        while self.series.len() >= self.cap {
            let Some(oldest) = self
                .series
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.series.remove(&oldest);
            self.evicted += 1;
        }
        self.series.insert(key, (1, tick));
    }

    /// Label sets in order with their counts.
    pub fn rows(&self) -> impl Iterator<Item = (&K, u64)> {
        self.series.iter().map(|(k, (n, _))| (k, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_updated_set_goes_first() {
        let mut c = CappedCounts::new(2);
        c.add("a");
        c.add("b");
        c.add("a");
        c.add("c");
        let rows: Vec<_> = c.rows().map(|(k, n)| (*k, n)).collect();
        assert_eq!(rows, [("a", 2), ("c", 1)]);
        assert_eq!(c.evicted, 1);
        assert_eq!(CappedCounts::<u8>::new(0).cap, 1);
    }
}
