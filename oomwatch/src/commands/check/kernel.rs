//! Section "Kernel": what the running kernel offers the probes. Read where the agent reads it
//! (absolute paths: the kernel is the host's even in a container), except the memory cgroup
//! hierarchy, which is found under `--host-root` as the agent does.
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::report::{one_line, Item, Status};
use crate::source::btf::Btf;
use crate::source::kmsg::KmsgReader;
use crate::source::tracefs::TRACEFS_PATHS;
use crate::sys::cgroup::{MemoryHierarchy, Version};

/// Where perf finds kprobe support; absent when the kernel has no CONFIG_KPROBES.
pub const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// tracefs, as found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "path")]
pub enum Tracefs {
    /// Mounted where aya looks for it.
    Mounted(String),
    /// Not mounted there, but the kernel has it: the agent mounts it (needs CAP_SYS_ADMIN).
    Mountable,
    /// The kernel has no tracefs.
    Unavailable,
}

/// What the kernel offers, as found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub release: Option<String>,
    pub btf_path: PathBuf,
    /// Why the BTF could not be read or parsed; `None` when it was.
    pub btf_error: Option<String>,
    pub tracefs: Tracefs,
    pub kprobes: bool,
    /// `v1` or `v2`.
    pub cgroup_version: Option<&'static str>,
    pub cgroup_mount: Option<PathBuf>,
    /// Why `/dev/kmsg` could not be opened; `None` when it could.
    pub kmsg_error: Option<String>,
}

impl Kernel {
    pub fn gather(btf: &Path, host_root: &Path) -> Self {
        // Parsed and dropped at once: the probes parse it again if they are loaded.
        let btf_error = Btf::from_file(btf).err().map(|e| e.to_string());
        let hierarchy = MemoryHierarchy::find_under(host_root);
        Kernel {
            release: release(),
            btf_path: btf.to_path_buf(),
            btf_error,
            tracefs: tracefs(),
            kprobes: Path::new(KPROBE_PMU).exists(),
            cgroup_version: hierarchy.as_ref().map(|h| match h.version {
                Version::V1 => "v1",
                Version::V2 => "v2",
            }),
            cgroup_mount: hierarchy.map(|h| h.mount),
            kmsg_error: KmsgReader::open().err().map(|e| e.to_string()),
        }
    }
}

/// The running kernel's release, as `uname -r` prints it.
fn release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Finds tracefs without mounting it: in the mount table or (as root) by its `events/`.
fn tracefs() -> Tracefs {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut f = line.split(' ');
        let (mount, fstype) = (f.nth(1), f.next());
        if let (Some(m), Some("tracefs")) = (mount, fstype) {
            if TRACEFS_PATHS.contains(&m) {
                return Tracefs::Mounted(m.to_string());
            }
        }
    }
    if let Some(p) = TRACEFS_PATHS
        .iter()
        .find(|p| Path::new(p).join("events").is_dir())
    {
        return Tracefs::Mounted((*p).to_string());
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("tracefs"))
    {
        Tracefs::Mountable
    } else {
        Tracefs::Unavailable
    }
}

/// How the section judges what it found.
pub struct Judge {
    /// Status of a problem that stops the agent.
    pub fatal: Status,
    /// Status of an unreadable `/dev/kmsg`.
    pub kmsg: Status,
    /// The agent may mount tracefs (CAP_SYS_ADMIN).
    pub may_mount: bool,
    /// The probes were loaded: their result, not this section, says whether a victim probe
    /// attaches.
    pub probes_tried: bool,
}

pub fn items(k: &Kernel, host_root: &Path, j: &Judge) -> Vec<Item> {
    let mut out = vec![Item::ok(
        "kernel_release",
        format!(
            "Linux {}",
            k.release.as_deref().unwrap_or("(release unknown)")
        ),
    )];
    let btf_ok = k.btf_error.is_none();
    out.push(btf_item(k));
    let (tracefs, tracefs_ok) = tracefs_item(k, j);
    out.push(tracefs);
    if !btf_ok && !tracefs_ok && !j.probes_tried {
        out.push(
            Item::new(
                j.fatal,
                "victim_probe",
                "neither BTF nor tracefs: no probe can see OOM victims",
            )
            .with_fix("provide BTF (--btf) or mount tracefs, see the two lines above"),
        );
    }
    out.push(kprobes_item(k));
    out.push(cgroup_item(k, host_root));
    out.push(kmsg_item(k, j));
    out
}

