//! The `SIGKILLS` ring: every SIGKILL to a task in a non-root memory cgroup
//! (`oomwatch-ebpf/src/sigkill.rs`), in a ring of its own so a kill storm never displaces a
//! victim record.
use aya::maps::{MapData, RingBuf};
use oomwatch_common::{RecordKind, SigkillRecord};

/// Hands every record waiting in the `SIGKILLS` ring to `each`.
pub fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(SigkillRecord)) {
    while let Some(item) = ring.next() {
        if let Some(rec) = decode(&item) {
            each(rec);
        }
    }
}

/// Decodes one item of the `SIGKILLS` ring; `None` for a wrong size or kind.
pub fn decode(bytes: &[u8]) -> Option<SigkillRecord> {
    if bytes.len() != std::mem::size_of::<SigkillRecord>() {
        return None;
    }
    // SAFETY: SigkillRecord is aya::Pod (#[repr(C)] plain data): any bytes of its size are a
    // valid value, and read_unaligned copes with any alignment of the ring buffer's memory.
    let rec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SigkillRecord>()) };
    matches!(
        RecordKind::from_u32(rec.kind),
        Some(RecordKind::SigkillBtf | RecordKind::SigkillTracepoint)
    )
    .then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::{EXE_NAME_LEN, SIGKILL_EXE_DEPTH};

    pub(crate) fn zeroed() -> SigkillRecord {
        // SAFETY: SigkillRecord is plain data; all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }

    fn bytes_of(r: &SigkillRecord) -> Vec<u8> {
        // SAFETY: a plain #[repr(C)] value whose padding bytes are all named fields.
        unsafe {
            std::slice::from_raw_parts(
                (r as *const SigkillRecord).cast::<u8>(),
                std::mem::size_of::<SigkillRecord>(),
            )
            .to_vec()
        }
    }

    #[test]
    fn sigkill_records_decode_at_the_shared_layout() {
        let mut r = zeroed();
        r.kind = RecordKind::SigkillBtf as u32;
        r.code = 0x80;
        r.sender_pid = 7;
        r.target_tgid = 9;
        r.target_ns_tgid = 1;
        r.sender_memcg_id = 42;
        r.sender_exe[0][..4].copy_from_slice(b"runc");
        let b = bytes_of(&r);
        // code @16, sender_pid @28, target_tgid @40, target_ns_tgid @48, sender_memcg_id @56,
        // sender_exe @104.
        assert_eq!(&b[16..20], &0x80i32.to_ne_bytes());
        assert_eq!(&b[28..32], &7i32.to_ne_bytes());
        assert_eq!(&b[40..44], &9i32.to_ne_bytes());
        assert_eq!(&b[48..52], &1i32.to_ne_bytes());
        assert_eq!(&b[56..64], &42u64.to_ne_bytes());
        assert_eq!(&b[104..108], b"runc");
        assert_eq!(b.len(), 104 + EXE_NAME_LEN * SIGKILL_EXE_DEPTH);
        let d = decode(&b).expect("a sigkill record");
        assert_eq!((d.code, d.sender_pid, d.target_tgid), (0x80, 7, 9));
    }

    #[test]
    fn wrong_sizes_and_kinds_are_rejected() {
        let mut r = zeroed();
        r.kind = RecordKind::SigkillTracepoint as u32;
        let b = bytes_of(&r);
        assert!(decode(&b).is_some());
        assert!(decode(&b[..b.len() - 1]).is_none());
        r.kind = RecordKind::TriggerStack as u32;
        assert!(decode(&bytes_of(&r)).is_none());
    }
}
