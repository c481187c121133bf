//! Privileges: what the agent needs before it touches the kernel, and protecting itself from the
//! OOM killer it watches.
use std::fs;
use std::io;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("missing capability {0}: run oomwatch as root, or grant it CAP_BPF and CAP_PERFMON (e.g. `setcap cap_bpf,cap_perfmon+ep oomwatch`)")]
    Missing(&'static str),
    #[error("cannot read /proc/self/status to check capabilities: {0}")]
    Read(io::Error),
}

/// Parses the `CapEff:` line of `/proc/<pid>/status`.
pub fn effective_from_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Checks that `eff` allows loading and attaching tracing programs: CAP_BPF and CAP_PERFMON, or
/// CAP_SYS_ADMIN (which covers both, and is required on kernels before 5.8).
pub fn check_effective(eff: u64) -> Result<(), CapsError> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if !has(CAP_BPF) {
        return Err(CapsError::Missing("CAP_BPF"));
    }
    if !has(CAP_PERFMON) {
        return Err(CapsError::Missing("CAP_PERFMON"));
    }
    Ok(())
}

/// Checks this process's effective capabilities.
pub fn check_self() -> Result<(), CapsError> {
    let status = fs::read_to_string("/proc/self/status").map_err(CapsError::Read)?;
    check_effective(effective_from_status(&status).unwrap_or(0))
}

/// Sets this process's `oom_score_adj`. Lowering it needs CAP_SYS_RESOURCE; the error says so.
pub fn set_own_oom_score_adj(value: i16) -> io::Result<()> {
    fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            io::Error::new(
                e.kind(),
                "permission denied: lowering oom_score_adj needs CAP_SYS_RESOURCE",
            )
        } else {
            e
        }
    })
}

/// Why the agent can die in a global OOM whatever its badness: with
/// `vm.oom_kill_allocating_task=1` the kernel kills the task that allocated, skipping only
/// tasks at -1000 (`out_of_memory()`). `None` when that cannot happen.
pub fn allocating_task_risk(oom_kill_allocating_task: Option<i64>, own_adj: i16) -> Option<String> {
    (oom_kill_allocating_task.is_some_and(|v| v != 0) && own_adj > -1000).then(|| {
        format!(
            "vm.oom_kill_allocating_task is set: a global OOM kills whichever task is \
             allocating, this agent too at oom_score_adj {own_adj}; run it with \
             --oom-score-adj -1000 to exempt it"
        )
    })
}

/// Sets this process's nice value. Lowering it needs CAP_SYS_NICE; the error says so.
pub fn set_own_nice(value: i32) -> io::Result<()> {
    // SAFETY: setpriority takes integer arguments only; `0` means this process.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, value) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
        return Err(io::Error::new(
            e.kind(),
            "permission denied: a negative nice value needs CAP_SYS_NICE",
        ));
    }
    Err(e)
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties this process's capability bounding set as far as it may (each drop needs
/// `CAP_SETPCAP`, which a pod granted only BPF, PERFMON and SYSLOG lacks; with no_new_privs set
/// the bounding set no longer matters to it) and returns how many capabilities left it.
fn drop_bounding_set() -> u32 {
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    (0..=last)
        // SAFETY: prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) takes integer arguments only.
        .filter(
            |&c| unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) } == 0,
        )
        .count() as u32
}

/// `SECBIT_*` (uapi linux/securebits.h): root gets no capabilities from exec or setuid, the
/// ambient set cannot be raised, capabilities are not kept across setuid; each locked.
const SECUREBITS: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x40 | 0x80;

/// Locks the securebits where the agent may (it needs `CAP_SETPCAP`, which a pod granted only
/// BPF, PERFMON and SYSLOG lacks: then no_new_privs and the empty sets do the same job).
/// Returns whether they are locked.
fn lock_securebits() -> bool {
    // SAFETY: prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) takes integer arguments only.
    let ok = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) } == 0;
    if ok {
        tracing::info!("securebits locked (noroot, no setuid fixup, no ambient raise)");
    } else {
        tracing::info!(
            "securebits not locked ({}): no CAP_SETPCAP; no_new_privs and the empty capability \
             sets stand in",
            io::Error::last_os_error()
        );
    }
    ok
}

