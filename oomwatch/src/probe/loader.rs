//! The probe table: every hook oomwatch can use, best first, each tried in turn; what attached
//! and why the others did not is kept for the log and `oomwatch_probe_attached`.
use std::path::{Path, PathBuf};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use oomwatch_common::{counter, MarkVictimOffsets, TaskOffsets};

use super::btf::Btf;
use super::tracefs::{self, MarkVictimLayout};

/// The eBPF object, built by `cargo xtask build` and embedded by `build.rs` (empty when it was
/// not built, e.g. under a plain `cargo check`).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch.bpf.o"));

/// Probe names as logged and exported (`oomwatch_probe_attached{probe=...}`).
pub const PROBE_MARK_VICTIM_BTF: &str = "tp_btf:mark_victim";
pub const PROBE_MARK_VICTIM_TP: &str = "tracepoint:oom/mark_victim";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this oomwatch binary was built without its eBPF object; build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("no OOM probe could attach ({0}); oomwatch needs the oom/mark_victim tracepoint (tracefs or BTF)")]
    NothingAttached(String),
    #[error("eBPF map `{0}` missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// What happened to one row of the probe table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    pub probe: &'static str,
    pub attached: bool,
    /// Why it is unavailable, or what it reads.
    pub detail: String,
}

/// How to load: file locations and test knobs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    /// Pretend the kernel's `mark_victim` has only `pid` (as on 4.13–6.8) and no BTF task
    /// argument: exercises the `/proc` fallback on a modern kernel.
    pub force_pid_only: bool,
    /// Test knob: point the BTF program's `task_struct.signal` read at `comm`, so the next read
    /// through it faults; proves failed kernel reads are counted and logged.
    pub inject_read_fault: bool,
}

/// Loaded, attached programs and the maps the agent reads.
pub struct Probes {
    /// Keeps programs and links alive; dropping it detaches everything.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub status: Vec<ProbeStatus>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Probes {
    pub fn attached(&self, probe: &str) -> bool {
        self.status.iter().any(|s| s.probe == probe && s.attached)
    }
}

/// Sums a per-CPU counter.
pub fn read_counter(counters: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    counters
        .get(&index, 0)
        .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
        .unwrap_or(0)
}

/// Resolves offsets, loads the object, and attaches each probe that this kernel allows.
pub fn load(opts: &LoadOptions) -> Result<Probes, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    let mut status = Vec::new();

    // Row: tracepoint oom/mark_victim — offsets from its tracefs format file.
    let tp_offsets = match tracepoint_offsets(opts.force_pid_only) {
        Ok((off, layout, detail)) => Some((off, layout, detail)),
        Err(why) => {
            status.push(ProbeStatus {
                probe: PROBE_MARK_VICTIM_TP,
                attached: false,
                detail: why,
            });
            None
        }
    };
    // Row: tp_btf mark_victim — task_struct offsets from BTF, if the tracepoint passes a task.
    let task_offsets = if opts.force_pid_only {
        Err("disabled by --force-pid-only".to_string())
    } else {
        task_offsets(&opts.btf_path)
    };

    let mv = tp_offsets
        .as_ref()
        .map_or(MarkVictimOffsets::ABSENT, |t| t.0);
    let mut task = task_offsets.as_ref().map_or(TaskOffsets::ABSENT, |t| *t);
    if opts.inject_read_fault {
        task.task_signal = task.task_comm;
    }
    // EbpfLoader::new() parses the kernel BTF for relocations and drops it when this statement
    // ends; the tp_btf load parses it again later. Two parses, but never two copies alive at
    // once: the parsed vmlinux BTF is the agent's largest start-up allocation.
    let mut ebpf = EbpfLoader::new()
        .override_global("MARK_VICTIM_OFFSETS", &mv, true)
        .override_global("TASK_OFFSETS", &task, true)
        .load(EBPF_OBJECT)?;
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();

    match task_offsets {
        Ok(_) => status.push(attach_btf(&mut ebpf)),
        Err(why) => status.push(ProbeStatus {
            probe: PROBE_MARK_VICTIM_BTF,
            attached: false,
            detail: why,
        }),
    }
    if let Some((_, layout, detail)) = tp_offsets {
        status.push(attach_tp(&mut ebpf, layout, detail));
    }
    if !status.iter().any(|s| s.attached) {
        let why = status
            .iter()
            .map(|s| format!("{}: {}", s.probe, s.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ProbeError::NothingAttached(why));
    }
    let events = take_map(&mut ebpf, "EVENTS")?;
    let counters = take_map(&mut ebpf, "COUNTERS")?;
    Ok(Probes {
        ebpf,
        events,
        counters,
        status,
        logger,
    })
}

fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn tracepoint_offsets(
    force_pid_only: bool,
) -> Result<(MarkVictimOffsets, MarkVictimLayout, String), String> {
    let (root, mounted) = tracefs::ensure_mounted().map_err(|e| e.to_string())?;
    if mounted {
        tracing::info!(path = %root.display(), "mounted tracefs");
    }
    let format = tracefs::read_format(root, "oom", "mark_victim").map_err(|e| e.to_string())?;
    let (mut off, mut layout) = tracefs::mark_victim_offsets(&format).map_err(|e| e.to_string())?;
    if force_pid_only {
        off = MarkVictimOffsets {
            pid: off.pid,
            ..MarkVictimOffsets::ABSENT
        };
        layout = MarkVictimLayout::PidOnly;
    }
    let detail = match layout {
        MarkVictimLayout::Extended => "extended format: pid, comm, memory, uid, oom_score_adj",
        MarkVictimLayout::PidOnly => "pid-only format: other fields from /proc",
        MarkVictimLayout::Partial => "partial format: missing fields from /proc",
    };
    Ok((off, layout, detail.to_string()))
}

/// Offsets for the tp_btf program, or why it cannot run on this kernel.
pub fn task_offsets(btf_path: &Path) -> Result<TaskOffsets, String> {
    let btf = Btf::from_file(btf_path).map_err(|e| e.to_string())?;
    let params = btf
        .tracepoint_params("mark_victim")
        .map_err(|e| e.to_string())?;
    if params.first().map(String::as_str) != Some("struct task_struct *") {
        return Err(format!(
            "this kernel's mark_victim passes ({}), not a task_struct",
            params.join(", ")
        ));
    }
    let m = |s: &str, f: &str| btf.member_offset(s, f).map_err(|e| e.to_string());
    let memory_id = btf
        .enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
        .map_err(|e| e.to_string())?;
    let subsys = m("css_set", "subsys")?;
    // css_set.subsys is `struct cgroup_subsys_state *[CGROUP_SUBSYS_COUNT]`: the element size
    // comes from BTF too.
    let count = btf
        .enum_value(Some("cgroup_subsys_id"), "CGROUP_SUBSYS_COUNT")
        .map_err(|e| e.to_string())?;
    let array = btf
        .member_size("css_set", "subsys")
        .map_err(|e| e.to_string())?;
    let (Ok(index), Ok(count)) = (u32::try_from(memory_id), u32::try_from(count)) else {
        return Err("cgroup_subsys_id values out of range".into());
    };
    if count == 0 || index >= count {
        return Err(format!(
            "memory_cgrp_id {index} not below CGROUP_SUBSYS_COUNT {count}"
        ));
    }
    let ptr = array / count;
    Ok(TaskOffsets {
        task_pid: m("task_struct", "pid")?,
        task_tgid: m("task_struct", "tgid")?,
        task_comm: m("task_struct", "comm")?,
        task_signal: m("task_struct", "signal")?,
        signal_oom_score_adj: m("signal_struct", "oom_score_adj")?,
        task_cgroups: m("task_struct", "cgroups")?,
        css_set_memory_subsys: subsys + index * ptr,
        css_cgroup: m("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: m("cgroup", "kn")?,
        kernfs_node_id: m("kernfs_node", "id")?,
    })
}

fn attach_btf(ebpf: &mut Ebpf) -> ProbeStatus {
    let result = (|| -> Result<(), String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut("mark_victim_btf")
            .ok_or("program missing from object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        prog.load("mark_victim", &btf)
            .map_err(|e| format!("load: {e}"))?;
        prog.attach().map_err(|e| format!("attach: {e}"))?;
        Ok(())
    })();
    ProbeStatus {
        probe: PROBE_MARK_VICTIM_BTF,
        attached: result.is_ok(),
        detail: result.map_or_else(|e| e, |()| "tgid, memory cgroup, oom_score_adj".into()),
    }
}

fn attach_tp(ebpf: &mut Ebpf, _layout: MarkVictimLayout, detail: String) -> ProbeStatus {
    let result = (|| -> Result<(), String> {
        let prog: &mut TracePoint = ebpf
            .program_mut("mark_victim_tp")
            .ok_or("program missing from object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("load: {e}"))?;
        prog.attach("oom", "mark_victim")
            .map_err(|e| format!("attach: {e}"))?;
        Ok(())
    })();
    ProbeStatus {
        probe: PROBE_MARK_VICTIM_TP,
        attached: result.is_ok(),
        detail: result.map_or_else(|e| e, |()| detail),
    }
}

/// Index of the ring-buffer drop counter, re-exported for the agent.
pub const RINGBUF_DROPS: u32 = counter::RINGBUF_DROPS;
/// Index of the failed-kernel-read counter.
pub const READ_ERRORS: u32 = counter::READ_ERRORS;

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::OFFSET_ABSENT;

    #[test]
    fn task_offsets_resolve_on_this_kernel() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("SKIPPED: no kernel BTF at {}", path.display());
            return;
        }
        let off = task_offsets(path).unwrap();
        let all = [
            off.task_pid,
            off.task_tgid,
            off.task_comm,
            off.task_signal,
            off.signal_oom_score_adj,
            off.task_cgroups,
            off.css_set_memory_subsys,
            off.css_cgroup,
            off.cgroup_kn,
            off.kernfs_node_id,
        ];
        assert!(all.iter().all(|&o| o != OFFSET_ABSENT), "{off:?}");
        assert_eq!(
            off.task_tgid,
            off.task_pid + 4,
            "pid_t pid; pid_t tgid; are adjacent"
        );
    }

    #[test]
    fn missing_btf_is_a_reason_naming_the_path() {
        let why = task_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(why.contains("/nonexistent/vmlinux"), "{why}");
    }
}
