//! The host values as a typed snapshot, and the risky-settings rules over them.
use crate::sys::text::human;
use std::collections::BTreeMap;

use serde::Serialize;

/// Memory of one NUMA node, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    pub total_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
}

/// One PSI line, as the kernel prints it (percentages, microseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PsiAverages {
    pub avg10_percent: f64,
    pub avg60_percent: f64,
    pub avg300_percent: f64,
    pub total_stall_us: u64,
}

/// Everything the host collectors read, `None` where unknown (collector failed, file absent).
/// Sysctls keep the kernel's units (kB, percent); `/proc/meminfo` values are in bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostSnapshot {
    pub panic_on_oom: Option<i64>,
    pub oom_kill_allocating_task: Option<i64>,
    pub oom_dump_tasks: Option<i64>,
    pub overcommit_memory: Option<i64>,
    /// Percent.
    pub overcommit_ratio: Option<i64>,
    pub overcommit_kbytes: Option<u64>,
    pub min_free_kbytes: Option<u64>,
    /// Units of 1/10000.
    pub watermark_scale_factor: Option<i64>,
    /// The kernel's `calculate_min_free_kbytes()` for this machine (see `host::sysctl`).
    pub min_free_default_kbytes: Option<u64>,
    /// What khugepaged raises `min_free_kbytes` to; `Some` only while THP is enabled.
    pub min_free_thp_recommended_kbytes: Option<u64>,
    pub thp_enabled: Option<bool>,
    /// `kernel.printk`'s first field: messages more urgent than this reach the consoles.
    pub console_loglevel: Option<i64>,
    /// The consoles the kernel prints on (`/proc/consoles`).
    pub consoles: Vec<String>,

    pub mem_total_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
    pub commit_limit_bytes: Option<u64>,
    pub committed_as_bytes: Option<u64>,
    /// By node number; empty without NUMA sysfs.
    pub numa_nodes: BTreeMap<u32, NumaNode>,

    /// `Some(false)` when PSI is not built in or disabled.
    pub psi_supported: Option<bool>,
    pub psi_some: Option<PsiAverages>,
    pub psi_full: Option<PsiAverages>,

    /// `oom_kill` of `/proc/vmstat`.
    pub kernel_oom_kills: Option<u64>,

    /// Collectors that failed, with the reason.
    pub collector_errors: BTreeMap<&'static str, String>,
}

/// A risky setting: a stable code and a one-line explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: &'static str,
    pub message: String,
}

impl HostSnapshot {
    /// The `min_free_kbytes` the kernel would have chosen itself: its own default, or
    /// khugepaged's recommendation when THP is enabled and that is larger.
    pub fn min_free_expected_kbytes(&self) -> Option<u64> {
        let default = self.min_free_default_kbytes?;
        Some(default.max(self.min_free_thp_recommended_kbytes.unwrap_or(0)))
    }

