//! Section "Privileges": what this process may do, from its effective capability set.
use serde::Serialize;

use super::report::{Item, Status};
use crate::sys::caps::{self, CapsError};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_SYSLOG: u32 = 34;

/// The capabilities `oomwatch run` needs, as found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Privileges {
    /// `CapEff` of `/proc/self/status` in hex, as the kernel prints it; `None` if unreadable.
    pub cap_eff: Option<String>,
    /// CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN: the probes can be loaded and attached.
    pub can_load_probes: bool,
    /// The first capability missing for that (`CAP_BPF`, `CAP_PERFMON`), or why it is unknown.
    pub missing: Option<String>,
    pub cap_sys_admin: bool,
    pub cap_syslog: bool,
    pub cap_sys_resource: bool,
    /// `kernel.dmesg_restrict`: 1 means reading `/dev/kmsg` needs CAP_SYSLOG.
    pub dmesg_restrict: Option<i64>,
}

impl Privileges {
    /// From an effective set (`None`: `/proc/self/status` unreadable) and `dmesg_restrict`.
    pub fn from_effective(eff: Option<u64>, dmesg_restrict: Option<i64>) -> Self {
        let has = |c: u32| eff.is_some_and(|e| e & (1u64 << c) != 0);
        let missing = match eff.map(caps::check_effective) {
            Some(Ok(())) => None,
            Some(Err(CapsError::Missing(name))) => Some(name.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("cannot read /proc/self/status".to_string()),
        };
        Privileges {
            cap_eff: eff.map(|e| format!("{e:016x}")),
            can_load_probes: missing.is_none(),
            missing,
            cap_sys_admin: has(CAP_SYS_ADMIN),
            cap_syslog: has(CAP_SYSLOG),
            cap_sys_resource: has(CAP_SYS_RESOURCE),
            dmesg_restrict,
        }
    }

    /// This process's.
    pub fn gather() -> Self {
        let eff = caps::own_sets().map(|(eff, _)| eff);
        let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Self::from_effective(eff, restrict)
    }
}

/// The fix for missing probe privileges.
pub const FIX_BPF: &str = "run oomwatch as root, or grant it CAP_BPF and CAP_PERFMON (kernel \
    5.8+; CAP_SYS_ADMIN before), e.g. `setcap cap_bpf,cap_perfmon,cap_syslog,cap_sys_resource+ep \
    oomwatch`, or in a pod securityContext.capabilities.add: [BPF, PERFMON, SYSLOG, SYS_RESOURCE]";

/// The items of the section. `fatal` is the status of a problem that stops the agent (FAIL, or
/// warn under `--no-probes`); `kmsg` is the status of an unreadable `/dev/kmsg` (warn when the
/// kernel log is, or may be, the OOM context source).
pub fn items(p: &Privileges, fatal: Status, kmsg: Status) -> Vec<Item> {
    let mut out = Vec::new();
    match &p.missing {
        None if p.cap_sys_admin => out.push(Item::ok(
            "caps_bpf",
            "CAP_SYS_ADMIN: can load and attach the eBPF probes",
        )),
        None => out.push(Item::ok(
            "caps_bpf",
            "CAP_BPF and CAP_PERFMON: can load and attach the eBPF probes",
        )),
        Some(missing) => out.push(
            Item::new(
                fatal,
                "caps_bpf",
                format!(
                    "missing capability {missing}: cannot load or attach the eBPF probes \
                     (effective set {})",
                    p.cap_eff.as_deref().unwrap_or("unknown")
                ),
            )
            .with_fix(FIX_BPF),
        ),
    }
    if p.cap_syslog {
        out.push(Item::ok(
            "caps_syslog",
            "CAP_SYSLOG: can read /dev/kmsg (the kernel log, OOM context fallback)",
        ));
    } else if p.dmesg_restrict == Some(0) {
        out.push(Item::ok(
            "caps_syslog",
            "no CAP_SYSLOG, but kernel.dmesg_restrict=0 lets any user read /dev/kmsg",
        ));
    } else {
        out.push(
            Item::new(
                kmsg,
                "caps_syslog",
                "no CAP_SYSLOG and kernel.dmesg_restrict is not 0: cannot read /dev/kmsg, so \
                 without fentry/kprobe on oom_kill_process events carry no OOM context",
            )
            .with_fix("run as root or grant CAP_SYSLOG (`setcap cap_syslog+ep`, pod: SYSLOG)"),
        );
    }
    if p.cap_sys_resource {
        out.push(Item::ok(
            "caps_sys_resource",
            "CAP_SYS_RESOURCE: can lower its own oom_score_adj (--oom-score-adj, default -999) \
             so the OOM killer spares it",
        ));
    } else {
        out.push(
            Item::new(
                Status::Warn,
                "caps_sys_resource",
                "no CAP_SYS_RESOURCE: cannot lower its own oom_score_adj, so the agent stays \
                 killable by the OOM killer it watches (it still runs)",
            )
            .with_fix(
                "grant CAP_SYS_RESOURCE (`setcap cap_sys_resource+ep`, pod: SYS_RESOURCE), or \
                 set it from outside (systemd OOMScoreAdjust=-999)",
            ),
        );
    }
    out
}
