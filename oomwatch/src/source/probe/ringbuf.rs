//! Decoding ring-buffer items into records.
use oomwatch_common::{LifecycleRecord, OomKillRecord, RecordKind, SignalRecord, VictimRecord};

use crate::record::ProbeId;

/// One item of the `EVENTS` ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Record {
    /// From a `mark_victim` program: one victim.
    Victim(VictimRecord),
    /// From an `oom_kill_process` program: one OOM invocation's context.
    OomKill(OomKillRecord),
    /// A killed task's exit or an OOM reaper step (`crate::kill_outcome`).
    Lifecycle(LifecycleRecord),
    /// A SIGKILL from a listed userspace OOM killer (`crate::kill_outcome`).
    Signal(SignalRecord),
}

impl Record {
    /// `bpf_ktime_get_ns()` when the program ran.
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Record::Victim(r) => r.ktime_ns,
            Record::OomKill(r) => r.ktime_ns,
            Record::Lifecycle(r) => r.ktime_ns,
            Record::Signal(r) => r.ktime_ns,
        }
    }

    /// The probe-table row that wrote it; `oom_kill` is the attached `oom_kill_process` row
    /// (fentry and kprobe write the same kind).
    pub fn row(&self, oom_kill: ProbeId) -> Option<ProbeId> {
        let kind = match self {
            Record::Victim(r) => r.kind,
            Record::OomKill(_) => return Some(oom_kill),
            Record::Lifecycle(r) => r.kind,
            Record::Signal(r) => r.kind,
        };
        Some(match RecordKind::from_u32(kind)? {
            RecordKind::MarkVictimTracepoint => ProbeId::MarkVictimTp,
            RecordKind::MarkVictimBtf => ProbeId::MarkVictimBtf,
            RecordKind::OomKill => oom_kill,
            RecordKind::CandidateFexit => ProbeId::BadnessFexit,
            RecordKind::CandidateKretprobe => ProbeId::BadnessKretprobe,
            RecordKind::VictimExit => ProbeId::ProcessExit,
            RecordKind::WakeReaper
            | RecordKind::StartReaping
            | RecordKind::FinishReaping
            | RecordKind::SkipReaping => ProbeId::Reaper,
            RecordKind::SignalTracepoint => ProbeId::SignalTp,
            RecordKind::SignalBtf => ProbeId::SignalBtf,
            // Stacks and SIGKILLs travel in rings of their own (`super::stacks`,
            // `super::sigkills`), never as a `Record`.
            RecordKind::TriggerStack | RecordKind::SigkillBtf | RecordKind::SigkillTracepoint => {
                return None
            }
        })
    }

    /// Whether the OOM correlator takes this record; the others go to `crate::kill_outcome`.
    pub fn is_victim_record(&self) -> bool {
        matches!(self, Record::Victim(_) | Record::OomKill(_))
    }
}

/// Decodes one ring-buffer item by its kind (the first `u32` of every record). Items of an
/// unknown kind or the wrong size for their kind are rejected, never misread.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    match RecordKind::from_u32(kind)? {
        RecordKind::MarkVictimTracepoint | RecordKind::MarkVictimBtf => {
            read::<VictimRecord>(bytes).map(Record::Victim)
        }
        RecordKind::OomKill => read::<OomKillRecord>(bytes).map(Record::OomKill),
        RecordKind::VictimExit
        | RecordKind::WakeReaper
        | RecordKind::StartReaping
        | RecordKind::FinishReaping
        | RecordKind::SkipReaping => read::<LifecycleRecord>(bytes).map(Record::Lifecycle),
        RecordKind::SignalTracepoint | RecordKind::SignalBtf => {
            read::<SignalRecord>(bytes).map(Record::Signal)
        }
        // Their own ring (`probe::candidates::decode`), never this one.
        RecordKind::CandidateFexit | RecordKind::CandidateKretprobe => None,
        // Their own rings too (`probe::stacks::decode`, `probe::sigkills::decode`).
        RecordKind::TriggerStack | RecordKind::SigkillBtf | RecordKind::SigkillTracepoint => None,
    }
}