    /// The risky settings found, one line each, in a fixed order.
    ///
    /// | Code | Rule |
    /// |------|------|
    /// | `panic_on_oom_always` | `vm.panic_on_oom=2` |
    /// | `panic_on_oom` | `vm.panic_on_oom=1` |
    /// | `oom_kill_allocating_task` | `vm.oom_kill_allocating_task` ≠ 0 |
    /// | `overcommit_near_limit` | `vm.overcommit_memory=2` and `Committed_AS` ≥ 90% of `CommitLimit` |
    /// | `overcommit_always` | `vm.overcommit_memory=1` |
    /// | `min_free_kbytes_high` | `min_free_kbytes` above the expected value by more than 5% of `MemTotal` |
    /// | `min_free_kbytes_low` | `min_free_kbytes` below half the kernel's default, or below the expected value by more than 5% of `MemTotal` |
    /// | `oom_dump_tasks_off` | `vm.oom_dump_tasks=0` |
    /// | `oom_kill_lines_on_console` | `kernel.printk`'s console log level above 3 (`KERN_ERR` passes) and an enabled serial console in `/proc/consoles` (`ttyS`, `ttyAMA`, `hvc`, ...) |
    ///
    /// The expected `min_free_kbytes` is [`min_free_expected_kbytes`](Self::min_free_expected_kbytes).
    /// "Below by more than 5% of MemTotal" cannot happen in practice (the default is
    /// `4·√lowmem`, far less than 5% of memory on any machine over a few MB; khugepaged's value
    /// is capped at 5% of lowmem), so the low rule also fires below half the default.
    pub fn warnings(&self) -> Vec<Warning> {
        [
            self.panic_on_oom_warning(),
            self.allocating_task_warning(),
            self.overcommit_warning(),
            self.min_free_warning(),
            self.dump_tasks_warning(),
            self.console_warning(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `panic_on_oom_always`, `panic_on_oom`.
    fn panic_on_oom_warning(&self) -> Option<Warning> {
        match self.panic_on_oom {
            Some(2) => Some(warning(
                "panic_on_oom_always",
                "vm.panic_on_oom=2: every OOM panics the node, even one confined to a \
                 container's memory cgroup or a cpuset; instead of one task being killed, the \
                 whole node goes down"
                    .into(),
            )),
            Some(1) => Some(warning(
                "panic_on_oom",
                "vm.panic_on_oom=1: a system-wide OOM panics the node instead of killing a \
                 task (OOMs confined to a memory cgroup, cpuset or mempolicy still kill)"
                    .into(),
            )),
            _ => None,
        }
    }

    /// `oom_kill_allocating_task`.
    fn allocating_task_warning(&self) -> Option<Warning> {
        let v = self.oom_kill_allocating_task.filter(|&v| v != 0)?;
        Some(warning(
            "oom_kill_allocating_task",
            format!(
                "vm.oom_kill_allocating_task={v}: a system-wide OOM kills whichever task \
                 happened to allocate, not the one using the most memory, so the real \
                 consumer keeps running and OOMs repeat"
            ),
        ))
    }

    /// `overcommit_near_limit`, `overcommit_always`.
    fn overcommit_warning(&self) -> Option<Warning> {
        match self.overcommit_memory {
            Some(2) => {
                let (committed, limit) = self.committed_as_bytes.zip(self.commit_limit_bytes)?;
                if u128::from(committed) * 10 < u128::from(limit) * 9 {
                    return None;
                }
                let pct = (u128::from(committed) * 100)
                    .checked_div(u128::from(limit))
                    .map_or_else(|| "all".to_owned(), |p| format!("{p}%"));
                Some(warning(
                    "overcommit_near_limit",
                    format!(
                        "vm.overcommit_memory=2 and Committed_AS is {pct} of \
                         CommitLimit ({} of {}): new allocations (malloc, mmap, fork) \
                         are about to fail with ENOMEM",
                        human(committed),
                        human(limit)
                    ),
                ))
            }
            Some(1) => Some(warning(
                "overcommit_always",
                "vm.overcommit_memory=1: the kernel never refuses an allocation, so every \
                 overcommitment ends in the OOM killer instead of a failed malloc"
                    .into(),
            )),
            _ => None,
        }
    }

    /// `min_free_kbytes_high`, `min_free_kbytes_low`.
    fn min_free_warning(&self) -> Option<Warning> {
        let cur = self.min_free_kbytes?;
        let default = self.min_free_default_kbytes?;
        let expected = self.min_free_expected_kbytes()?;
        let whose = if expected > default {
            format!(
                "the kernel's value for this machine ({} default raised by khugepaged \
                 because transparent huge pages are enabled)",
                human(expected.saturating_mul(1024))
            )
        } else {
            format!(
                "the kernel's default for this machine ({})",
                human(default.saturating_mul(1024))
            )
        };
        let margin = self.mem_total_bytes.map(|b| b / 1024 / 20);
        if margin.is_some_and(|m| cur > expected.saturating_add(m)) {
            Some(warning(
                "min_free_kbytes_high",
                format!(
                    "vm.min_free_kbytes={cur} is {} above {whose}, more than 5% of \
                     MemTotal: that memory is held back from applications and the OOM \
                     killer runs earlier",
                    human((cur - expected).saturating_mul(1024))
                ),
            ))
        } else if cur < default / 2 || margin.is_some_and(|m| cur.saturating_add(m) < expected) {
            Some(warning(
                "min_free_kbytes_low",
                format!(
                    "vm.min_free_kbytes={cur} is far below {whose}: atomic allocations \
                     (network receive, interrupt handlers) can fail and reclaim starts too \
                     late"
                ),
            ))
        } else {
            None
        }
    }

    /// `oom_dump_tasks_off`.
    fn dump_tasks_warning(&self) -> Option<Warning> {
        (self.oom_dump_tasks == Some(0)).then(|| {
            warning(
                "oom_dump_tasks_off",
                "vm.oom_dump_tasks=0: the kernel log of an OOM kill lacks the list of candidate \
                 tasks and their memory use, so the victim choice cannot be reviewed"
                    .into(),
            )
        })
    }

    /// `oom_kill_lines_on_console`.
    fn console_warning(&self) -> Option<Warning> {
        let level = self.console_loglevel.filter(|&l| l > KERN_ERR)?;
        let serial: Vec<&str> = self
            .consoles
            .iter()
            .map(String::as_str)
            .filter(|c| SERIAL_CONSOLES.iter().any(|p| c.starts_with(p)))
            .collect();
        if serial.is_empty() {
            return None;
        }
        let report = if level > KERN_WARNING {
            "; at this level the rest of the OOM report (memory state, task list) too"
        } else {
            ""
        };
        Some(warning(
            "oom_kill_lines_on_console",
            format!(
                "kernel.printk console log level {level} prints every OOM kill's \
                 \"Killed process\" line (KERN_ERR) on the serial console {}{report}: the \
                 killing task writes it with interrupts off, about 15 ms per line at 115200 \
                 baud, and every wake-up on that CPU waits, OOM records included",
                serial.join(", ")
            ),
        ))
    }
}

/// `KERN_ERR`: the level of the OOM killer's "Killed process" line.
const KERN_ERR: i64 = 3;
/// `KERN_WARNING`: the OOM report's header and memory state; the task list is `KERN_INFO`.
const KERN_WARNING: i64 = 4;
/// Console name prefixes of serial (UART, hypervisor) consoles, where each line costs
/// milliseconds.
const SERIAL_CONSOLES: [&str; 8] = [
    "ttyS", "ttyAMA", "ttyUSB", "ttySAC", "ttymxc", "ttyPS", "ttyMSM", "hvc",
];

fn warning(code: &'static str, message: String) -> Warning {
    Warning { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A sane 16 GiB machine: no warnings.
    fn sane() -> HostSnapshot {
        HostSnapshot {
            panic_on_oom: Some(0),
            oom_kill_allocating_task: Some(0),
            oom_dump_tasks: Some(1),
            overcommit_memory: Some(0),
            min_free_kbytes: Some(16_384),
            min_free_default_kbytes: Some(16_384),
            mem_total_bytes: Some(16 * GIB),
            commit_limit_bytes: Some(8 * GIB),
            committed_as_bytes: Some(15 * GIB),
            ..HostSnapshot::default()
        }
    }

    fn codes(s: &HostSnapshot) -> Vec<&'static str> {
        s.warnings().iter().map(|w| w.code).collect()
    }

    #[test]
    fn sane_machine_and_empty_snapshot_have_no_warnings() {
        assert!(codes(&sane()).is_empty(), "{:?}", sane().warnings());
        assert!(codes(&HostSnapshot::default()).is_empty());
    }

    #[test]
    fn panic_on_oom() {
        let s = HostSnapshot {
            panic_on_oom: Some(2),
            ..sane()
        };
        assert_eq!(codes(&s), ["panic_on_oom_always"]);
        assert!(s.warnings()[0].message.contains("memory cgroup"));
        let s = HostSnapshot {
            panic_on_oom: Some(1),
            ..sane()
        };
        assert_eq!(codes(&s), ["panic_on_oom"]);
    }

    #[test]
    fn kill_lines_on_a_console_warn_only_when_they_pass_the_log_level() {
        let on = HostSnapshot {
            console_loglevel: Some(4),
            consoles: vec!["ttyS0".into(), "tty0".into()],
            ..sane()
        };
        assert_eq!(codes(&on), ["oom_kill_lines_on_console"]);
        let m = &on.warnings()[0].message;
        assert!(m.contains("level 4") && m.contains("console ttyS0:"), "{m}");
        let loud = HostSnapshot {
            console_loglevel: Some(7),
            ..on.clone()
        };
        assert!(loud.warnings()[0].message.contains("task list"));
        let vt = HostSnapshot {
            consoles: vec!["tty0".into()],
            ..on.clone()
        };
        assert!(codes(&vt).is_empty(), "a VT console is not serial");
        let quiet = HostSnapshot {
            console_loglevel: Some(3),
            ..on.clone()
        };
        assert!(codes(&quiet).is_empty());
        let none = HostSnapshot {
            consoles: Vec::new(),
            ..on.clone()
        };
        assert!(codes(&none).is_empty());
        let unknown = HostSnapshot {
            console_loglevel: None,
            ..on
        };
        assert!(codes(&unknown).is_empty());
    }

    #[test]
    fn allocating_task_and_dump_tasks() {
        let s = HostSnapshot {
            oom_kill_allocating_task: Some(1),
            oom_dump_tasks: Some(0),
            ..sane()
        };
        assert_eq!(
            codes(&s),
            ["oom_kill_allocating_task", "oom_dump_tasks_off"]
        );
    }

    #[test]
    fn strict_overcommit_warns_only_near_the_limit() {
        let mut s = HostSnapshot {
            overcommit_memory: Some(2),
            commit_limit_bytes: Some(10 * GIB),
            committed_as_bytes: Some(9 * GIB - 1),
            ..sane()
        };
        assert!(codes(&s).is_empty());
        s.committed_as_bytes = Some(9 * GIB);
        assert_eq!(codes(&s), ["overcommit_near_limit"]);
        assert!(
            s.warnings()[0].message.contains("90% of CommitLimit"),
            "{:?}",
            s.warnings()
        );
        s.commit_limit_bytes = Some(0);
        assert_eq!(
            codes(&s),
            ["overcommit_near_limit"],
            "zero limit: no division"
        );
        s.committed_as_bytes = None;
        assert!(codes(&s).is_empty());
    }

    #[test]
    fn always_overcommit() {
        let s = HostSnapshot {
            overcommit_memory: Some(1),
            ..sane()
        };
        assert_eq!(codes(&s), ["overcommit_always"]);
    }

    #[test]
    fn min_free_far_above_default() {
        // 5% of 16 GiB is 838860.8 kB.
        let mut s = HostSnapshot {
            min_free_kbytes: Some(16_384 + 838_860),
            ..sane()
        };
        assert!(codes(&s).is_empty());
        s.min_free_kbytes = Some(16_384 + 838_861);
        assert_eq!(codes(&s), ["min_free_kbytes_high"]);
        s.mem_total_bytes = None;
        assert!(codes(&s).is_empty(), "no MemTotal, no rule");
    }

    #[test]
    fn min_free_far_below_default() {
        let mut s = HostSnapshot {
            min_free_kbytes: Some(8192),
            ..sane()
        };
        assert!(codes(&s).is_empty());
        s.min_free_kbytes = Some(8191);
        assert_eq!(codes(&s), ["min_free_kbytes_low"]);
    }

    #[test]
    fn thp_recommendation_is_the_expected_value() {
        let mut s = HostSnapshot {
            min_free_kbytes: Some(67_584),
            min_free_default_kbytes: Some(12_367),
            min_free_thp_recommended_kbytes: Some(67_584),
            mem_total_bytes: Some(GIB),
            ..sane()
        };
        assert_eq!(s.min_free_expected_kbytes(), Some(67_584));
        assert!(codes(&s).is_empty());
        // Without THP the same value is 55 MB above the default, over 5% of 1 GiB.
        s.min_free_thp_recommended_kbytes = None;
        assert_eq!(codes(&s), ["min_free_kbytes_high"]);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(9 * GIB), "9.0 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}
