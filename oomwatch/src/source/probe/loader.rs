//! The probe table: every hook oomwatch can use, best first, each tried in turn; what attached
//! and why the others did not is kept for the log and `oomwatch_probe_attached`.
use std::path::PathBuf;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::{Ebpf, EbpfLoader};
use oomwatch_common::{
    counter, ExeOffsets, MarkVictimOffsets, OomControlOffsets, PidNsOffsets, TaskOffsets,
};

use super::attach;
use super::offsets;
use super::table::{self, row, ProbeId, ProbeStatus};
use crate::source::btf::Btf;
use crate::source::gfp::GfpDecoder;
use crate::source::tracefs::MarkVictimLayout;

/// The eBPF object, built by `cargo xtask build` and embedded by `build.rs` (empty when it was
/// not built, e.g. under a plain `cargo check`).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomwatch.bpf.o"));

/// Probe names as logged and exported (`oomwatch_probe_attached{probe=...}`).

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

/// How to load: file locations and test knobs.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    /// Pretend the kernel's `mark_victim` has only `pid` (as on 4.13–6.8) and no BTF task
    /// argument: exercises the `/proc` fallback on a modern kernel.
    pub force_pid_only: bool,
    /// Rows not to use (`--disable-probe`).
    pub disabled: Vec<ProbeId>,
    /// Test knob: point the BTF program's `task_struct.signal` read at `comm`, so the next read
    /// through it faults; proves failed kernel reads are counted and logged.
    pub inject_read_fault: bool,
    /// `--userspace-killer`: comms whose SIGKILLs are reported, besides the defaults.
    pub userspace_killers: Vec<String>,
    /// `--stacks`: which of the trigger's stacks the `mark_victim` programs capture.
    pub stacks: crate::record::StackMode,
    /// `--sigkills`: the `signal_generate` programs record every SIGKILL to a task in a
    /// memory cgroup other than `root_memcg_id` (its directory's inode; 0 when unknown).
    pub sigkills: bool,
    pub root_memcg_id: u64,
}

