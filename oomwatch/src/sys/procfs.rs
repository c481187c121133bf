//! Reading a victim's `/proc/<pid>` files, to fill fields the kernel event lacks (kernels whose
//! `mark_victim` carries only the pid). Read after the kill: a value is used only if the process
//! is still there; a missing process or line leaves the field absent.
use std::fs;
use std::path::Path;

/// What `/proc/<pid>/status` and friends said about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub comm: Option<String>,
    pub tgid: Option<i32>,
    pub uid: Option<u32>,
    /// Bytes.
    pub total_vm: Option<u64>,
    pub anon_rss: Option<u64>,
    pub file_rss: Option<u64>,
    pub shmem_rss: Option<u64>,
    pub pgtables: Option<u64>,
    pub oom_score_adj: Option<i16>,
    /// The memory controller's cgroup path (v1 `memory` line, else the v2 `0::` line).
    pub cgroup: Option<String>,
}

/// Parses `/proc/<pid>/status`. Memory lines are in kB and converted to bytes.
pub fn parse_status(text: &str, info: &mut ProcInfo) {
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let kb = || {
            value
                .strip_suffix("kB")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .and_then(|n| n.checked_mul(1024))
        };
        match key {
            "Name" => info.comm = Some(value.to_string()),
            "Tgid" => info.tgid = value.parse().ok(),
            "Uid" => info.uid = value.split_whitespace().next().and_then(|u| u.parse().ok()),
            "VmSize" => info.total_vm = kb(),
            "RssAnon" => info.anon_rss = kb(),
            "RssFile" => info.file_rss = kb(),
            "RssShmem" => info.shmem_rss = kb(),
            "VmPTE" => info.pgtables = kb(),
            _ => {}
        }
    }
}

/// The memory cgroup from `/proc/<pid>/cgroup`: the v1 line listing `memory`, else the v2 `0::`
/// line. A path outside the reader's cgroup namespace (`/../..`, as an agent in a container
/// sees the host's processes) cannot be named in host terms and gives `None`.
pub fn parse_cgroup(text: &str) -> Option<String> {
    parse_cgroup_any(text).filter(|p| !p.split('/').any(|c| c == ".."))
}

fn parse_cgroup_any(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    v2
}

/// A `/proc` text file, bytes that are not UTF-8 replaced by U+FFFD: `status` and `stat` hold
/// the comm, which any process may set to any bytes; reading them as strict UTF-8 would make
/// such a process invisible.
pub fn read_text(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads what is still readable of `<proc_root>/<pid>`.
pub fn read(proc_root: &Path, pid: i32) -> ProcInfo {
    let dir = proc_root.join(pid.to_string());
    let mut info = ProcInfo::default();
    // The cgroup first, then the status: an exiting task is moved to the root cgroup
    // (`cgroup_exit()`) only after it has dropped its memory (`exit_mm()`), so if the status
    // read afterwards still shows memory, the cgroup read before it was the task's own. A
    // victim that has already dropped its memory gets no cgroup rather than a wrong `/`.
    let cgroup = fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|s| parse_cgroup(&s));
    if let Some(text) = read_text(&dir.join("status")) {
        parse_status(&text, &mut info);
    }
    info.oom_score_adj = fs::read_to_string(dir.join("oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    info.cgroup = cgroup.filter(|_| info.total_vm.is_some());
    info
}

/// `CAP_KILL`'s bit in the capability sets of `/proc/<pid>/status` (uapi capability.h).
const CAP_KILL: u32 = 5;

/// What `/proc/<pid>` says of a signal's sender, read while it runs: its executable (the
/// inode `exe` points to, whatever mount namespace named it) and its privilege.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executable {
    /// The file name of `exe` (a `" (deleted)"` suffix, after an upgrade, removed), and
    /// whether that file is owned by root and not writable by group or others. `None` when
    /// `exe` cannot be read: it needs ptrace access to the sender, which a process without
    /// capabilities (the agent after start-up) lacks for a more privileged sender.
    pub exe: Option<(String, bool)>,
    /// `CAP_KILL` in the effective set (root has it): allowed to kill other users' processes.
    /// From `status`, which anyone may read.
    pub cap_kill: bool,
    /// The file names of its first arguments (for an interpreter: the script).
    pub args: Vec<String>,
}

/// Whether `CapEff` of a `/proc/<pid>/status` text holds `CAP_KILL`.
pub fn parse_cap_kill(status: &str) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(caps & (1 << CAP_KILL) != 0)
}

/// The sender `pid`'s executable and privilege; `None` when it is gone.
pub fn executable(proc_root: &Path, pid: i32) -> Option<Executable> {
    use std::os::unix::fs::MetadataExt;
    let dir = proc_root.join(pid.to_string());
    let status = read_text(&dir.join("status"))?;
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let exe = fs::read_link(dir.join("exe")).ok().and_then(|link| {
        let meta = fs::metadata(dir.join("exe")).ok()?;
        let path = link.to_string_lossy();
        let name = base(path.strip_suffix(" (deleted)").unwrap_or(&path));
        Some((name, meta.uid() == 0 && meta.mode() & 0o022 == 0))
    });
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    Some(Executable {
        exe,
        cap_kill: parse_cap_kill(&status)?,
        args: cmdline
            .split(|b| *b == 0)
            .skip(1)
            .take(4)
            .map(|a| base(&String::from_utf8_lossy(a)))
            .collect(),
    })
}

