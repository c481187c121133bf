//! Parsers for single OOM-report lines, written against the kernel's own format strings
//! (`mm/oom_kill.c`, `mm/memcontrol.c`, `kernel/cgroup/cpuset.c`) from 2.6.32 to 6.18.
//!
//! Each returns `None` for a line that is not (or not completely) of its kind. Command names
//! (`comm`) may hold any byte but NUL (spaces, parentheses, commas, even a newline), so a comm
//! is always delimited by the fixed text around it: it runs from the first `" ("` after the pid
//! to the *last* occurrence of the fixed suffix that follows it.
use super::report::{Constraint, ConstraintKind, Invoked, Killed, Reaped};

/// `"<comm> invoked oom-killer: gfp_mask=0x...(FLAGS), [nodemask=...,] order=N, oom_score_adj=N"`.
///
/// Forms: 2.6.32–4.4 `gfp_mask=0x%x, order=%d, [oom_adj=%d, ]oom_score_adj=%hd` (no flag
/// names); 4.5–4.8 and 5.0+ `gfp_mask=%#x(%pGg), order=%d, oom_score_adj=%hd`; from 4.9 to 4.14
/// `gfp_mask=%#x(%pGg), nodemask=` + `<list>`|`(null)` + `,  order=…` (two spaces, built with
/// `pr_cont`); 4.19 `gfp_mask=%#x(%pGg), nodemask=%*pbl, order=…`.
pub fn parse_invoked(line: &str) -> Option<Invoked> {
    const MARK: &str = " invoked oom-killer: gfp_mask=";
    let at = line.rfind(MARK)?;
    let comm = &line[..at];
    let rest = &line[at + MARK.len()..];
    let hex_end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_hexdigit() || (i == 1 && c == 'x')))
        .map_or(rest.len(), |(i, _)| i);
    let gfp_mask = parse_gfp(&rest[..hex_end])?;
    let mut rest = &rest[hex_end..];
    let mut gfp_flags = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        gfp_flags = Some(r[..close].to_string());
        rest = &r[close + 1..];
    }
    let rest = rest.strip_prefix(", ")?;
    // Everything up to "order=" is the optional nodemask (which may itself contain commas).
    let order_at = rest.find("order=")?;
    let before = &rest[..order_at];
    let nodemask = before.strip_prefix("nodemask=").map(|n| {
        n.trim_end_matches(' ')
            .trim_end_matches(',')
            .trim_end()
            .to_string()
    });
    if nodemask.is_none() && !before.is_empty() {
        return None;
    }
    let after = &rest[order_at + "order=".len()..];
    let order = leading_int(after)?;
    let adj_at = after.find("oom_score_adj=")?;
    let oom_score_adj = leading_int(&after[adj_at + "oom_score_adj=".len()..])?;
    Some(Invoked {
        comm: comm.to_string(),
        gfp_mask,
        gfp_flags,
        nodemask,
        order: i32::try_from(order).ok()?,
        oom_score_adj: i16::try_from(oom_score_adj).ok()?,
    })
}

fn parse_gfp(s: &str) -> Option<u32> {
    // `%#x` prints 0 as "0", everything else as "0x…".
    let v = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if s == "0" => 0,
        None => return None,
    };
    u32::try_from(v).ok()
}

/// The one-line summary of 5.0+: `oom-kill:constraint=%s,nodemask=%*pbl` then (CPUSETS)
/// `,cpuset=<name>,mems_allowed=%*pbl`, then (MEMCG) `,oom_memcg=<path>` or `,global_oom`, then
/// `,task_memcg=<path>`, then `,task=%s,pid=%d,uid=%d`. Node lists contain commas and cgroup
/// names may too, so each value runs to the next known key.
pub fn parse_constraint(line: &str) -> Option<Constraint> {
    let rest = line.strip_prefix("oom-kill:constraint=")?;
    let (constraint, rest) = rest.split_once(",nodemask=")?;
    // The victim part, from the right: ",task=<comm>,pid=N,uid=N".
    let uid_at = rest.rfind(",uid=")?;
    let uid = leading_uid(&rest[uid_at + ",uid=".len()..])?;
    let head = &rest[..uid_at];
    let pid_at = head.rfind(",pid=")?;
    let pid = i32::try_from(leading_int(&head[pid_at + ",pid=".len()..])?).ok()?;
    let head = &head[..pid_at];

    const AFTER_NODEMASK: &[&str] = &[
        ",cpuset=",
        ",oom_memcg=",
        ",global_oom",
        ",task_memcg=",
        ",task=",
    ];
    let (nodemask, mut rest) = take_until_any(head, AFTER_NODEMASK)?;
    let mut cpuset = None;
    let mut mems_allowed = None;
    if let Some(r) = rest.strip_prefix(",cpuset=") {
        let (name, r) = r.split_once(",mems_allowed=")?;
        let (mems, r) = take_until_any(r, &AFTER_NODEMASK[1..])?;
        cpuset = Some(name.to_string());
        mems_allowed = Some(mems.to_string());
        rest = r;
    }
    let mut oom_memcg = None;
    if let Some(r) = rest.strip_prefix(",oom_memcg=") {
        let (path, r) = take_until_any(r, &[",task_memcg=", ",task="])?;
        oom_memcg = Some(path.to_string());
        rest = r;
    } else if let Some(r) = rest.strip_prefix(",global_oom") {
        rest = r;
    }
    let mut task_memcg = None;
    if let Some(r) = rest.strip_prefix(",task_memcg=") {
        let (path, r) = take_until_any(r, &[",task="])?;
        task_memcg = Some(path.to_string());
        rest = r;
    }
    let comm = rest.strip_prefix(",task=")?;
    Some(Constraint {
        constraint: ConstraintKind::from_kernel(constraint),
        nodemask: nodemask.to_string(),
        cpuset,
        mems_allowed,
        oom_memcg,
        task_memcg,
        comm: comm.to_string(),
        pid,
        uid,
    })
}