/// Loaded, attached programs and the maps the agent reads.
pub struct Probes {
    /// Keeps programs and links alive; dropping it detaches everything.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    /// Tasks the OOM killer scored (the `oom_badness` rows), a ring of their own.
    pub candidates: RingBuf<MapData>,
    /// The trigger's stacks, a ring of their own (`probe::stacks`).
    pub stacks: RingBuf<MapData>,
    /// Every SIGKILL to a task in a non-root memory cgroup, a ring of its own
    /// (`probe::sigkills`).
    pub sigkills: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub status: Vec<ProbeStatus>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// `enum oom_constraint` value → name, from this kernel's BTF (empty without BTF).
    pub constraints: Vec<(i64, String)>,
    /// GFP flag names for this kernel, and where the table came from.
    pub gfp: Option<(GfpDecoder, &'static str)>,
}

pub const GFP_FROM_TRACEFS: &str = "the kernel's own table (tracefs kmem/mm_page_alloc format)";
pub const GFP_FROM_BTF: &str = "this kernel's bit layout in BTF";

impl Probes {
    pub fn attached(&self, probe: ProbeId) -> bool {
        table::attached(&self.status, probe)
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
    // Offsets first, from BTF (ours, dropped before the kernel objects are created) and tracefs.
    let resolved = resolve(opts);
    let mut ebpf = load_object(opts, &resolved)?;
    let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
    let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"));

    let mut status = Vec::new();
    attach_mark_victim(&mut ebpf, opts, &resolved, &kernel_btf, &mut status);
    attach_oom_kill(&mut ebpf, opts, &resolved, &kernel_btf, &mut status);
    let oom_kill = [ProbeId::OomKillFentry, ProbeId::OomKillKprobe];
    let oom_kill_attached = status
        .iter()
        .any(|s| s.attached && oom_kill.contains(&s.probe));
    status.extend(super::candidates::attach(
        &mut ebpf,
        &resolved.scored,
        &opts.disabled,
        kernel_btf.as_ref().map_err(Clone::clone),
        oom_kill_attached,
    ));
    status.extend(super::lifecycle::attach(
        &mut ebpf,
        &resolved.lifecycle,
        &opts.disabled,
        kernel_btf.as_ref().map_err(Clone::clone),
        opts.sigkills,
    ));
    drop(kernel_btf);

    require_victim_row(&status)?;
    let events = take_map(&mut ebpf, "EVENTS")?;
    let candidates = take_map(&mut ebpf, "CANDIDATES")?;
    let stacks = take_map(&mut ebpf, "STACKS")?;
    let sigkills = take_map(&mut ebpf, "SIGKILLS")?;
    let counters = take_map(&mut ebpf, "COUNTERS")?;
    Ok(Probes {
        ebpf,
        events,
        candidates,
        stacks,
        sigkills,
        counters,
        status,
        logger,
        constraints: resolved.constraints,
        gfp: resolved.gfp,
    })
}

/// What [`resolve`] found before the object is loaded: the globals' offsets, the kernel's names
/// for constraints and GFP flags, and why a row cannot attach.
struct Resolved {
    task: Result<TaskOffsets, String>,
    /// The victim's pid namespace and its init (for `partial_kill`); absent: those fields are.
    pidns: Result<PidNsOffsets, String>,
    /// The trigger's program file (`trigger.stack`); absent: user frames need its mappings.
    exe: ExeOffsets,
    passes_task: Result<(), String>,
    oom_control: Result<OomControlOffsets, String>,
    constraints: Vec<(i64, String)>,
    gfp: Option<(GfpDecoder, &'static str)>,
    lifecycle: super::lifecycle::Prepared,
    scored: super::candidates::Prepared,
    /// The `oom/mark_victim` trace record: offsets, layout, and the row's detail.
    tp: Result<(MarkVictimOffsets, MarkVictimLayout, String), String>,
}

/// Reads our own copy of the BTF for every offset, then drops it before the kernel objects are
/// created; the trace record's offsets come from tracefs.
fn resolve(opts: &LoadOptions) -> Resolved {
    let btf = Btf::from_file(&opts.btf_path).map_err(|e| e.to_string());
    let task = btf.as_ref().map_err(Clone::clone).and_then(offsets::task);
    let pidns = btf.as_ref().map_err(Clone::clone).and_then(offsets::pidns);
    let exe = btf.as_ref().map_err(Clone::clone).and_then(offsets::exe);
    if let Err(e) = &exe {
        tracing::info!(reason = %e, "the trigger's program file is not read at the kill (its user frames need its mappings)");
    }
    if let Err(e) = &pidns {
        tracing::info!(reason = %e, "victim pid namespace not read at the kill (partial_kill from the cgroup only)");
    }
    let passes_task = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(offsets::mark_victim_passes_task);
    let oom_control = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(offsets::oom_control);
    let constraints = btf
        .as_ref()
        .map(offsets::constraint_names)
        .unwrap_or_default();
    let gfp = gfp_names(btf.as_ref().ok());
    let lifecycle = super::lifecycle::prepare(
        btf.as_ref().map_err(Clone::clone),
        task.as_ref().map(drop).map_err(Clone::clone),
        &opts.userspace_killers,
    );
    let scored = super::candidates::prepare(
        btf.as_ref().map_err(Clone::clone),
        task.as_ref().map(drop).map_err(Clone::clone),
        &super::candidates::Copies::read(),
    );
    drop(btf);
    let tp = offsets::mark_victim(opts.force_pid_only);
    Resolved {
        task,
        pidns,
        exe: exe.unwrap_or(ExeOffsets::ABSENT),
        passes_task,
        oom_control,
        constraints,
        gfp,
        lifecycle,
        scored,
        tp,
    }
}

/// GFP flag names: the kernel's own table (tracefs) on any kernel, else the bit layout in
/// BTF (6.10+), else none (then only the kernel log's own decoding).
fn gfp_names(btf: Option<&Btf>) -> Option<(GfpDecoder, &'static str)> {
    crate::source::tracefs::ensure_mounted()
        .ok()
        .and_then(|(root, _)| {
            std::fs::read_to_string(root.join("events/kmem/mm_page_alloc/format")).ok()
        })
        .and_then(|text| GfpDecoder::from_tracefs_format(&text))
        .map(|d| (d, GFP_FROM_TRACEFS))
        .or_else(|| {
            btf.and_then(GfpDecoder::from_btf)
                .map(|d| (d, GFP_FROM_BTF))
        })
}

/// Loads the object with the resolved offsets as its globals.
fn load_object(opts: &LoadOptions, r: &Resolved) -> Result<Ebpf, ProbeError> {
    let mv = r.tp.as_ref().map_or(MarkVictimOffsets::ABSENT, |t| t.0);
    let mut task_off = r.task.as_ref().map_or(TaskOffsets::ABSENT, |t| *t);
    if opts.inject_read_fault {
        task_off.task_signal = task_off.task_comm;
    }
    let pidns_off = r.pidns.as_ref().map_or(PidNsOffsets::ABSENT, |p| *p);
    let oc = r
        .oom_control
        .as_ref()
        .map_or(OomControlOffsets::ABSENT, |o| *o);
    // EbpfLoader::new() parses the kernel BTF for relocations and drops it when this statement
    // ends; the BTF-typed programs below parse it once more. Never two copies alive at once:
    // the parsed vmlinux BTF is the agent's largest start-up allocation.
    let ebpf = EbpfLoader::new()
        .override_global("MARK_VICTIM_OFFSETS", &mv, true)
        .override_global("TASK_OFFSETS", &task_off, true)
        .override_global("PIDNS_OFFSETS", &pidns_off, true)
        .override_global("OOM_CONTROL_OFFSETS", &oc, true)
        .override_global("LIFECYCLE_OFFSETS", &r.lifecycle.lifecycle, true)
        .override_global("SIGNAL_OFFSETS", &r.lifecycle.signal, true)
        .override_global("KILLER_COMMS", &r.lifecycle.killers, true)
        .override_global("CANDIDATE_OFFSETS", &r.scored.offsets, true)
        .override_global("STACK_MODE", &opts.stacks.ebpf_value(), true)
        .override_global("EXE_OFFSETS", &r.exe, true)
        .override_global("SIGKILL_FILTER", &sigkill_filter(opts), true)
        .map_max_entries(
            "CANDIDATES",
            super::candidates::ring_bytes(
                &r.scored,
                &opts.disabled,
                &[ProbeId::OomKillFentry, ProbeId::OomKillKprobe],
            ),
        )
        .load(EBPF_OBJECT)?;
    Ok(ebpf)
}

/// `--sigkills` and the root memory cgroup, for the `signal_generate` programs.
fn sigkill_filter(opts: &LoadOptions) -> oomwatch_common::SigkillFilter {
    oomwatch_common::SigkillFilter {
        root_memcg_id: opts.root_memcg_id,
        enabled: u32::from(opts.sigkills),
        _pad0: 0,
    }
}

/// The victim rows: tp_btf `mark_victim` (the victim's task_struct), then the tracepoint
/// `oom/mark_victim` (the kernel's trace record).
fn attach_mark_victim(
    ebpf: &mut Ebpf,
    opts: &LoadOptions,
    r: &Resolved,
    kernel_btf: &Result<aya::Btf, String>,
    status: &mut Vec<ProbeStatus>,
) {
    let off = |probe: ProbeId| table::enabled(&opts.disabled, probe);
    // Row: tp_btf mark_victim — the victim's task_struct.
    let btf_row = if opts.force_pid_only {
        Err("disabled by --force-pid-only".to_string())
    } else {
        off(ProbeId::MarkVictimBtf)
            .and(r.passes_task.clone())
            .and(r.task.clone())
            .and(kernel_btf.as_ref().map_err(Clone::clone))
            .and_then(|kbtf| attach::btf_tracepoint(ebpf, "mark_victim_btf", "mark_victim", kbtf))
    };
    status.push(row(
        ProbeId::MarkVictimBtf,
        btf_row,
        "tgid, memory cgroup, oom_score_adj, pid namespace",
    ));
    // Row: tracepoint oom/mark_victim — the kernel's trace record.
    match &r.tp {
        Ok((_, _, detail)) => {
            let res = off(ProbeId::MarkVictimTp)
                .and_then(|()| attach::tracepoint(ebpf, "mark_victim_tp", "oom", "mark_victim"));
            status.push(row(ProbeId::MarkVictimTp, res, detail));
        }
        Err(why) => status.push(row(ProbeId::MarkVictimTp, Err(why.clone()), "")),
    }
}

/// Rows: oom_kill_process — fentry, else kprobe.
fn attach_oom_kill(
    ebpf: &mut Ebpf,
    opts: &LoadOptions,
    r: &Resolved,
    kernel_btf: &Result<aya::Btf, String>,
    status: &mut Vec<ProbeStatus>,
) {
    let off = |probe: ProbeId| table::enabled(&opts.disabled, probe);
    let oom_ready = r.oom_control.clone().and(r.task.clone()).map(drop);
    let fentry = oom_ready
        .clone()
        .and(off(ProbeId::OomKillFentry))
        .and(kernel_btf.as_ref().map_err(Clone::clone))
        .and_then(|kbtf| attach::fentry(ebpf, "oom_kill_fentry", "oom_kill_process", kbtf));
    let fentry_ok = fentry.is_ok();
    status.push(row(ProbeId::OomKillFentry, fentry, OOM_KILL_READS));
    if !fentry_ok {
        let kprobe = oom_ready
            .and(off(ProbeId::OomKillKprobe))
            .and_then(|()| attach::kprobe(ebpf, "oom_kill_kprobe", "oom_kill_process"));
        status.push(row(ProbeId::OomKillKprobe, kprobe, OOM_KILL_READS));
    }
}

/// Fails unless a `mark_victim` row attached, naming every row's reason.
fn require_victim_row(status: &[ProbeStatus]) -> Result<(), ProbeError> {
    let victims = [ProbeId::MarkVictimTp, ProbeId::MarkVictimBtf];
    if status
        .iter()
        .any(|s| s.attached && victims.contains(&s.probe))
    {
        return Ok(());
    }
    let why = status
        .iter()
        .map(|s| format!("{}: {}", s.probe, s.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ProbeError::NothingAttached(why))
}

const OOM_KILL_READS: &str =
    "constraint, gfp_mask, order, totalpages, badness, chosen task, OOM memcg, trigger";

fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

/// Index of the ring-buffer drop counter, re-exported for the agent.
pub const RINGBUF_DROPS: u32 = counter::RINGBUF_DROPS;
/// Index of the failed-kernel-read counter.
pub const READ_ERRORS: u32 = counter::READ_ERRORS;