/// `PF_KTHREAD` in `task_struct.flags` (include/linux/sched.h, unchanged since 2.6.27).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether `/proc/<pid>/stat` (its 9th field, `flags`) marks a kernel thread.
pub fn parse_kernel_thread(stat: &str) -> Option<bool> {
    // The comm (2nd field) is in parentheses and may hold spaces or ')': split after the last.
    let rest = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_KTHREAD != 0)
}

/// The memory cgroup `/proc/<pid>/cgroup` names now, unproved: a hint to check (by inode)
/// before walking the hierarchy for a cgroup id, never a value on its own (an exiting task
/// shows the root).
pub fn cgroup_hint(proc_root: &Path, pid: i32) -> Option<String> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    parse_cgroup(&fs::read_to_string(path).ok()?)
}

/// The memory cgroup of a kernel thread (a kworker running a manual OOM kill, sysrq f), which
/// [`read`] leaves out because a kernel thread has no memory of its own to prove the cgroup
/// read was still its own. `None` for other tasks or when they are gone.
pub fn kernel_thread_cgroup(proc_root: &Path, pid: i32) -> Option<String> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    if !parse_kernel_thread(&stat)? {
        return None;
    }
    parse_cgroup(&fs::read_to_string(dir.join("cgroup")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpython3\nUmask:\t0022\nState:\tR (running)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\t0\t0\t0\nVmPeak:\t  320000 kB\nVmSize:\t  318976 kB\nVmRSS:\t   65536 kB\nRssAnon:\t   64000 kB\nRssFile:\t    1536 kB\nRssShmem:\t       0 kB\nVmPTE:\t     204 kB\nThreads:\t1\n";

    #[test]
    fn status_fields_in_bytes() {
        let mut i = ProcInfo::default();
        parse_status(STATUS, &mut i);
        assert_eq!(i.comm.as_deref(), Some("python3"));
        assert_eq!(i.tgid, Some(4242));
        assert_eq!(i.uid, Some(1000));
        assert_eq!(i.total_vm, Some(318_976 * 1024));
        assert_eq!(i.anon_rss, Some(64_000 * 1024));
        assert_eq!(i.file_rss, Some(1536 * 1024));
        assert_eq!(i.shmem_rss, Some(0));
        assert_eq!(i.pgtables, Some(204 * 1024));
    }

    #[test]
    fn zombie_status_leaves_memory_absent() {
        let mut i = ProcInfo::default();
        parse_status("Name:\tx\nState:\tZ (zombie)\nTgid:\t7\n", &mut i);
        assert_eq!(i.tgid, Some(7));
        assert_eq!(i.anon_rss, None);
    }

    #[test]
    fn cgroup_v1_memory_line_wins_over_v2() {
        let t = "12:pids:/a\n7:memory:/kubepods/pod1/abc\n0::/system.slice/x.service\n";
        assert_eq!(parse_cgroup(t).as_deref(), Some("/kubepods/pod1/abc"));
        assert_eq!(
            parse_cgroup("0::/user.slice\n").as_deref(),
            Some("/user.slice")
        );
        assert_eq!(parse_cgroup("3:cpu,cpuacct:/x\n"), None);
        assert_eq!(parse_cgroup("4:cpu,memory:/y:z\n").as_deref(), Some("/y:z"));
        assert_eq!(parse_cgroup("0::/../../kubepods.slice/x\n"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let i = read(Path::new("/proc"), std::process::id() as i32);
        assert_eq!(i.tgid, Some(std::process::id() as i32));
        assert!(i.anon_rss.is_some());
        assert!(i.oom_score_adj.is_some());
    }

    #[test]
    fn kernel_threads_from_stat_flags() {
        let kworker = "45 (kworker/0:2-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 83 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        assert_eq!(parse_kernel_thread(kworker), Some(true));
        let shell = "4242 (a) b (c)) S 1 4242 4242 34816 4242 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100";
        assert_eq!(parse_kernel_thread(shell), Some(false));
        assert_eq!(parse_kernel_thread("4242 (sh"), None);
        assert_eq!(parse_kernel_thread("4242 (sh) S 1 2"), None);
        // This test's own process is no kernel thread; pid 2 (kthreadd) is one.
        let me = fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(parse_kernel_thread(&me), Some(false));
        if let Ok(kthreadd) = fs::read_to_string("/proc/2/stat") {
            if kthreadd.contains(" (kthreadd) ") {
                assert_eq!(parse_kernel_thread(&kthreadd), Some(true));
            }
        }
        assert_eq!(
            kernel_thread_cgroup(Path::new("/proc"), std::process::id() as i32),
            None
        );
    }
}
