//! Probe-table rows of the scored candidates: `fexit:oom_badness`, else
//! `kretprobe:oom_badness`, each with its scoping hook on `out_of_memory()` (fentry/fexit, or
//! kprobe/kretprobe) so that only the OOM killer's own scoring is reported, not reads of
//! `/proc/<pid>/oom_score`. A row is used only when all of its programs attach; otherwise the
//! ones that did are unloaded again and the next row is tried. Without either, events take their
//! candidates from the kernel's task dump (`kmsg:oom_report`).
use aya::maps::{MapData, RingBuf};
use aya::programs::Program;
use aya::Ebpf;
use oomwatch_common::{CandidateOffsets, CandidateRecord, RecordKind};

use super::attach;
use super::table::{self, ProbeId, ProbeStatus};
use crate::source::btf::Btf;

/// This family's rows, best first.
pub const PROBES: [ProbeId; 2] = [ProbeId::BadnessFexit, ProbeId::BadnessKretprobe];

/// The ring's size when it is used, and when no row can attach (one page: the smallest ring).
pub const RING_BYTES: u32 = 512 * 1024;
const RING_BYTES_UNUSED: u32 = 4096;

/// The prototype the programs read: points are `long`, `LONG_MIN` for a skipped task (5.9+).
const SIGNATURE: &str = "long int (struct task_struct *, long unsigned int)";

const READS: &str = "candidates: every task oom_badness() scores inside out_of_memory(), with \
                     its points, rss, swap, page tables, oom_score_adj";

/// What [`prepare`] resolved before the object is loaded.
pub struct Prepared {
    pub offsets: CandidateOffsets,
    /// Why neither row can attach, whatever the kernel allows.
    ready: Result<(), String>,
}

/// Checks `oom_badness()`'s prototype and resolves the `mm_struct` counters it reads. `task` is
/// whether the `task_struct` offsets resolved (pid, tgid, comm, signal).
pub fn prepare(btf: Result<&Btf, String>, task: Result<(), String>) -> Prepared {
    let ready = task.and(btf.clone()).and_then(|b| {
        if !b.has_func("out_of_memory") {
            return Err("kernel BTF has no function out_of_memory".to_string());
        }
        match b.func_signature("oom_badness").map_err(|e| e.to_string())? {
            Some(s) if s == SIGNATURE => Ok(()),
            Some(s) => Err(format!("this kernel's oom_badness is {s}, not {SIGNATURE}")),
            None => Err("kernel BTF has no function oom_badness (inlined or renamed)".into()),
        }
    });
    let offsets = btf.ok().map_or(CandidateOffsets::ABSENT, mm_offsets);
    Prepared { offsets, ready }
}

/// `task_struct.mm` and where `get_mm_counter()` finds each counter: `mm_rss_stat.count[i]`
/// (`atomic_long_t`, up to 6.1) or `percpu_counter rss_stat[i]`'s `count` (6.2+). What cannot
/// be resolved stays absent.
pub fn mm_offsets(btf: &Btf) -> CandidateOffsets {
    let mut off = CandidateOffsets::ABSENT;
    if let Ok(o) = btf.member_offset("task_struct", "mm") {
        off.task_mm = o;
    }
    if let Ok(o) = btf.member_offset("mm_struct", "pgtables_bytes") {
        off.mm_pgtables_bytes = o;
    }
    let Some(at) = counter_layout(btf) else {
        return off;
    };
    for (name, slot) in [
        ("MM_FILEPAGES", &mut off.mm_file),
        ("MM_ANONPAGES", &mut off.mm_anon),
        ("MM_SHMEMPAGES", &mut off.mm_shmem),
        ("MM_SWAPENTS", &mut off.mm_swap),
    ] {
        if let Some(o) = btf.enum_value(None, name).ok().and_then(&at) {
            *slot = o;
        }
    }
    off
}

/// Counter index → offset in `mm_struct` of the `long` holding its value.
fn counter_layout(btf: &Btf) -> Option<impl Fn(i64) -> Option<u32>> {
    let n = u32::try_from(btf.enum_value(None, "NR_MM_COUNTERS").ok()?).ok()?;
    if n == 0 {
        return None;
    }
    let (base, stride) = match btf.member_offset("mm_struct", "rss_stat.count") {
        // struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }
        Ok(base) => (
            base,
            btf.member_size("mm_struct", "rss_stat.count").ok()? / n,
        ),
        // struct percpu_counter rss_stat[NR_MM_COUNTERS]
        Err(_) => {
            let stride = btf.member_size("mm_struct", "rss_stat").ok()? / n;
            if stride != btf.struct_size("percpu_counter").ok()? {
                return None;
            }
            let base = btf.member_offset("mm_struct", "rss_stat").ok()?
                + btf.member_offset("percpu_counter", "count").ok()?;
            (base, stride)
        }
    };
    Some(move |i: i64| {
        let i = u32::try_from(i).ok().filter(|&i| i < n)?;
        base.checked_add(i.checked_mul(stride)?)
    })
}