/// Splits `s` at the earliest occurrence of any of `keys`; the second part starts with the key.
fn take_until_any<'a>(s: &'a str, keys: &[&str]) -> Option<(&'a str, &'a str)> {
    let at = keys.iter().filter_map(|k| s.find(k)).min()?;
    Some(s.split_at(at))
}

/// The prefixes `oom_kill_process()` and `__oom_kill_process()` put before ": Kill…".
fn oom_reason(prefix: &str) -> bool {
    prefix.starts_with("Out of memory") || prefix.starts_with("Memory cgroup out of memory")
}

/// `"<reason>: Killed process N (comm) total-vm:…kB, anon-rss:…kB, file-rss:…kB, shmem-rss:…kB,
/// UID:N pgtables:…kB oom_score_adj:N"` and its older forms: without the reason (4.x, after a
/// "Kill process … or sacrifice child" line), without `UID`/`pgtables`/`oom_score_adj`
/// (before 5.3 / 5.9), without `shmem-rss` (before 4.6), and the distribution forms
/// `Killed process N, UID U, (comm) total-vm:…` and `Killed process N (comm), UID U, total-vm:…`.
/// `memcg_hint` supplies `memcg` when the line itself has no reason prefix.
pub fn parse_killed(line: &str, memcg_hint: bool) -> Option<Killed> {
    const MARK: &str = "Killed process ";
    let (reason, rest) = match line.find(": Killed process ") {
        Some(at) if oom_reason(&line[..at]) => (Some(&line[..at]), &line[at + 2 + MARK.len()..]),
        Some(_) => return None,
        None => (None, line.strip_prefix(MARK)?),
    };
    let (pid, rest) = split_int(rest)?;
    let mut uid = None;
    let rest = match rest.strip_prefix(", UID ") {
        // RHEL 6: "Killed process 9682, UID 27, (mysqld) total-vm:…"
        Some(r) => {
            let (u, r) = split_int(r)?;
            uid = Some(u32::try_from(u).ok()?);
            r.strip_prefix(", ")?
        }
        None => rest.strip_prefix(' ')?,
    };
    let rest = rest.strip_prefix('(')?;
    let end = rest
        .rfind(") total-vm:")
        .or_else(|| rest.rfind("), UID "))?;
    let comm = &rest[..end];
    let fields = &rest[end + 1..];
    let kb = |key: &str| field_num(fields, key).and_then(|v| u64::try_from(v).ok());
    if uid.is_none() {
        uid = field_num(fields, "UID:")
            .or_else(|| field_num(fields, ", UID "))
            .and_then(|u| u32::try_from(u).ok());
    }
    Some(Killed {
        memcg: reason.map_or(memcg_hint, |r| r.starts_with("Memory cgroup")),
        reason: reason.map(str::to_string),
        pid: i32::try_from(pid).ok()?,
        comm: comm.to_string(),
        total_vm_kb: kb("total-vm:")?,
        anon_rss_kb: kb("anon-rss:")?,
        file_rss_kb: kb("file-rss:")?,
        shmem_rss_kb: kb("shmem-rss:"),
        uid,
        pgtables_kb: kb("pgtables:"),
        oom_score_adj: field_num(fields, "oom_score_adj:").and_then(|v| i16::try_from(v).ok()),
    })
}

/// `"<reason>: Kill process N (comm) score S or sacrifice child"` (before 5.1): the task the
/// killer selected; the victim actually killed (it or a child) follows in a `Killed` line.
pub fn parse_selected(line: &str) -> Option<(bool, i32, String, u64)> {
    let at = line.find(": Kill process ")?;
    let reason = &line[..at];
    if !oom_reason(reason) {
        return None;
    }
    let rest = &line[at + ": Kill process ".len()..];
    let (pid, rest) = split_int(rest)?;
    let rest = rest.strip_prefix(" (")?;
    let end = rest.rfind(") score ")?;
    let score = leading_int(&rest[end + ") score ".len()..])?;
    Some((
        reason.starts_with("Memory cgroup"),
        i32::try_from(pid).ok()?,
        rest[..end].to_string(),
        u64::try_from(score).ok()?,
    ))
}

