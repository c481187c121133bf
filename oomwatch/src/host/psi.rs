//! Memory pressure stall information, `/proc/pressure/memory`:
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=967314
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=349368
//! ```
//!
//! `avgN` are percentages of wall time over the last N seconds, `total` is cumulative stall
//! time in microseconds. `some`: at least one task stalled on memory; `full`: all non-idle
//! tasks stalled at once.
//!
//! PSI can be absent: built without `CONFIG_PSI`, or disabled with `psi=0` (or
//! `CONFIG_PSI_DEFAULT_DISABLED` without `psi=1`), in which case `/proc/pressure` is not
//! created; reads of pressure files then fail with `EOPNOTSUPP` where the file exists (cgroup
//! files). Both are "unsupported", not a failure: the collector succeeds and exposes
//! `oomwatch_memory_pressure_supported 0`, so a dashboard can tell "no pressure" from "no PSI".
//! Any other read error (permissions, a file that is not PSI) is a failure.
use std::io;
use std::path::Path;

use prometheus::proto::{MetricFamily, MetricType};

use super::read::{read_text_io, HostError};
use super::snapshot::{HostSnapshot, PsiAverages};
use crate::sink::metrics::prom::{counter, family, gauge, single_gauge};

/// One `some`/`full` line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    /// Percent.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds.
    pub total_us: u64,
}

/// The two lines of a pressure file; a line that is missing or incomplete is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    pub some: Option<PsiLine>,
    pub full: Option<PsiLine>,
}

/// A non-negative finite percentage.
fn percent(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// Parses one line; `None` unless all four fields are present and valid.
pub fn parse_line(line: &str) -> Option<(&str, PsiLine)> {
    let mut words = line.split_whitespace();
    let kind = words.next().filter(|k| matches!(*k, "some" | "full"))?;
    let (mut a10, mut a60, mut a300, mut total) = (None, None, None, None);
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "avg10" => a10 = percent(v),
            "avg60" => a60 = percent(v),
            "avg300" => a300 = percent(v),
            "total" => total = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    Some((
        kind,
        PsiLine {
            avg10: a10?,
            avg60: a60?,
            avg300: a300?,
            total_us: total?,
        },
    ))
}

/// Parses a pressure file; the first valid line of each kind wins, other lines are ignored.
pub fn parse(text: &str) -> Psi {
    let mut p = Psi::default();
    for (kind, line) in text.lines().filter_map(parse_line) {
        let slot = if kind == "some" {
            &mut p.some
        } else {
            &mut p.full
        };
        slot.get_or_insert(line);
    }
    p
}

/// What the `psi` collector read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PsiData {
    /// No `/proc/pressure/memory`, or `EOPNOTSUPP`: PSI is not built in or disabled.
    Unsupported,
    Supported(Psi),
}

/// Reads `proc/pressure/memory` under `root`. A file without a valid `some` line is a failure.
pub fn read(root: &Path) -> Result<PsiData, HostError> {
    let path = root.join("proc/pressure/memory");
    let text = match read_text_io(&path) {
        Ok(r) => r?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PsiData::Unsupported),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(PsiData::Unsupported),
        Err(source) => return Err(HostError::Read { path, source }),
    };
    let psi = parse(&text);
    if psi.some.is_none() {
        return Err(HostError::parse(&path, "no valid \"some\" line"));
    }
    Ok(PsiData::Supported(psi))
}

fn averages(l: &PsiLine) -> PsiAverages {
    PsiAverages {
        avg10_percent: l.avg10,
        avg60_percent: l.avg60,
        avg300_percent: l.avg300,
        total_stall_us: l.total_us,
    }
}

impl PsiData {
    pub(super) fn fill(&self, s: &mut HostSnapshot) {
        match self {
            PsiData::Unsupported => s.psi_supported = Some(false),
            PsiData::Supported(p) => {
                s.psi_supported = Some(true);
                s.psi_some = p.some.as_ref().map(averages);
                s.psi_full = p.full.as_ref().map(averages);
            }
        }
    }

    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let psi = match self {
            PsiData::Unsupported => None,
            PsiData::Supported(p) => Some(p),
        };
        let mut fams: Vec<MetricFamily> = single_gauge(
            "oomwatch_memory_pressure_supported",
            "Whether the kernel reports memory pressure stall information (1) or PSI is not \
             built in or disabled (0, the pressure metrics are then absent).",
            Some(if psi.is_some() { 1.0 } else { 0.0 }),
        )
        .into_iter()
        .collect();
        let Some(psi) = psi else {
            return fams;
        };
        // Sorted by label values: kind (full < some), then window as text.
        let lines = [("full", psi.full), ("some", psi.some)];
        let mut ratios = Vec::new();
        let mut totals = Vec::new();
        for (kind, line) in lines {
            let Some(l) = line else {
                continue;
            };
            for (window, avg) in [("10s", l.avg10), ("300s", l.avg300), ("60s", l.avg60)] {
                ratios.push(gauge(&[("kind", kind), ("window", window)], avg / 100.0));
            }
            totals.push(counter(&[("kind", kind)], l.total_us as f64 / 1e6));
        }
        fams.push(family(
            "oomwatch_memory_pressure_ratio",
            "Share of wall time tasks stalled on memory, averaged over the window (PSI avgN / \
             100); kind=some: at least one task, kind=full: all non-idle tasks at once.",
            MetricType::GAUGE,
            ratios,
        ));
        fams.push(family(
            "oomwatch_memory_pressure_stall_seconds_total",
            "Total time tasks stalled on memory since boot (PSI total), by kind.",
            MetricType::COUNTER,
            totals,
        ));
        fams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_lines() {
        let p = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=967314\n\
             full avg10=0.10 avg60=0.00 avg300=0.00 total=349368\n",
        );
        let some = p.some.unwrap();
        assert_eq!(
            (some.avg10, some.avg60, some.total_us),
            (1.5, 0.25, 967_314)
        );
        assert_eq!(p.full.unwrap().total_us, 349_368);
    }

    #[test]
    fn incomplete_or_invalid_lines_are_dropped() {
        let p =
            parse("some avg10=1.00 avg60=0.00 total=5\nfull avg10=NaN avg60=0 avg300=0 total=1\n");
        assert_eq!(p, Psi::default());
        let p = parse(
            "some avg10=-1 avg60=0 avg300=0 total=1\nsome avg10=inf avg60=0 avg300=0 total=1",
        );
        assert_eq!(p.some, None);
        let p = parse(
            "cpu avg10=1 avg60=0 avg300=0 total=1\nsome avg10=2 avg60=0 avg300=0 total=9 x=y junk",
        );
        assert_eq!(p.some.map(|l| l.total_us), Some(9));
    }
}
