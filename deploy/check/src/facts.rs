//! Facts about the rendered manifests and the alerting rules (the tab-separated rows of
//! `deploy/check/facts.py`), the verdicts checked on them, and Kubernetes quantities.

use anyhow::{bail, Result};

use super::STEP;

/// Tab-separated rows written by `FACTS_PY`: the first field names the row's kind.
#[derive(Debug, Default)]
pub(super) struct Facts {
    rows: Vec<Vec<String>>,
}

impl Facts {
    pub(super) fn parse(text: &str) -> Self {
        Facts {
            rows: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split('\t').map(str::to_string).collect())
                .collect(),
        }
    }

    /// The fields after the first of every row of `kind`.
    pub(super) fn all(&self, kind: &str) -> impl Iterator<Item = &[String]> + '_ {
        let kind = kind.to_string();
        self.rows
            .iter()
            .filter(move |r| r.first().is_some_and(|k| *k == kind))
            .map(|r| &r[1..])
    }

    /// Field `i` of the first row of `kind` whose field 0 is `key`.
    pub(super) fn keyed(&self, kind: &str, key: &str, i: usize) -> Option<&str> {
        self.all(kind)
            .find(|r| r.first().is_some_and(|k| k == key))
            .and_then(|r| r.get(i))
            .map(String::as_str)
    }

    /// Field 1 of the first row of `kind` (rows `kind\tvalue`: field 0).
    pub(super) fn value(&self, kind: &str) -> Option<&str> {
        self.all(kind)
            .next()
            .and_then(|r| r.first())
            .map(String::as_str)
    }
}

/// One verdict: `Ok(note)` or `Err(what is wrong; fix: ...)`.
pub(super) struct Check {
    pub(super) name: String,
    pub(super) result: std::result::Result<String, String>,
}

pub(super) fn ok(name: &str, note: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        result: Ok(note.into()),
    }
}

pub(super) fn fail(name: &str, why: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        result: Err(why.into()),
    }
}

pub(super) fn verdict(name: &str, problems: Vec<String>, note: impl Into<String>) -> Check {
    if problems.is_empty() {
        ok(name, note)
    } else {
        fail(name, problems.join("; "))
    }
}

/// Prints every check; an error listing the failures if any failed.
pub(super) fn report(what: &str, checks: &[Check]) -> Result<()> {
    let mut failed = Vec::new();
    for c in checks {
        match &c.result {
            Ok(note) if note.is_empty() => eprintln!("[{STEP}] ok   {what}: {}", c.name),
            Ok(note) => eprintln!("[{STEP}] ok   {what}: {} ({note})", c.name),
            Err(why) => {
                eprintln!("[{STEP}] FAIL {what}: {}: {why}", c.name);
                failed.push(format!("{}: {why}", c.name));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "[{STEP}] {what}: {} check(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

pub(super) fn is_true(v: Option<&str>) -> bool {
    v == Some("true")
}

/// A Kubernetes quantity in thousandths of its unit (`100m` -> 100, `64Mi` -> 67108864000).
pub(super) fn parse_quantity(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let milli_per_unit: u128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000 * 1_000,
        "M" => 1_000 * 1_000_000,
        "G" => 1_000 * 1_000_000_000,
        "T" => 1_000 * 1_000_000_000_000,
        "Ki" => 1_000 << 10,
        "Mi" => 1_000 << 20,
        "Gi" => 1_000 << 30,
        "Ti" => 1_000 << 40,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((int * scale + frac) * milli_per_unit / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_thousandths() {
        assert_eq!(parse_quantity("100m"), Some(100));
        assert_eq!(parse_quantity("0.1"), Some(100));
        assert_eq!(parse_quantity("2"), Some(2_000));
        assert_eq!(parse_quantity("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(parse_quantity("1.5Gi"), Some(1536 * 1024 * 1024 * 1000));
        assert_eq!(parse_quantity("1k"), Some(1_000_000));
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("64MB"), None);
        assert_eq!(parse_quantity("1e3"), None);
    }
}