/// The `CANDIDATES` ring's size: one page when neither row can attach here, or when both
/// `oom_kill_process` rows (`oom_kill`), which tie the scored tasks to a kill, are disabled.
pub fn ring_bytes(p: &Prepared, disabled: &[ProbeId], oom_kill: &[ProbeId]) -> u32 {
    let all_off = |rows: &[ProbeId]| rows.iter().all(|r| disabled.contains(r));
    match p.ready.is_err() || all_off(&PROBES) || all_off(oom_kill) {
        true => RING_BYTES_UNUSED,
        false => RING_BYTES,
    }
}

/// The programs of each row: (program, kind, function).
const FEXIT_ROW: [(&str, Kind, &str); 3] = [
    ("oom_scope_fentry", Kind::FEntry, "out_of_memory"),
    ("oom_scope_fexit", Kind::FExit, "out_of_memory"),
    ("oom_badness_fexit", Kind::FExit, "oom_badness"),
];
const KRETPROBE_ROW: [(&str, Kind, &str); 4] = [
    ("oom_scope_kprobe", Kind::KProbe, "out_of_memory"),
    ("oom_scope_kretprobe", Kind::KProbe, "out_of_memory"),
    ("oom_badness_kprobe", Kind::KProbe, "oom_badness"),
    ("oom_badness_kretprobe", Kind::KProbe, "oom_badness"),
];

#[derive(Clone, Copy)]
enum Kind {
    FEntry,
    FExit,
    KProbe,
}

/// Attaches the first row that fully attaches; `disabled` are the `--disable-probe` names.
/// `oom_kill`: whether an `oom_kill_process` row attached (its record ties the scored tasks to
/// the kill; without it they would be of no use).
pub fn attach(
    ebpf: &mut Ebpf,
    p: &Prepared,
    disabled: &[ProbeId],
    kernel_btf: Result<&aya::Btf, String>,
    oom_kill: bool,
) -> Vec<ProbeStatus> {
    let off = |probe: ProbeId| -> Result<(), String> {
        match (disabled.contains(&probe), oom_kill) {
            (true, _) => Err(table::DISABLED.into()),
            (false, false) => Err(
                "needs fentry:oom_kill_process or kprobe:oom_kill_process, which ties the \
                 scored tasks to the kill; candidates come from the kernel's task dump"
                    .into(),
            ),
            (false, true) => Ok(()),
        }
    };
    let mut rows = Vec::new();
    let fexit = off(ProbeId::BadnessFexit)
        .and(p.ready.clone())
        .and(kernel_btf)
        .and_then(|kbtf| attach_all(ebpf, &FEXIT_ROW, Some(kbtf)));
    let fexit_ok = fexit.is_ok();
    rows.push(table::row(ProbeId::BadnessFexit, fexit, READS));
    if !fexit_ok {
        let kretprobe = off(ProbeId::BadnessKretprobe)
            .and(p.ready.clone())
            .and_then(|()| attach_all(ebpf, &KRETPROBE_ROW, None));
        rows.push(table::row(ProbeId::BadnessKretprobe, kretprobe, READS));
    }
    rows
}

/// Attaches every program of a row, or none: on the first failure the ones attached are
/// unloaded (which detaches them).
fn attach_all(
    ebpf: &mut Ebpf,
    progs: &[(&str, Kind, &str)],
    btf: Option<&aya::Btf>,
) -> Result<(), String> {
    for (i, (prog, kind, function)) in progs.iter().enumerate() {
        let r = match (kind, btf) {
            (Kind::FEntry, Some(b)) => attach::fentry(ebpf, prog, function, b),
            (Kind::FExit, Some(b)) => attach::fexit(ebpf, prog, function, b),
            (Kind::KProbe, _) => attach::kprobe(ebpf, prog, function),
            (_, None) => Err("no kernel BTF".to_string()),
        };
        if let Err(e) = r {
            for (done, _, _) in &progs[..i] {
                unload(ebpf, done);
            }
            return Err(format!("{prog} on {function}: {e}"));
        }
    }
    Ok(())
}

fn unload(ebpf: &mut Ebpf, prog: &str) {
    let r = match ebpf.program_mut(prog) {
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = r {
        tracing::debug!(program = prog, "unloading after a failed row: {e}");
    }
}

/// Hands every record waiting in the `CANDIDATES` ring to `each`.
pub fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(CandidateRecord)) {
    while let Some(item) = ring.next() {
        if let Some(rec) = decode(&item) {
            each(rec);
        }
    }
}

