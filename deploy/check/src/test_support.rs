//! Helpers shared by the deploy checks' tests.

use super::facts::{Check, Facts};

pub(super) fn facts(text: &str) -> Facts {
    Facts::parse(&text.replace('|', "\t"))
}

/// The failure messages, as `name: why`.
pub(super) fn failures(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter_map(|c| c.result.as_ref().err().map(|e| format!("{}: {e}", c.name)))
        .collect()
}

/// Exactly one check fails, and its message contains every `needle`.
pub(super) fn assert_one_failure(checks: &[Check], needles: &[&str]) {
    let f = failures(checks);
    assert_eq!(f.len(), 1, "expected one failure, got {f:#?}");
    for n in needles {
        assert!(f[0].contains(n), "{:?} does not contain {n:?}", f[0]);
    }
    assert!(f[0].contains("fix:"), "{:?} says no fix", f[0]);
}
