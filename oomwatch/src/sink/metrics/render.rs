//! The text exposition format 0.0.4, written straight into a `String`: the same bytes
//! `prometheus::TextEncoder` writes for the same families, without building a
//! `prometheus::proto::MetricFamily` per sample. The per-label-set families reuse each label
//! set's text rendered when it was created; only the collectors' families (a few hundred
//! samples) still go through the encoder.
use std::fmt::Write as _;

use bytes::Bytes;

use prometheus::proto::{MetricFamily, MetricType};
use prometheus::TextEncoder;

use super::labels::{push_escaped, push_label};
use super::state::Row;

/// `# TYPE` of a family of the agent's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One sample of a small family: its labels (escaped, without braces; empty for none) and
/// value.
#[derive(Debug)]
pub(super) struct Sample {
    labels: String,
    value: f64,
}

impl Sample {
    /// A sample; `labels` must be sorted by name.
    pub fn new(labels: &[(&str, &str)], value: f64) -> Sample {
        let mut text = String::new();
        for (name, value) in labels {
            push_label(&mut text, name, value);
        }
        Sample {
            labels: text,
            value,
        }
    }
}

/// The families with one sample (or three) per label set of `oomwatch_oom_kills_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PerLabelSet {
    Kills,
    Badness,
    LastKillTime,
    Rss,
}

impl PerLabelSet {
    pub const ALL: [PerLabelSet; 4] = [
        PerLabelSet::Kills,
        PerLabelSet::Badness,
        PerLabelSet::LastKillTime,
        PerLabelSet::Rss,
    ];

    fn name(self) -> &'static str {
        match self {
            PerLabelSet::Kills => "oomwatch_oom_kills_total",
            PerLabelSet::Badness => "oomwatch_oom_victim_badness",
            PerLabelSet::LastKillTime => "oomwatch_oom_last_kill_timestamp_seconds",
            PerLabelSet::Rss => "oomwatch_oom_victim_rss_bytes",
        }
    }

    fn help(self) -> &'static str {
        match self {
            PerLabelSet::Kills => {
                "OOM kills by victim (namespace, pod, container for Kubernetes victims; cgroup \
                 otherwise), comm, OOM constraint and domain (\"unknown\" when not known); label \
                 sets are capped, the least recently updated is evicted first."
            }
            PerLabelSet::Badness => {
                "Badness points of the task the killer chose, at the last kill of this label set \
                 (same label sets as oomwatch_oom_kills_total)."
            }
            PerLabelSet::LastKillTime => {
                "Time of the last kill of this label set, Unix seconds (same label sets as \
                 oomwatch_oom_kills_total)."
            }
            PerLabelSet::Rss => {
                "Resident memory of the victim at the last kill of this label set, by kind \
                 (anon, file, shmem; same label sets as oomwatch_oom_kills_total)."
            }
        }
    }

    fn kind(self) -> Kind {
        match self {
            PerLabelSet::Kills => Kind::Counter,
            _ => Kind::Gauge,
        }
    }

    fn is_empty(self, rows: &[Row]) -> bool {
        match self {
            PerLabelSet::Kills | PerLabelSet::LastKillTime => rows.is_empty(),
            PerLabelSet::Badness => rows.iter().all(|r| r.last.badness.is_none()),
            PerLabelSet::Rss => rows.iter().all(|r| r.last.rss.iter().all(Option::is_none)),
        }
    }

    fn write_samples(self, out: &mut String, rows: &[Row]) {
        let name = self.name();
        let line = |out: &mut String, labels: &str, value: f64| {
            out.push_str(name);
            out.push('{');
            out.push_str(labels);
            out.push_str("} ");
            push_f64(out, value);
            out.push('\n');
        };
        for r in rows {
            match self {
                PerLabelSet::Kills => line(out, r.labels.text(), r.kills as f64),
                PerLabelSet::Badness => {
                    if let Some(b) = r.last.badness {
                        line(out, r.labels.text(), b as f64);
                    }
                }
                PerLabelSet::LastKillTime => line(out, r.labels.text(), r.last.time),
                PerLabelSet::Rss => {
                    let (head, tail) = r.labels.split_for_kind();
                    for (kind, v) in ["anon", "file", "shmem"].iter().zip(r.last.rss) {
                        let Some(v) = v else { continue };
                        out.push_str(name);
                        out.push('{');
                        out.push_str(head);
                        out.push_str(",kind=\"");
                        out.push_str(kind);
                        out.push('"');
                        out.push_str(tail);
                        out.push_str("} ");
                        push_f64(out, v as f64);
                        out.push('\n');
                    }
                }
            }
        }
    }
}