/// Sets no_new_privs and empties the calling thread's effective, permitted and inheritable
/// capability sets (capabilities are per thread: capset(2) changes only the caller's).
pub fn drop_this_thread() -> io::Result<()> {
    keep_only_this_thread(0)
}

/// `CAP_SYSLOG`: reading the kernel log with syslog(2) when `kernel.dmesg_restrict=1`.
pub const CAP_SYSLOG: u32 = 34;

/// Like [`drop_this_thread`], keeping the capabilities of `keep` (a bit mask of `CAP_*`
/// numbers below 32) effective and permitted.
fn keep_only_this_thread(keep: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hdr = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // v3 splits the sets into two 32-bit words: capabilities 0–31, then 32–63.
    let mut data = [CapData::default(); 2];
    data[1] = CapData {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    // SAFETY: `hdr` and `data` are valid, correctly sized (v3 takes two CapData) and live for
    // the call; capset only reads `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties this process's effective, permitted and inheritable capability sets (the ambient
/// set follows the permitted one) and, as far as it may, its bounding set, and sets
/// no_new_privs. Fails when any thread still holds a capability afterwards: threads started
/// before must have dropped theirs ([`drop_this_thread`]). Returns how many capabilities left
/// the bounding set. Open descriptors (attached programs, maps, `/dev/kmsg`, the listening
/// socket) keep working; nothing can be loaded or attached afterwards.
pub fn drop_all() -> io::Result<u32> {
    drop_all_but_syslog(false)
}

/// [`drop_all`], but with `syslog` the calling thread keeps `CAP_SYSLOG` (and nothing else): the
/// kernel log read with syslog(2) checks it at every read, unlike an open `/dev/kmsg`.
pub fn drop_all_but_syslog(syslog: bool) -> io::Result<u32> {
    let keep = if syslog { 1 << (CAP_SYSLOG - 32) } else { 0 };
    let bounding = drop_bounding_set();
    lock_securebits();
    keep_only_this_thread(keep)?;
    let allowed = u64::from(keep) << 32;
    for entry in fs::read_dir("/proc/self/task")?.flatten() {
        let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if effective_from_status(&status).is_some_and(|e| e & !allowed != 0) {
            return Err(io::Error::other(format!(
                "thread {} still holds capabilities",
                entry.file_name().to_string_lossy()
            )));
        }
    }
    Ok(bounding)
}

/// The `CapEff`, `CapPrm` of `/proc/self/status` (for tests and `oomwatch check`).
pub fn own_sets() -> Option<(u64, u64)> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    };
    Some((field("CapEff:")?, field("CapPrm:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocating_task_setting_spares_only_minus_1000() {
        assert!(allocating_task_risk(Some(1), -999)
            .unwrap()
            .contains("--oom-score-adj -1000"));
        assert_eq!(allocating_task_risk(Some(1), -1000), None);
        assert_eq!(allocating_task_risk(Some(0), -999), None);
        assert_eq!(allocating_task_risk(None, 0), None);
    }

    #[test]
    fn root_without_sys_resource_passes() {
        let eff = effective_from_status("Name:\tx\nCapEff:\t000001fffeffffff\n").unwrap();
        assert!(check_effective(eff).is_ok());
    }

    #[test]
    fn bpf_and_perfmon_without_sys_admin_pass() {
        assert!(check_effective((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn missing_capability_is_named() {
        let e = check_effective(1 << CAP_PERFMON).unwrap_err();
        assert!(e.to_string().starts_with("missing capability CAP_BPF"));
        let e = check_effective(1 << CAP_BPF).unwrap_err();
        assert!(e.to_string().contains("CAP_PERFMON"));
        assert!(matches!(
            check_effective(0),
            Err(CapsError::Missing("CAP_BPF"))
        ));
    }

    #[test]
    fn unparsable_status_has_no_caps() {
        assert_eq!(effective_from_status("CapEff:\tzz\n"), None);
    }
}