fn btf_item(k: &Kernel) -> Item {
    match &k.btf_error {
        None => Item::ok("btf", format!("BTF: {} parsed", k.btf_path.display())),
        Some(e) => Item::new(
            Status::Warn,
            "btf",
            format!(
                "BTF unusable: {}; falls back to tracepoint:oom/mark_victim only (no \
                 tp_btf:mark_victim, no fentry:oom_kill_process)",
                one_line(e, 300)
            ),
        )
        .with_fix(
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y, or pass --btf with this \
             kernel's BTF",
        ),
    }
}

/// The tracefs item, and whether the agent will have tracefs.
fn tracefs_item(k: &Kernel, j: &Judge) -> (Item, bool) {
    match &k.tracefs {
        Tracefs::Mounted(p) => (
            Item::ok("tracefs", format!("tracefs: mounted at {p}")),
            true,
        ),
        Tracefs::Mountable if j.may_mount => (
            Item::ok(
                "tracefs",
                "tracefs: not mounted; the agent mounts it at /sys/kernel/tracing",
            ),
            true,
        ),
        Tracefs::Mountable => (
            Item::new(
                Status::Warn,
                "tracefs",
                "tracefs: not mounted, and mounting it needs CAP_SYS_ADMIN: no \
                 tracepoint:oom/mark_victim, no GFP flag names from tracefs",
            )
            .with_fix("mount -t tracefs tracefs /sys/kernel/tracing"),
            false,
        ),
        Tracefs::Unavailable => (
            Item::new(
                Status::Warn,
                "tracefs",
                "tracefs: this kernel has none (CONFIG_TRACING off): no \
                 tracepoint:oom/mark_victim",
            )
            .with_fix("boot a kernel with CONFIG_TRACING=y, or one with BTF for tp_btf"),
            false,
        ),
    }
}

fn kprobes_item(k: &Kernel) -> Item {
    if k.kprobes {
        Item::ok(
            "kprobes",
            "kprobes: available (fallback for fentry:oom_kill_process)",
        )
    } else {
        Item::info(
            "kprobes",
            format!(
                "kprobes: none ({KPROBE_PMU} absent, CONFIG_KPROBES off): no kprobe fallback \
                 for fentry:oom_kill_process"
            ),
        )
    }
}

fn cgroup_item(k: &Kernel, host_root: &Path) -> Item {
    match (k.cgroup_version, &k.cgroup_mount) {
        (Some(v), Some(m)) => Item::ok(
            "cgroup",
            format!("memory cgroup: {v} hierarchy at {}", m.display()),
        ),
        _ => Item::new(
            Status::Warn,
            "cgroup",
            format!(
                "memory cgroup: no hierarchy with the memory controller under {}: victims' \
                 cgroup paths come from /proc only (lost when the process is gone)",
                host_root.display()
            ),
        )
        .with_fix(
            "mount cgroup2 with the memory controller at <host-root>/sys/fs/cgroup (or v1 \
             at .../memory), or pass --host-root where the host's / is mounted",
        ),
    }
}

fn kmsg_item(k: &Kernel, j: &Judge) -> Item {
    match &k.kmsg_error {
        None => Item::ok("kmsg", "/dev/kmsg: readable"),
        Some(e) => Item::new(
            j.kmsg,
            "kmsg",
            format!(
                "{}: no OOM context from the kernel log (the fallback when no \
                 oom_kill_process probe attaches)",
                one_line(e, 200)
            ),
        )
        .with_fix("run as root or grant CAP_SYSLOG; in a container, expose /dev/kmsg"),
    }
}
