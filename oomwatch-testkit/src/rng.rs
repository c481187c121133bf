//! A seeded xorshift generator for the property tests: the same seed gives the same inputs, so
//! a failure is replayed from the seed it prints.

/// Marsaglia's xorshift64; the seed must not be 0.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number biased towards edge values (0, 1, 2, `u64::MAX`, ...).
    pub fn number(&mut self) -> u64 {
        match self.below(4) {
            0 => u64::MAX - self.below(3) as u64,
            1 => self.below(3) as u64,
            2 => self.next_u64() >> self.below(64),
            _ => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn same_seed_same_sequence_and_below_stays_below() {
        let (mut a, mut b) = (XorShift(7), XorShift(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let (x, y) = (a.below(13), b.below(13));
            assert!(x == y && x < 13);
        }
    }
}
