//! Probe-table rows of the scored candidates: `fexit:oom_badness`, else
//! `kretprobe:oom_badness`, each with its scoping hook on `out_of_memory()` (fentry/fexit, or
//! kprobe/kretprobe) so that only the OOM killer's own scoring is reported, not reads of
//! `/proc/<pid>/oom_score`. A row is used only when all of its programs attach; otherwise the
//! ones that did are unloaded again and the next row is tried. Without either, events take their
//! candidates from the kernel's task dump (`kmsg:oom_report`).
//!
//! BTF describes `oom_badness()` as written, not what the compiler made of it: the running
//! kernel's `/proc/kallsyms` says which copy the OOM killer calls ([`kallsyms::callee`]). On
//! Debian 11's 5.10 GCC split it: `oom_evaluate_task()` runs its head inline and calls
//! `oom_badness.part.0`, so a probe on `oom_badness` itself sees only `/proc/<pid>/oom_score`
//! reads. The kretprobe row then attaches to the `.part` copy (same arguments, same return
//! value); the fexit row cannot (the copy has no BTF) and says so.
use aya::maps::{MapData, RingBuf};
use aya::programs::Program;
use aya::Ebpf;
use oomwatch_common::{CandidateOffsets, CandidateRecord, RecordKind};

use super::attach;
use super::table::{self, ProbeId, ProbeStatus};
use crate::source::btf::Btf;
use crate::sys::kallsyms::{self, Callee};

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
    /// The copy of `oom_badness()` the OOM killer calls (see [`scored_callee`]).
    callee: Result<Callee, String>,
}

/// The `/proc/kallsyms` copies of the two functions the rows probe.
pub struct Copies {
    pub oom_badness: Result<Vec<String>, String>,
    pub out_of_memory: Result<Vec<String>, String>,
}

impl Copies {
    /// The running kernel's.
    pub fn read() -> Self {
        let path = std::path::Path::new(kallsyms::KALLSYMS);
        let read =
            |f: &str| kallsyms::copies_of(path, f).map_err(|e| format!("{}: {e}", path.display()));
        Copies {
            oom_badness: read("oom_badness"),
            out_of_memory: read("out_of_memory"),
        }
    }
}

/// Checks `oom_badness()`'s prototype, which copies the kernel runs (`copies`), and resolves
/// the `mm_struct` counters it reads. `task` is whether the `task_struct` offsets resolved
/// (pid, tgid, comm, signal).
pub fn prepare(btf: Result<&Btf, String>, task: Result<(), String>, copies: &Copies) -> Prepared {
    let callee = scored_callee(copies);
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
    Prepared {
        offsets,
        ready,
        callee,
    }
}

