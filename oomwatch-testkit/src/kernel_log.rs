//! The kernel's own account of an OOM kill, parsed here (not by `oomwatch`): its "Killed
//! process" lines and each OOM-killer invocation's report ("invoked oom-killer" header, task
//! dump, "oom-kill:" summary). Input is the log's text: `dmesg` lines (with or without their
//! `[    3.221813] ` time stamps) or `/dev/kmsg` messages.

use std::collections::BTreeMap;

/// One "Killed process" line, sizes in kB as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelKill {
    pub pid: i64,
    pub comm: String,
    /// `total-vm`, `anon-rss`, `file-rss`, `shmem-rss`, `UID`, `pgtables`, `oom_score_adj`.
    pub numbers: BTreeMap<String, i64>,
    /// The label of the test phase the line belongs to, for a caller that marks its log in
    /// phases (`vm-test`); empty otherwise.
    pub phase: String,
}

/// `... Killed process 123 (dd) total-vm:104660kB, anon-rss:65536kB, file-rss:1024kB,
/// shmem-rss:0kB, UID:0 pgtables:252kB oom_score_adj:0`; `None` for any other line.
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

/// The line without its `[    3.221813] ` dmesg time stamp (a task-dump row's `[    152]` is
/// no time stamp: it has no decimal point).
fn strip_stamp(line: &str) -> &str {
    line.strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .filter(|(stamp, _)| stamp.contains('.') && stamp.trim().parse::<f64>().is_ok())
        .map_or(line, |(_, rest)| rest)
}

/// Every OOM-killer invocation of the log, in order. A "Killed process" line after the first
/// one of an invocation belongs to it only in a `memory.oom.group` kill (of a task in its
/// dump); otherwise it starts an invocation whose header the kernel suppressed.
pub fn oom_invocations<S: AsRef<str>>(log: &[S]) -> Vec<Invocation> {
    let mut out: Vec<Invocation> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for line in log.iter().map(|l| strip_stamp(l.as_ref())) {
        if let Some((invoker, rest)) = line.split_once(" invoked oom-killer: ") {
            out.push(header(invoker, rest));
        } else if let Some(k) = parse_killed(line) {
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
        } else if let Some(inv) = out.last_mut() {
            report_line(inv, &mut columns, line);
        }
    }
    out
}

/// The invocation an "invoked oom-killer" line starts: `dd invoked oom-killer:
/// gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0`.
fn header(invoker: &str, rest: &str) -> Invocation {
    let field = |key: &str| {
        let v = &rest[rest.find(key)? + key.len()..];
        Some(v[..v.find([',', '(']).unwrap_or(v.len())].to_string())
    };
    Invocation {
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
    }
}

/// A line of the report between header and kill: the "oom-kill:" summary, the group-kill
/// line, the task dump's header (its column names) or one of its rows.
fn report_line(inv: &mut Invocation, columns: &mut Vec<String>, line: &str) {
    if let Some(summary) = line.strip_prefix("oom-kill:") {
        inv.summary = summary
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    } else if line.contains("are going to be killed due to memory.oom.group set") {
        inv.group = true;
    } else if let Some(header) = line.strip_prefix("[  pid  ]") {
        *columns = header.split_whitespace().map(str::to_string).collect();
    } else if let Some((pid, row)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
        let Ok(pid) = pid.trim().parse::<i64>() else {
            return;
        };
        let values = columns
            .iter()
            .zip(row.split_whitespace())
            .filter_map(|(c, v)| Some((c.clone(), v.parse::<i64>().ok()?)))
            .collect();
        inv.tasks.insert(pid, values);
    }
}

/// `oom_badness()` of a task-dump row: rss + swapents + pgtables_bytes / page_size, plus
/// `oom_score_adj * (totalpages / 1000)` (integer division first, as the kernel does).
pub fn badness(row: &BTreeMap<String, i64>, totalpages: i64, page_size: i64) -> Option<i64> {
    let adj = row.get("oom_score_adj")?;
    Some(
        row.get("rss")?
            + row.get("swapents")?
            + row.get("pgtables_bytes")? / page_size
            + adj * (totalpages / 1000),
    )
}

/// A `/dev/kmsg` fixture's raw records, as `read()` returns them: `#` lines are comments, a line
/// starting with a space continues the previous record (its dictionary), every other line is
/// one record.
pub fn raw_records(text: &[u8]) -> Vec<Vec<u8>> {
    let mut raw: Vec<Vec<u8>> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match raw.last_mut() {
            Some(prev) if line.starts_with(b" ") => {
                prev.extend_from_slice(line);
                prev.push(b'\n');
            }
            _ => {
                let mut rec = line.to_vec();
                rec.push(b'\n');
                raw.push(rec);
            }
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_spaces_and_parentheses_is_kept_whole() {
        let k = parse_killed(
            "[ 1.0] Memory cgroup out of memory: Killed process 7 (my (odd) cmd) total-vm:10kB, \
         anon-rss:1kB, file-rss:2kB, shmem-rss:3kB, UID:1000 pgtables:4kB oom_score_adj:-5",
        )
        .unwrap();
        assert_eq!(k.pid, 7);
        assert_eq!(k.comm, "my (odd) cmd");
        assert_eq!(k.numbers["UID"], 1000);
        assert_eq!(k.numbers["oom_score_adj"], -5);
        assert_eq!(parse_killed("oom_reaper: reaped process 7 (dd)"), None);
    }

    /// The 6.12 dump header (rss split in three), with dmesg stamps or as `/dev/kmsg`
    /// messages (no stamp: the row's `[    152]` is its pid).
    #[test]
    fn badness_uses_the_dump_header_of_6_12_with_or_without_stamps() {
        let report = [
            "dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500",
            "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem \
             pgtables_bytes swapents oom_score_adj name",
            "[    152]     0   152    26165    16747    16352        0       395   \
             172032        0           500 dd",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,\
             oom_memcg=/t,task_memcg=/t,task=dd,pid=152,uid=0",
            "Memory cgroup out of memory: Killed process 152 (dd) total-vm:104660kB, \
             anon-rss:65408kB, file-rss:0kB, shmem-rss:1580kB, UID:0 pgtables:168kB \
             oom_score_adj:500",
        ];
        let stamped: Vec<String> = report.iter().map(|l| format!("[    5.6] {l}")).collect();
        for inv in [oom_invocations(&report), oom_invocations(&stamped)] {
            assert_eq!(inv.len(), 1);
            let inv = &inv[0];
            assert_eq!(inv.gfp_flags, ["GFP_KERNEL"]);
            assert_eq!((inv.chosen(), inv.killed.as_slice()), (152, &[152][..]));
            assert_eq!(inv.message, "Memory cgroup out of memory");
            // The agent reported 24789 for this kill on 6.12.117: 16747 + 42 + 500 * 16.
            assert_eq!(badness(&inv.tasks[&152], 16384, 4096), Some(24789));
        }
    }
}
