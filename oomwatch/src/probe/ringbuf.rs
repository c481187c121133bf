//! Decoding ring-buffer items into records.
use oomwatch_common::{RecordKind, VictimRecord};

/// Decodes one ring-buffer item. Items of the wrong size or an unknown kind (an object built
/// from other sources than this agent) are rejected, never misread.
pub fn decode(bytes: &[u8]) -> Option<VictimRecord> {
    if bytes.len() != std::mem::size_of::<VictimRecord>() {
        return None;
    }
    // SAFETY: VictimRecord is #[repr(C)] plain data (aya::Pod): any bytes of its size are a
    // valid value, and read_unaligned copes with any alignment of the ring buffer's memory.
    let rec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<VictimRecord>()) };
    RecordKind::from_u32(rec.kind).map(|_| rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::field;

    fn bytes_of(r: &VictimRecord) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value with no uninitialised padding
        // (every padding byte is a named field).
        unsafe { std::slice::from_raw_parts((r as *const VictimRecord).cast::<u8>(), 120).to_vec() }
    }

    #[test]
    fn round_trips_at_the_shared_layout() {
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
        let d = decode(&b).unwrap();
        assert_eq!(
            (d.pid, d.tgid, d.oom_score_adj, d.memcg_id),
            (77, 76, -17, u64::MAX)
        );
        assert_eq!(&d.comm[..4], b"abc\0");
    }

    #[test]
    fn wrong_sizes_and_kinds_are_rejected() {
        let mut r = VictimRecord::zeroed();
        r.kind = RecordKind::MarkVictimTracepoint as u32;
        let b = bytes_of(&r);
        assert!(decode(&b).is_some());
        assert!(decode(&b[..119]).is_none());
        assert!(decode(&[b.as_slice(), &[0u8; 8]].concat()).is_none());
        r.kind = 0;
        assert!(decode(&bytes_of(&r)).is_none());
        assert!(decode(&[]).is_none());
    }
}