/// Whether `rec` comes from one of `rows` (the `--drop-probe-records` test knob).
pub fn dropped(rows: &[ProbeId], rec: &CandidateRecord) -> bool {
    let row = match RecordKind::from_u32(rec.kind) {
        Some(RecordKind::CandidateFexit) => ProbeId::BadnessFexit,
        Some(RecordKind::CandidateKretprobe) => ProbeId::BadnessKretprobe,
        _ => return false,
    };
    rows.contains(&row)
}

/// Decodes one item of the `CANDIDATES` ring; `None` for a wrong size or kind.
pub fn decode(bytes: &[u8]) -> Option<CandidateRecord> {
    if bytes.len() != std::mem::size_of::<CandidateRecord>() {
        return None;
    }
    // SAFETY: CandidateRecord is aya::Pod (#[repr(C)] plain data): any bytes of its size are a
    // valid value, and read_unaligned copes with any alignment of the ring buffer's memory.
    let rec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CandidateRecord>()) };
    matches!(
        RecordKind::from_u32(rec.kind),
        Some(RecordKind::CandidateFexit | RecordKind::CandidateKretprobe)
    )
    .then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::OFFSET_ABSENT;
    use std::path::Path;

    #[test]
    fn decode_checks_size_and_kind() {
        let mut r = CandidateRecord::zeroed();
        r.kind = RecordKind::CandidateFexit as u32;
        r.pid = 77;
        r.points = -5;
        r.oom_score_adj = -17;
        // SAFETY: reading the bytes of a plain #[repr(C)] value whose padding is named fields.
        let b = unsafe {
            std::slice::from_raw_parts((&r as *const CandidateRecord).cast::<u8>(), 104).to_vec()
        };
        // Offsets the eBPF side writes: pid @32, points @40, seq @80, oom_score_adj @84.
        assert_eq!(&b[32..36], &77i32.to_ne_bytes());
        assert_eq!(&b[40..48], &(-5i64).to_ne_bytes());
        assert_eq!(&b[84..86], &(-17i16).to_ne_bytes());
        let d = decode(&b).unwrap();
        assert_eq!((d.pid, d.points, d.oom_score_adj), (77, -5, -17));
        assert!(decode(&b[..103]).is_none());
        let mut k = b.clone();
        k[..4].copy_from_slice(&(RecordKind::OomKill as u32).to_ne_bytes());
        assert!(decode(&k).is_none());
    }

    /// The BTF of Debian's 6.1 and 6.12 kernels, when `cargo xtask vm-test --prepare-only`
    /// extracted it; the mm counters change layout between the two.
    #[test]
    fn debian_kernels_resolve_the_signature_and_mm_counters() {
        // The workspace's target directory, as xtask (which extracts them) names it.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let vm = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => workspace.join(dir).join("vm"),
            None => workspace.join("target/vm"),
        };
        let mut files: Vec<_> = std::fs::read_dir(&vm)
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("vmlinux.btf"))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return oomwatch_testkit::skip(format!(
                "no */vmlinux.btf under {} (run `cargo xtask vm-test --prepare-only`)",
                vm.display()
            ));
        }
        for path in &files {
            let btf = Btf::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let p = prepare(Ok(&btf), Ok(()));
            assert!(p.ready.is_ok(), "{}: {:?}", path.display(), p.ready);
            let o = p.offsets;
            for v in [
                o.task_mm,
                o.mm_file,
                o.mm_anon,
                o.mm_shmem,
                o.mm_swap,
                o.mm_pgtables_bytes,
            ] {
                assert_ne!(v, OFFSET_ABSENT, "{}: {o:?}", path.display());
            }
            // The four counters are evenly spaced, in enum order (file, anon, swap, shmem).
            let stride = o.mm_anon - o.mm_file;
            assert_eq!(o.mm_swap, o.mm_file + 2 * stride, "{o:?}");
            assert_eq!(o.mm_shmem, o.mm_file + 3 * stride, "{o:?}");
            assert!([8, btf.struct_size("percpu_counter").unwrap()].contains(&stride));
        }
    }

    #[test]
    fn a_wrong_prototype_or_no_btf_is_a_reason() {
        let p = prepare(Err("no BTF".into()), Ok(()));
        assert_eq!(p.ready, Err("no BTF".into()));
        assert_eq!(p.offsets, CandidateOffsets::ABSENT);
        let oom_kill = [ProbeId::OomKillFentry, ProbeId::OomKillKprobe];
        assert_eq!(ring_bytes(&p, &[], &oom_kill), RING_BYTES_UNUSED);
        let on = Prepared {
            offsets: CandidateOffsets::ABSENT,
            ready: Ok(()),
        };
        assert_eq!(ring_bytes(&on, &[], &oom_kill), RING_BYTES);
        let both = PROBES.to_vec();
        assert_eq!(ring_bytes(&on, &both, &oom_kill), RING_BYTES_UNUSED);
        let no_kill = oom_kill.to_vec();
        assert_eq!(ring_bytes(&on, &no_kill, &oom_kill), RING_BYTES_UNUSED);
    }
}
