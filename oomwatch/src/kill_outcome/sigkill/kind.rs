//! Who sent a SIGKILL (`sender_kind`), from what the kernel said at the signal: its `si_code`,
//! the sender's executable file (read in eBPF from `task->mm->exe_file`, so a name chosen with
//! `prctl(PR_SET_NAME)` changes nothing), the OOM kill it belongs to, and the sender's cgroup.
use serde::Serialize;

use crate::sys::procfs::Executable;

/// uapi `SI_KERNEL`: the kernel's own kills (OOM killer, group sweep, pid-namespace teardown).
pub const SI_KERNEL: i32 = 0x80;

/// The sender's kind (`sender_kind`); see `docs/events.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// The kernel's OOM killer (the event with the same `oom_id`).
    OomKernel,
    /// A `memory.oom.group` sweep: every task of the cgroup killed with the victim.
    OomGroup,
    /// A userspace OOM killer (systemd-oomd, earlyoom, oomd, nohang, lmkd), by its executable.
    OomUserspace,
    /// kubelet's own process. Rare: kubelet stops and evicts containers through the CRI, so
    /// the runtime sends those signals (`Runtime`).
    Kubelet,
    /// A container runtime stopping or killing the container (containerd-shim, runc, crun,
    /// conmon, dockerd, podman).
    Runtime,
    /// The process killed itself, or the kernel tore down its own container (its init died).
    #[serde(rename = "self")]
    SelfKill,
    /// Anyone else: a shell, an operator's `kill -9`, a program of the workload.
    Other,
}

impl SenderKind {
    pub const ALL: [SenderKind; 7] = [
        SenderKind::OomKernel,
        SenderKind::OomGroup,
        SenderKind::OomUserspace,
        SenderKind::Kubelet,
        SenderKind::Runtime,
        SenderKind::SelfKill,
        SenderKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::OomKernel => "oom_kernel",
            SenderKind::OomGroup => "oom_group",
            SenderKind::OomUserspace => "oom_userspace",
            SenderKind::Kubelet => "kubelet",
            SenderKind::Runtime => "runtime",
            SenderKind::SelfKill => "self",
            SenderKind::Other => "other",
        }
    }
}

/// Executables of userspace OOM killers (nohang is a Python script: its interpreter's argument).
const USERSPACE_KILLERS: [&str; 5] = ["earlyoom", "systemd-oomd", "oomd", "nohang", "lmkd"];
/// Executables of container runtimes that send a container's stop or kill signal.
const RUNTIMES: [&str; 13] = [
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "containerd",
    "runc",
    "crun",
    "conmon",
    "dockerd",
    "docker-init",
    "podman",
    "crio",
    "runsc",
    "youki",
];
/// Interpreters a killer may be a script of.
const INTERPRETERS: [&str; 3] = ["python", "perl", "ruby"];

/// What is known of the sender when its kind is decided.
#[derive(Debug, Default)]
pub struct Sender<'a> {
    pub code: Option<i32>,
    pub tgid: i32,
    pub target_tgid: Option<i32>,
    pub cgroup: Option<&'a str>,
    pub target_cgroup: Option<&'a str>,
    /// The executable's file name as the kernel had it at the signal.
    pub exe_name: Option<&'a str>,
    /// `/proc/<sender>` when the record arrived (owner of the executable, arguments).
    pub proc: Option<&'a Executable>,
}

/// The sender's kind. `oom`: the OOM kill this signal belongs to, and whether it was a
/// `memory.oom.group` sweep.
pub fn classify(s: &Sender<'_>, oom: Option<bool>) -> SenderKind {
    if let Some(group) = oom {
        return if group {
            SenderKind::OomGroup
        } else {
            SenderKind::OomKernel
        };
    }
    let same_cgroup = s.cgroup.is_some() && s.cgroup == s.target_cgroup;
    if Some(s.tgid) == s.target_tgid || (s.code == Some(SI_KERNEL) && same_cgroup) {
        return SenderKind::SelfKill;
    }
    if s.code == Some(SI_KERNEL) {
        return SenderKind::Other;
    }
    let Some(name) = s.exe_name.filter(|_| trusted_file(s.proc)) else {
        return SenderKind::Other;
    };
    if USERSPACE_KILLERS.contains(&name) || script_of(name, s.proc, &USERSPACE_KILLERS) {
        SenderKind::OomUserspace
    } else if name == "kubelet" {
        SenderKind::Kubelet
    } else if RUNTIMES.contains(&name) {
        SenderKind::Runtime
    } else {
        SenderKind::Other
    }
}

