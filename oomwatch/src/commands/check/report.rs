//! The report of `oomwatch check`: items grouped in sections, the exit code they imply, and the
//! text rendering (one item per line, wrapped at [`WIDTH`] columns).
use std::fmt::Write as _;

use serde::Serialize;

/// The agent can run here and nothing is risky.
pub const EXIT_OK: u8 = 0;
/// The agent cannot run here.
pub const EXIT_CANNOT_RUN: u8 = 1;
/// The agent can run, with warnings (2 is clap's usage error).
pub const EXIT_WARNINGS: u8 = 3;

/// Text lines are wrapped to this many columns.
pub const WIDTH: usize = 100;

/// How one item bears on running the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// A fact that changes nothing (a fallback not needed, a check not tried).
    Info,
    /// The agent runs, but captures less or the host is set up riskily.
    Warn,
    /// The agent cannot run here.
    Fail,
}

impl Status {
    /// The five-column marker that starts a text line.
    fn marker(self) -> &'static str {
        match self {
            Status::Ok => "ok   ",
            Status::Info => "info ",
            Status::Warn => "warn ",
            Status::Fail => "FAIL ",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    pub status: Status,
    /// Stable identifier; host-setting warnings keep the code of [`crate::host::Warning`].
    pub code: &'static str,
    /// What was found, and why it matters.
    pub message: String,
    /// What to do about it (warn and FAIL items).
    pub fix: Option<String>,
}

impl Item {
    pub fn new(status: Status, code: &'static str, message: impl Into<String>) -> Self {
        Item {
            status,
            code,
            message: message.into(),
            fix: None,
        }
    }

    pub fn ok(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::Ok, code, message)
    }

    pub fn info(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Status::Info, code, message)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// A group of items under a header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Section {
    /// Key in the JSON output: `privileges`, `kernel`, `capture`, `host`.
    pub name: &'static str,
    /// Header in the text output.
    pub title: &'static str,
    pub items: Vec<Item>,
}

/// Counts of items by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub info: usize,
    pub warn: usize,
    pub fail: usize,
}

pub fn counts(sections: &[Section]) -> Counts {
    let mut c = Counts::default();
    for item in sections.iter().flat_map(|s| &s.items) {
        match item.status {
            Status::Ok => c.ok += 1,
            Status::Info => c.info += 1,
            Status::Warn => c.warn += 1,
            Status::Fail => c.fail += 1,
        }
    }
    c
}

/// 1 if any item failed, else 3 if any warned, else 0.
pub fn exit_code(sections: &[Section]) -> u8 {
    let c = counts(sections);
    if c.fail > 0 {
        EXIT_CANNOT_RUN
    } else if c.warn > 0 {
        EXIT_WARNINGS
    } else {
        EXIT_OK
    }
}

/// The exit code as a word, for the JSON output.
pub fn verdict(exit_code: u8) -> &'static str {
    match exit_code {
        EXIT_OK => "ok",
        EXIT_WARNINGS => "warnings",
        _ => "cannot_run",
    }
}

/// Greedy word wrap: the first line starts with `first`, the others with `rest`; no line is
/// longer than `width` unless a single word is.
pub fn wrap(first: &str, rest: &str, text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_string();
    let mut len = first.chars().count();
    let mut empty = true;
    for word in text.split_whitespace() {
        let w = word.chars().count();
        if !empty && len + 1 + w > width {
            lines.push(std::mem::take(&mut line));
            line.push_str(rest);
            len = rest.chars().count();
            empty = true;
        }
        if !empty {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += w;
        empty = false;
    }
    lines.push(line.trim_end().to_string());
    lines
}

/// The text report: a header per section, one item per line (continued lines indented), the
/// fix of a warn or FAIL item on its own `fix:` line, then a one-line summary.
pub fn render_text(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", section.title);
        for item in &section.items {
            for line in wrap(item.status.marker(), "       ", &item.message, WIDTH) {
                let _ = writeln!(out, "{line}");
            }
            if let Some(fix) = &item.fix {
                for line in wrap("     fix: ", "          ", fix, WIDTH) {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    let _ = writeln!(out, "\n{}", summary(sections));
    out
}

/// The last line of the text report.
pub fn summary(sections: &[Section]) -> String {
    let c = counts(sections);
    let code = exit_code(sections);
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match code {
        EXIT_OK => format!("result: the agent can run here; nothing risky found (exit {code})"),
        EXIT_WARNINGS => format!(
            "result: the agent can run here, with {} (exit {code})",
            plural(c.warn, "warning")
        ),
        _ => format!(
            "result: the agent cannot run here: {}, {} (exit {code})",
            plural(c.fail, "failure"),
            plural(c.warn, "warning")
        ),
    }
}

/// One line of at most `max` characters: newlines and runs of blanks become one space (kernel
/// and verifier messages can span lines).
pub fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        joined
    } else {
        let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
