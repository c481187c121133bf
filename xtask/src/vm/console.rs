//! Parsing of one `vm-test` guest's serial console: the sections `/init` prints, the kernel's
//! "Killed process" lines, `KEY VALUE` files and the agent's JSON log.

use serde_json::Value;
use std::collections::BTreeMap;

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

/// One "Killed process" line of the kernel log, sizes in kB as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelKill {
    pub pid: i64,
    pub comm: String,
    pub numbers: BTreeMap<String, i64>,
    /// The `oomwatch-vm: phase X` mark that preceded it in the log.
    pub phase: String,
}

/// `... Killed process 123 (dd) total-vm:104660kB, anon-rss:65536kB, file-rss:1024kB,
/// shmem-rss:0kB, UID:0 pgtables:252kB oom_score_adj:0`
pub fn parse_killed(line: &str) -> Option<KernelKill> {
    let rest = &line[line.find("Killed process ")? + "Killed process ".len()..];
    let (pid, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('(')?;
    let close = rest.rfind(") total-vm:")?;
    let comm = rest[..close].to_string();
    let mut numbers = BTreeMap::new();
    for token in rest[close + 2..]
        .split([' ', ','])
        .filter(|t| !t.is_empty())
    {
        let (k, v) = token.split_once(':')?;
        numbers.insert(k.to_string(), v.trim_end_matches("kB").parse().ok()?);
    }
    Some(KernelKill {
        pid: pid.parse().ok()?,
        comm,
        numbers,
        phase: String::new(),
    })
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
pub fn probe_status(log: &[String]) -> BTreeMap<String, (bool, String)> {
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

/// One OOM-killer invocation as the kernel logs it: the "invoked oom-killer" header, the task
/// dump, the "oom-kill:" summary, and the "Killed process" lines that follow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The task whose allocation invoked the killer (its comm).
    pub invoker: String,
    /// As printed, without the flag names: `0xcc0`.
    pub gfp_mask: String,
    /// The kernel's own decoding of the mask, split at `|`: `["GFP_KERNEL"]`.
    pub gfp_flags: Vec<String>,
    pub order: Option<i64>,
    /// `oom-kill:constraint=...,oom_memcg=/t,task_memcg=/t,task=dd,pid=94,uid=0` as a map.
    pub summary: BTreeMap<String, String>,
    /// Task dump: pid -> numeric column (named by the dump's own header) -> value.
    pub tasks: BTreeMap<i64, BTreeMap<String, i64>>,
    /// The text before ": Killed process" (`Memory cgroup out of memory`).
    pub message: String,
    /// Pids of its "Killed process" lines, in order (a group kill repeats the chosen task).
    pub killed: Vec<i64>,
    /// The kernel printed the "invoked oom-killer" header (and task dump and "oom-kill:"
    /// summary); false for a "Killed process" line alone, after the kernel's rate limit (10
    /// reports per 5 s) suppressed them.
    pub header: bool,
    /// A "Tasks in ... are going to be killed due to memory.oom.group set" line was seen.
    pub group: bool,
}

impl Invocation {
    /// The task the kernel chose (`pid=` of its "oom-kill:" summary), -1 without one.
    pub fn chosen(&self) -> i64 {
        self.summary
            .get("pid")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1)
    }
}

/// The line without its `[    3.221813] ` dmesg time stamp.
fn strip_stamp(line: &str) -> &str {
    line.strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .filter(|(stamp, _)| stamp.trim().parse::<f64>().is_ok())
        .map_or(line, |(_, rest)| rest)
}

/// Every OOM-killer invocation of the dmesg section, in order. A "Killed process" line after
/// the first one of an invocation belongs to it only in a `memory.oom.group` kill (of a task in
/// its dump); otherwise it starts an invocation whose header the kernel suppressed.
pub fn oom_invocations(dmesg: &[String]) -> Vec<Invocation> {
    let mut out: Vec<Invocation> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for line in dmesg.iter().map(|l| strip_stamp(l)) {
        if let Some((invoker, rest)) = line.split_once(" invoked oom-killer: ") {
            let field = |key: &str| {
                let v = &rest[rest.find(key)? + key.len()..];
                Some(v[..v.find([',', '(']).unwrap_or(v.len())].to_string())
            };
            out.push(Invocation {
                invoker: invoker.to_string(),
                gfp_mask: field("gfp_mask=").unwrap_or_default(),
                gfp_flags: rest
                    .split_once("gfp_mask=")
                    .and_then(|(_, r)| r.split_once('(')?.1.split_once(')'))
                    .map(|(names, _)| names.split('|').map(str::to_string).collect())
                    .unwrap_or_default(),
                order: field("order=").and_then(|o| o.parse().ok()),
                header: true,
                ..Invocation::default()
            });
            continue;
        }
        if let Some(k) = parse_killed(line) {
            let same = |i: &Invocation| {
                i.killed.is_empty()
                    || (i.group && (i.tasks.is_empty() || i.tasks.contains_key(&k.pid)))
            };
            if !out.last().is_some_and(same) {
                out.push(Invocation::default());
            }
            let inv = out.last_mut().expect("pushed above");
            if inv.killed.is_empty() {
                inv.message = line[..line.find(": Killed process").unwrap_or(0)].to_string();
            }
            inv.killed.push(k.pid);
            continue;
        }
        let Some(inv) = out.last_mut() else { continue };
        if let Some(summary) = line.strip_prefix("oom-kill:") {
            inv.summary = summary
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        } else if line.contains("are going to be killed due to memory.oom.group set") {
            inv.group = true;
        } else if let Some(header) = line.strip_prefix("[  pid  ]") {
            columns = header.split_whitespace().map(str::to_string).collect();
        } else if let Some((pid, row)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
            let Ok(pid) = pid.trim().parse::<i64>() else {
                continue;
            };
            let values = columns
                .iter()
                .zip(row.split_whitespace())
                .filter_map(|(c, v)| Some((c.clone(), v.parse::<i64>().ok()?)))
                .collect();
            inv.tasks.insert(pid, values);
        }
    }
    out
}