/// A metric family to expose.
#[derive(Debug)]
pub(super) enum Family {
    /// A small family of the agent's own.
    Small {
        name: &'static str,
        help: &'static str,
        kind: Kind,
        samples: Vec<Sample>,
    },
    /// One of the families over the label sets, already rendered by [`per_label_set`].
    Rendered(PerLabelSet, Bytes),
    /// From a collector; written by `prometheus::TextEncoder`.
    Collected(MetricFamily),
}

impl Family {
    /// A small family of the agent's own.
    pub fn small(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        samples: Vec<Sample>,
    ) -> Family {
        Family::Small {
            name,
            help,
            kind,
            samples,
        }
    }

    fn name(&self) -> &str {
        match self {
            Family::Small { name, .. } => name,
            Family::Rendered(f, _) => f.name(),
            Family::Collected(mf) => mf.name(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Family::Small { samples, .. } => samples.is_empty(),
            Family::Rendered(_, text) => text.is_empty(),
            Family::Collected(mf) => mf.get_metric().is_empty(),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Family::Small {
                name,
                help,
                kind,
                samples,
            } => {
                header(out, name, help, *kind);
                for s in samples {
                    out.push_str(name);
                    if !s.labels.is_empty() {
                        out.push('{');
                        out.push_str(&s.labels);
                        out.push('}');
                    }
                    out.push(' ');
                    push_f64(out, s.value);
                    out.push('\n');
                }
            }
            // Only ever text from `per_label_set`.
            Family::Rendered(_, text) => out.push_str(&String::from_utf8_lossy(text)),
            Family::Collected(mf) => {
                if mf.get_field_type() == MetricType::UNTYPED {
                    // The crate's text encoder does not handle untyped families (it panics).
                    let _ = writeln!(out, "# oomwatch: untyped family {} left out", mf.name());
                } else if let Err(e) = TextEncoder::new().encode_utf8(std::slice::from_ref(mf), out)
                {
                    // Unreachable: empty families are left out and every name is set. A
                    // comment keeps the output parseable if it ever happens.
                    let _ = writeln!(out, "# oomwatch: encoding metrics failed: {e}");
                }
            }
        }
    }
}

/// The text of each family over the label sets (empty for an empty family): what a scrape
/// writes for them, kept by the caller until the label sets change.
pub(super) fn per_label_set(rows: &[Row], label_bytes: usize) -> Vec<(PerLabelSet, Bytes)> {
    PerLabelSet::ALL
        .iter()
        .map(|&f| {
            let mut text = String::new();
            if !f.is_empty(rows) {
                let lines = if f == PerLabelSet::Rss { 3 } else { 1 };
                text.reserve(lines * (label_bytes + 72 * rows.len()) + 512);
                header(&mut text, f.name(), f.help(), f.kind());
                f.write_samples(&mut text, rows);
            }
            (f, Bytes::from(text))
        })
        .collect()
}

/// [`render`] as consecutive pieces: the label sets' families are their cached buffers
/// (shared, not copied), the rest is rendered afresh between them.
pub(super) fn render_segments(mut families: Vec<Family>) -> Vec<Bytes> {
    families.retain(|f| !f.is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    let mut text = String::with_capacity(64 * 1024);
    for f in &families {
        match f {
            Family::Rendered(_, bytes) => {
                if !text.is_empty() {
                    out.push(Bytes::from(std::mem::take(&mut text)));
                }
                out.push(bytes.clone());
            }
            other => other.write(&mut text),
        }
    }
    if !text.is_empty() {
        out.push(Bytes::from(text));
    }
    out
}

/// Writes `families` sorted by name, empty ones left out, into a string of `capacity`
/// bytes to begin with.
pub(super) fn render(mut families: Vec<Family>, capacity: usize) -> String {
    families.retain(|f| !f.is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = String::with_capacity(capacity);
    for f in &families {
        f.write(&mut out);
    }
    out
}

/// `# HELP` (unless `help` is empty) and `# TYPE` lines.
fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    if !help.is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        push_escaped(out, help, false);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

/// Integers below this are exact in an `f64`.
const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// Appends `v` as `f64`'s `Display` writes it (what the encoder writes), with a fast path for
/// the usual integral values.
pub(super) fn push_f64(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < EXACT_INTEGERS && (v != 0.0 || v.is_sign_positive()) {
        // Exact, so `Display` writes the integer's digits.
        if v < 0.0 {
            out.push('-');
        }
        push_u64(out, v.abs() as u64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends the decimal digits of `n`.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if let Ok(digits) = std::str::from_utf8(&buf[i..]) {
        out.push_str(digits);
    }
}
