//! Percentiles of a set of measurements.

use super::json::J;

/// Summary of samples, in the samples' unit (ms throughout the bench).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pct {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Pct {
    /// Nearest-rank percentiles; `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Pct> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Pct {
            n: v.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    pub fn json(p: &Option<Pct>) -> J {
        match p {
            None => J::Null,
            Some(p) => J::obj(vec![
                ("n", J::Num(p.n as f64)),
                ("p50", J::Num(p.p50)),
                ("p95", J::Num(p.p95)),
                ("p99", J::Num(p.p99)),
                ("max", J::Num(p.max)),
                ("mean", J::Num(p.mean)),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Pct::of(&v).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        let one = Pct::of(&[3.0]).unwrap();
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert!(Pct::of(&[]).is_none());
    }
}
