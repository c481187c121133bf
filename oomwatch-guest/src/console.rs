//! Parsing of one `vm-test` guest's serial console: the sections `/init` prints, the phases of
//! the kernel's "Killed process" lines, `KEY VALUE` files and the agent's JSON log. The
//! kernel's lines themselves are parsed by `oomwatch_testkit::kernel_log`, as in the host tests.

use serde_json::Value;
use std::collections::BTreeMap;

pub use oomwatch_testkit::kernel_log::{oom_invocations, parse_killed, Invocation, KernelKill};

/// Sections `/init` prints once per boot between `@@OWVM BEGIN name@@` and `@@OWVM END name@@`.
pub const BOOT_SECTIONS: [&str; 5] = [
    "victims",
    "dmesg",
    "memory.events-t",
    "memory.events-g",
    "uptime",
];
/// Sections `/init` prints once per agent, named with the agent's suffix (`events-kprobe`).
pub const AGENT_SECTIONS: [&str; 4] = ["events", "metrics", "agent-log", "agent-exit"];
pub const DONE: &str = "@@OWVM DONE@@";
/// Probes that must report "probe attached" on the 6.1 and 6.12 kernels in every agent (plus
/// the agent's own source of OOM context, `agent::Agent::oom_probe`).
pub const REQUIRED_PROBES: [&str; 2] = ["tp_btf:mark_victim", "tracepoint:oom/mark_victim"];
/// The reason the agent logs for a row skipped with `--disable-probe`.
pub const DISABLED: &str = "disabled by --disable-probe";

/// The console split into sections (lines without `\r`).
#[derive(Debug, Default)]
pub struct Console {
    pub sections: BTreeMap<String, Vec<String>>,
    pub done: bool,
}

impl Console {
    pub fn parse(text: &str) -> Console {
        let mut c = Console::default();
        let mut current: Option<(String, Vec<String>)> = None;
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            let marker = line.trim();
            if marker == DONE {
                c.done = true;
            } else if let Some(name) = marker
                .strip_prefix("@@OWVM BEGIN ")
                .and_then(|r| r.strip_suffix("@@"))
            {
                current = Some((name.to_string(), Vec::new()));
            } else if let Some(name) = marker
                .strip_prefix("@@OWVM END ")
                .and_then(|r| r.strip_suffix("@@"))
            {
                if let Some((open, lines)) = current.take() {
                    if open == name {
                        c.sections.insert(open, lines);
                    }
                }
            } else if let Some((_, lines)) = current.as_mut() {
                lines.push(line.to_string());
            }
        }
        c
    }

    pub fn section(&self, name: &str) -> &[String] {
        self.sections.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// All "Killed process" lines of the dmesg section, each tagged with its phase.
pub fn kernel_kills(dmesg: &[String]) -> Vec<KernelKill> {
    let mut phase = String::new();
    let mut kills = Vec::new();
    for line in dmesg {
        if let Some(i) = line.find("oomwatch-vm: phase ") {
            phase = line[i + "oomwatch-vm: phase ".len()..].trim().to_string();
        } else if let Some(mut k) = parse_killed(line) {
            k.phase = phase.clone();
            kills.push(k);
        }
    }
    kills
}

/// A task `/init` started in cgroup `t` or `g`: `CGROUP PID EXIT_STATUS COMM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub cgroup: String,
    pub pid: i64,
    pub status: i64,
}

pub fn victims(lines: &[String]) -> Vec<Victim> {
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Victim {
                cgroup: w.next()?.to_string(),
                pid: w.next()?.parse().ok()?,
                status: w.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// `KEY VALUE` lines (memory.events) or `name{labels} value` lines (metrics).
pub fn key_value(lines: &[String], key: &str) -> Option<i64> {
    lines.iter().find_map(|l| {
        let (k, v) = l.trim().rsplit_once(' ')?;
        (k == key).then(|| v.parse::<f64>().ok().map(|f| f as i64))?
    })
}

/// Probe name -> (attached, reads or reason), from the agent's JSON log: lines whose message
/// starts with "probe attached" or "probe unavailable" (the kernel-log source says more after
/// a colon) and that name a `probe`.
/// The start of the agent's log line for a row that attached but delivered nothing.
const SILENT: &str = "probe attached but silent";

/// Each probe row the agent logged: name -> (attached, what it reads or why not).
pub type ProbeStatus = BTreeMap<String, (bool, String)>;

pub fn probe_status(log: &[String]) -> ProbeStatus {
    let mut out = BTreeMap::new();
    for line in log {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(fields) = v.get("fields") else {
            continue;
        };
        let field = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or("");
        let message = field("message");
        // "probe attached but silent" reports what a row delivered, not whether it attached:
        // the row's own attach line stays its status.
        if message.starts_with(SILENT) {
            continue;
        }
        let (attached, rest) = if let Some(rest) = message.strip_prefix("probe attached") {
            (true, rest)
        } else if let Some(rest) = message.strip_prefix("probe unavailable") {
            (false, rest)
        } else {
            continue;
        };
        if field("probe").is_empty() {
            continue;
        }
        let detail = match (attached, field("reads"), field("reason")) {
            (true, "", _) | (false, _, "") => rest.trim_start_matches(':').trim(),
            (true, reads, _) => reads,
            (false, _, reason) => reason,
        };
        out.insert(field("probe").to_string(), (attached, detail.to_string()));
    }
    out
}

/// A row's reason without the verifier's listing: its first line (up to "Verifier output")
/// and the verifier's last words (`BPF program is too large. Processed 1000001 insn`, an
/// `invalid mem access`, the `processed N insns` statistics).
pub fn reason_summary(reason: &str) -> String {
    let first = reason.lines().next().unwrap_or_default();
    let first = first.split(" Verifier output").next().unwrap_or(first);
    let listing = |l: &&str| {
        l.trim().is_empty()
            || l.starts_with(|c: char| c.is_ascii_digit() || c == ';')
            || [
                "from ",
                "mark_precise",
                "verification time",
                "stack depth",
                "frame",
            ]
            .iter()
            .any(|p| l.starts_with(p))
    };
    let words: Vec<&str> = reason.lines().skip(1).filter(|l| !listing(l)).collect();
    std::iter::once(first.trim_end_matches('.'))
        .chain(words[words.len().saturating_sub(3)..].iter().copied())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Agent log lines at WARN or ERROR, or not JSON at all (a crash message), for the report;
/// the warnings about rows skipped with `--disable-probe` are expected and left out.
pub fn agent_problems(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => {
                let reason = v.get("fields").and_then(|f| f.get("reason"));
                matches!(
                    v.get("level").and_then(Value::as_str),
                    Some("WARN" | "ERROR")
                ) && reason.and_then(Value::as_str) != Some(DISABLED)
            }
            Err(_) => !l.trim().is_empty(),
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::probe_status;

    #[test]
    fn a_silent_row_keeps_its_attach_line_as_its_status() {
        let log = [
            r#"{"fields":{"message":"probe attached","probe":"kretprobe:oom_badness","reads":"candidates (on oom_badness.part.0)"}}"#,
            r#"{"fields":{"message":"probe attached but silent: this kernel's hook gives nothing after an OOM kill; using the fallback","probe":"kretprobe:oom_badness","expected":"x","fallback":"y"}}"#,
        ]
        .map(String::from);
        let status = probe_status(&log);
        assert_eq!(
            status.get("kretprobe:oom_badness"),
            Some(&(true, "candidates (on oom_badness.part.0)".to_string()))
        );
    }
}