/// What the kprobe rows attach to: the copy of `oom_badness()` the OOM killer calls, provided
/// `out_of_memory()` (the scope) is called by its own name. Unreadable kallsyms: the names as
/// written, with a warning.
fn scored_callee(copies: &Copies) -> Result<Callee, String> {
    let resolve = |f: &str, c: &Result<Vec<String>, String>| match c {
        Ok(names) => kallsyms::callee(f, names),
        Err(e) => {
            tracing::warn!(
                function = f,
                "cannot tell which copy of {f} the kernel calls: {e}"
            );
            Ok(Callee {
                symbol: f.to_string(),
                split: false,
            })
        }
    };
    match resolve("out_of_memory", &copies.out_of_memory)? {
        Callee { split: false, .. } => resolve("oom_badness", &copies.oom_badness),
        Callee { symbol, .. } => Err(format!(
            "the kernel calls {symbol}, a split copy of out_of_memory: the scope of the \
             scoring cannot be probed"
        )),
    }
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
    match p.ready.is_err() || p.callee.is_err() || all_off(&PROBES) || all_off(oom_kill) {
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
        .and(fexit_reaches(&p.callee))
        .and(kernel_btf)
        .and_then(|kbtf| attach_all(ebpf, &FEXIT_ROW, Some(kbtf)));
    let fexit_ok = fexit.is_ok();
    rows.push(table::row(ProbeId::BadnessFexit, fexit, READS));
    if !fexit_ok {
        let callee = p.callee.clone();
        let kretprobe = off(ProbeId::BadnessKretprobe)
            .and(p.ready.clone())
            .and(callee.clone().map(drop))
            .and_then(|()| {
                let symbol = callee.as_ref().map_or("oom_badness", |c| c.symbol.as_str());
                let row = KRETPROBE_ROW.map(|(prog, kind, f)| {
                    (prog, kind, if f == "oom_badness" { symbol } else { f })
                });
                attach_all(ebpf, &row, None)
            });
        let reads = match &callee {
            Ok(c) if c.split => format!(
                "{READS} (on {}: this kernel's OOM killer calls that split copy of oom_badness)",
                c.symbol
            ),
            _ => READS.to_string(),
        };
        rows.push(table::row(ProbeId::BadnessKretprobe, kretprobe, &reads));
    }
    rows
}

/// Whether fexit on `oom_badness` sees the OOM killer's calls: not when they go to a copy.
fn fexit_reaches(callee: &Result<Callee, String>) -> Result<(), String> {
    match callee {
        Ok(Callee { split: false, .. }) => Ok(()),
        Ok(Callee { symbol, .. }) => Err(format!(
            "this kernel's OOM killer calls {symbol} (GCC split oom_badness; {}), which has no \
             BTF for fexit: fexit on oom_badness would see only /proc/<pid>/oom_score reads",
            kallsyms::KALLSYMS
        )),
        Err(e) => Err(e.clone()),
    }
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

    /// A kernel whose functions are called by their own names.
    fn as_written() -> Copies {
        Copies {
            oom_badness: Ok(vec!["oom_badness".into()]),
            out_of_memory: Ok(vec!["out_of_memory".into()]),
        }
    }

    /// Debian 11's 5.10: the OOM killer calls `oom_badness.part.0`; the kretprobe row goes
    /// there, the fexit row cannot. A split `out_of_memory` (the scope) or an inlined
    /// `oom_badness` leaves both rows unavailable; unreadable kallsyms: the names as written.
    #[test]
    fn the_copy_the_oom_killer_calls_is_probed() {
        let mut split = as_written();
        split.oom_badness = Ok(vec!["oom_badness.part.0".into(), "oom_badness".into()]);
        let c = scored_callee(&split).unwrap();
        assert_eq!((c.symbol.as_str(), c.split), ("oom_badness.part.0", true));
        let e = fexit_reaches(&Ok(c)).unwrap_err();
        assert!(
            e.contains("oom_badness.part.0") && e.contains("no BTF"),
            "{e}"
        );
        assert!(fexit_reaches(&scored_callee(&as_written())).is_ok());

        let mut scope = as_written();
        scope.out_of_memory = Ok(vec!["out_of_memory.part.0".into()]);
        assert!(scored_callee(&scope)
            .unwrap_err()
            .contains("out_of_memory.part.0"));
        let mut inlined = as_written();
        inlined.oom_badness = Ok(vec![]);
        let e = scored_callee(&inlined).unwrap_err();
        assert!(e.contains("inlined"), "{e}");
        let on = Prepared {
            offsets: CandidateOffsets::ABSENT,
            ready: Ok(()),
            callee: Err(e),
        };
        let oom_kill = [ProbeId::OomKillFentry, ProbeId::OomKillKprobe];
        assert_eq!(ring_bytes(&on, &[], &oom_kill), RING_BYTES_UNUSED);
        let unreadable = Copies {
            oom_badness: Err("EACCES".into()),
            out_of_memory: Err("EACCES".into()),
        };
        assert_eq!(scored_callee(&unreadable).unwrap().symbol, "oom_badness");
    }

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
            let p = prepare(Ok(&btf), Ok(()), &as_written());
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
        let p = prepare(Err("no BTF".into()), Ok(()), &as_written());
        assert_eq!(p.ready, Err("no BTF".into()));
        assert_eq!(p.offsets, CandidateOffsets::ABSENT);
        let oom_kill = [ProbeId::OomKillFentry, ProbeId::OomKillKprobe];
        assert_eq!(ring_bytes(&p, &[], &oom_kill), RING_BYTES_UNUSED);
        let on = Prepared {
            offsets: CandidateOffsets::ABSENT,
            ready: Ok(()),
            callee: scored_callee(&as_written()),
        };
        assert_eq!(ring_bytes(&on, &[], &oom_kill), RING_BYTES);
        let both = PROBES.to_vec();
        assert_eq!(ring_bytes(&on, &both, &oom_kill), RING_BYTES_UNUSED);
        let no_kill = oom_kill.to_vec();
        assert_eq!(ring_bytes(&on, &no_kill, &oom_kill), RING_BYTES_UNUSED);
    }
}