/// `"<reason>: OOM victim N (comm) is already exiting. Skip killing the task"` (5.1+).
pub fn parse_victim_exiting(line: &str) -> Option<(bool, i32, String)> {
    let at = line.find(": OOM victim ")?;
    let reason = &line[..at];
    if !oom_reason(reason) {
        return None;
    }
    let (pid, rest) = split_int(&line[at + ": OOM victim ".len()..])?;
    let rest = rest.strip_prefix(" (")?;
    let end = rest.rfind(") is already exiting")?;
    Some((
        reason.starts_with("Memory cgroup"),
        i32::try_from(pid).ok()?,
        rest[..end].to_string(),
    ))
}

/// `"oom_reaper: reaped process N (comm), now anon-rss:…kB, file-rss:…kB, shmem-rss:…kB"` (4.6+).
pub fn parse_reaped(line: &str) -> Option<Reaped> {
    let rest = line.strip_prefix("oom_reaper: reaped process ")?;
    let (pid, rest) = split_int(rest)?;
    let rest = rest.strip_prefix(" (")?;
    let end = rest.rfind("), now anon-rss:")?;
    let fields = &rest[end..];
    let kb = |key: &str| field_num(fields, key).and_then(|v| u64::try_from(v).ok());
    Some(Reaped {
        pid: i32::try_from(pid).ok()?,
        comm: rest[..end].to_string(),
        anon_rss_kb: kb("anon-rss:")?,
        file_rss_kb: kb("file-rss:")?,
        shmem_rss_kb: kb("shmem-rss:")?,
    })
}

/// `"Tasks in <path> are going to be killed due to memory.oom.group set"` (4.19+).
pub fn parse_group_kill(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Tasks in ")?;
    let path = rest.strip_suffix(" are going to be killed due to memory.oom.group set")?;
    Some(path.to_string())
}

/// Before 5.0: `"Task in <task memcg> killed as a result of limit of <oom memcg>"`, or
/// `"Memory limit reached of cgroup <oom memcg>"` when there was no victim.
pub fn parse_memcg_context(line: &str) -> Option<(Option<String>, String)> {
    if let Some(path) = line.strip_prefix("Memory limit reached of cgroup ") {
        return Some((None, path.to_string()));
    }
    let rest = line.strip_prefix("Task in ")?;
    let (task, oom) = rest.split_once(" killed as a result of limit of ")?;
    Some((Some(task.to_string()), oom.to_string()))
}

/// Before 5.0: `"<comm> cpuset=<name> mems_allowed=<list>"`.
pub fn parse_cpuset_context(line: &str) -> Option<(String, String, String)> {
    let m = line.rfind(" mems_allowed=")?;
    let mems = &line[m + " mems_allowed=".len()..];
    let head = &line[..m];
    let c = head.rfind(" cpuset=")?;
    if mems.is_empty()
        || !mems
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        return None;
    }
    Some((
        head[..c].to_string(),
        head[c + " cpuset=".len()..].to_string(),
        mems.to_string(),
    ))
}

/// `"oom_kill_process: N callbacks suppressed"`: printk rate limiting dropped N OOM headers.
pub fn parse_suppressed(line: &str) -> Option<u64> {
    let rest = line
        .strip_prefix("oom_kill_process: ")
        .or_else(|| line.strip_prefix("dump_header: "))?;
    let n = rest.strip_suffix(" callbacks suppressed")?;
    n.parse().ok()
}

/// The number right after the first occurrence of `key` in `s` (digits, optional `-`).
fn field_num(s: &str, key: &str) -> Option<i64> {
    let at = s.find(key)?;
    leading_int(&s[at + key.len()..])
}

/// A leading (optionally negative) decimal integer.
pub fn leading_int(s: &str) -> Option<i64> {
    split_int(s).map(|(v, _)| v)
}

fn split_int(s: &str) -> Option<(i64, &str)> {
    let neg = s.starts_with('-');
    let digits = &s[usize::from(neg)..];
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || end > 19 {
        return None;
    }
    let v: i64 = digits[..end].parse().ok()?;
    Some((if neg { -v } else { v }, &digits[end..]))
}

/// A uid printed with `%d` (or `%u`): `-1` is the kernel's `INVALID_UID` (`(uid_t)-1`).
pub fn leading_uid(s: &str) -> Option<u32> {
    let v = leading_int(s)?;
    u32::try_from(v)
        .ok()
        .or_else(|| i32::try_from(v).ok().map(|x| x as u32))
}