/// Copies a plain record out of ring-buffer bytes of exactly its size.
fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: T is aya::Pod (#[repr(C)] plain data): any bytes of its size are a valid value,
    // and read_unaligned copes with any alignment of the ring buffer's memory.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::field;

    fn bytes_of<T>(r: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value with no uninitialised padding
        // (every padding byte is a named field).
        unsafe {
            std::slice::from_raw_parts((r as *const T).cast::<u8>(), std::mem::size_of::<T>())
                .to_vec()
        }
    }

    #[test]
    fn victim_round_trips_at_the_shared_layout() {
        let mut r = VictimRecord::zeroed();
        r.kind = RecordKind::MarkVictimBtf as u32;
        r.present = field::PID | field::TGID;
        r.pid = 77;
        r.tgid = 76;
        r.oom_score_adj = -17;
        r.memcg_id = u64::MAX;
        r.comm[..3].copy_from_slice(b"abc");
        let b = bytes_of(&r);
        // Spot-check offsets the eBPF side writes: pid @16, oom_score_adj @28, memcg_id @72.
        assert_eq!(&b[16..20], &77i32.to_ne_bytes());
        assert_eq!(&b[28..30], &(-17i16).to_ne_bytes());
        assert_eq!(&b[72..80], &u64::MAX.to_ne_bytes());
        let Some(Record::Victim(d)) = decode(&b) else {
            panic!("not a victim record")
        };
        assert_eq!(
            (d.pid, d.tgid, d.oom_score_adj, d.memcg_id),
            (77, 76, -17, u64::MAX)
        );
        assert_eq!(&d.comm[..4], b"abc\0");
    }

    #[test]
    fn oom_kill_record_decodes_by_kind() {
        let mut r = OomKillRecord::zeroed();
        r.kind = RecordKind::OomKill as u32;
        r.gfp_mask = 0xcc0;
        r.chosen_points = 17910;
        r.message[..13].copy_from_slice(b"Out of memory");
        let Some(Record::OomKill(d)) = decode(&bytes_of(&r)) else {
            panic!("not an oom_kill record")
        };
        assert_eq!((d.gfp_mask, d.chosen_points), (0xcc0, 17910));
    }

    #[test]
    fn lifecycle_and_signal_records_decode_at_the_shared_layout() {
        let mut l = LifecycleRecord::zeroed();
        l.kind = RecordKind::VictimExit as u32;
        l.ktime_ns = 5_000;
        l.kill_ktime_ns = 1_000;
        l.pid = 321;
        let b = bytes_of(&l);
        // Offsets the eBPF side writes: kill_ktime_ns @16, pid @24.
        assert_eq!(&b[16..24], &1_000u64.to_ne_bytes());
        assert_eq!(&b[24..28], &321i32.to_ne_bytes());
        let Some(Record::Lifecycle(d)) = decode(&b) else {
            panic!("not a lifecycle record")
        };
        assert_eq!((d.pid, d.kill_ktime_ns, d.ktime_ns), (321, 1_000, 5_000));
        assert!(!Record::Lifecycle(d).is_victim_record());

        let mut s = SignalRecord::zeroed();
        s.kind = RecordKind::SignalTracepoint as u32;
        s.sig = 9;
        s.target_pid = 77;
        s.sender_memcg_id = 42;
        s.sender_comm[..8].copy_from_slice(b"earlyoom");
        let b = bytes_of(&s);
        // sig @16, target_pid @40, sender_memcg_id @48, sender_comm @64.
        assert_eq!(&b[16..20], &9i32.to_ne_bytes());
        assert_eq!(&b[40..44], &77i32.to_ne_bytes());
        assert_eq!(&b[48..56], &42u64.to_ne_bytes());
        assert_eq!(&b[64..72], b"earlyoom");
        let Some(Record::Signal(d)) = decode(&b) else {
            panic!("not a signal record")
        };
        assert_eq!((d.sig, d.target_pid, d.sender_memcg_id), (9, 77, 42));
    }

    #[test]
    fn wrong_sizes_and_kinds_are_rejected() {
        let mut r = VictimRecord::zeroed();
        r.kind = RecordKind::MarkVictimTracepoint as u32;
        let b = bytes_of(&r);
        assert!(decode(&b).is_some());
        assert!(decode(&b[..119]).is_none());
        assert!(decode(&[b.as_slice(), &[0u8; 8]].concat()).is_none());
        // A victim-sized item claiming to be an oom_kill record is not misread.
        let mut k = b.clone();
        k[..4].copy_from_slice(&(RecordKind::OomKill as u32).to_ne_bytes());
        assert!(decode(&k).is_none());
        r.kind = 0;
        assert!(decode(&bytes_of(&r)).is_none());
        // A lifecycle-sized item claiming to be a signal record is not misread either.
        let mut l = LifecycleRecord::zeroed();
        l.kind = RecordKind::SignalBtf as u32;
        assert!(decode(&bytes_of(&l)).is_none());
        assert!(decode(&[]).is_none());
        assert!(decode(&[1, 0]).is_none());
    }
}