/// Whether the sender's `/proc` entry (its executable's owner, its arguments) can change its
/// kind: only for a name the rules know, never for the kernel's own kills. The others are not
/// read at all: a kill during a global OOM must not make the agent allocate for nothing.
pub fn proc_matters(code: Option<i32>, exe_name: Option<&str>) -> bool {
    let Some(n) = exe_name else { return false };
    code != Some(SI_KERNEL)
        && (USERSPACE_KILLERS.contains(&n)
            || RUNTIMES.contains(&n)
            || n == "kubelet"
            || INTERPRETERS.iter().any(|i| n.starts_with(i)))
}

/// Whether the executable may be taken at its name: a root-owned file nobody else may write,
/// or one the agent cannot look at (then the eBPF name alone decides).
fn trusted_file(proc: Option<&Executable>) -> bool {
    match proc.and_then(|p| p.exe.as_ref()) {
        Some((_, root_owned)) => *root_owned,
        None => true,
    }
}

/// An interpreter running one of `names` as its script.
fn script_of(name: &str, proc: Option<&Executable>, names: &[&str]) -> bool {
    INTERPRETERS.iter().any(|i| name.starts_with(i))
        && proc.is_some_and(|p| p.args.iter().any(|a| names.contains(&a.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(name: &str, root_owned: bool, args: &[&str]) -> Executable {
        Executable {
            exe: Some((name.into(), root_owned)),
            cap_kill: true,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn by(name: &str, proc: Option<&Executable>) -> SenderKind {
        let s = Sender {
            code: Some(0),
            tgid: 10,
            target_tgid: Some(20),
            cgroup: Some("/system.slice/x.service"),
            target_cgroup: Some("/docker/abc"),
            exe_name: Some(name),
            proc,
        };
        classify(&s, None)
    }

    #[test]
    fn senders_are_known_by_their_executable() {
        assert_eq!(by("earlyoom", None), SenderKind::OomUserspace);
        assert_eq!(by("systemd-oomd", None), SenderKind::OomUserspace);
        assert_eq!(by("runc", None), SenderKind::Runtime);
        assert_eq!(by("containerd-shim-runc-v2", None), SenderKind::Runtime);
        assert_eq!(by("conmon", None), SenderKind::Runtime);
        assert_eq!(by("kubelet", None), SenderKind::Kubelet);
        assert_eq!(by("bash", None), SenderKind::Other);
        assert_eq!(by("kill", None), SenderKind::Other);
        let nohang = exe("python3.11", true, &["nohang", "--monitor"]);
        assert_eq!(by("python3.11", Some(&nohang)), SenderKind::OomUserspace);
    }

    #[test]
    fn a_name_is_not_enough() {
        // A Python process that calls itself earlyoom: its executable is python.
        let forged = exe("python3.11", true, &["-c"]);
        assert_eq!(by("python3.11", Some(&forged)), SenderKind::Other);
        // A user's own copy of a killer's binary.
        let copy = exe("earlyoom", false, &[]);
        assert_eq!(by("earlyoom", Some(&copy)), SenderKind::Other);
        // No executable read at the signal.
        let s = Sender {
            code: Some(0),
            tgid: 1,
            target_tgid: Some(2),
            ..Sender::default()
        };
        assert_eq!(classify(&s, None), SenderKind::Other);
    }

    #[test]
    fn kernel_kills_are_oom_group_self_or_other() {
        let mut s = Sender {
            code: Some(SI_KERNEL),
            tgid: 10,
            target_tgid: Some(20),
            cgroup: Some("/docker/abc"),
            target_cgroup: Some("/docker/abc"),
            exe_name: Some("runc"),
            proc: None,
        };
        assert_eq!(classify(&s, Some(false)), SenderKind::OomKernel);
        assert_eq!(classify(&s, Some(true)), SenderKind::OomGroup);
        // The container's init died: the kernel kills the rest of its pid namespace.
        assert_eq!(classify(&s, None), SenderKind::SelfKill);
        s.cgroup = Some("/elsewhere");
        assert_eq!(classify(&s, None), SenderKind::Other);
        // A process that kills itself.
        s.code = Some(0);
        s.target_tgid = Some(10);
        assert_eq!(classify(&s, None), SenderKind::SelfKill);
    }

    #[test]
    fn proc_is_read_only_when_it_can_change_the_kind() {
        assert!(proc_matters(Some(0), Some("earlyoom")));
        assert!(proc_matters(Some(0), Some("runc")));
        assert!(proc_matters(Some(0), Some("python3.11")));
        assert!(!proc_matters(Some(0), Some("bash")));
        assert!(
            !proc_matters(Some(SI_KERNEL), Some("earlyoom")),
            "the kernel's own kill"
        );
        assert!(!proc_matters(Some(0), None));
    }
}
