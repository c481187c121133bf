//! The `STACKS` ring: the trigger's kernel and user stacks, one record per OOM invocation
//! (`oomwatch-ebpf/src/stack.rs`), in a ring of their own so stacks never displace victims.
use aya::maps::{MapData, RingBuf};
use oomwatch_common::{RecordKind, StackRecord};

/// Hands every record waiting in the `STACKS` ring to `each`.
pub fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(Box<StackRecord>)) {
    while let Some(item) = ring.next() {
        if let Some(rec) = decode(&item) {
            each(rec);
        }
    }
}

/// Decodes one item of the `STACKS` ring; `None` for a wrong size or kind.
pub fn decode(bytes: &[u8]) -> Option<Box<StackRecord>> {
    if bytes.len() != std::mem::size_of::<StackRecord>() {
        return None;
    }
    // SAFETY: StackRecord is aya::Pod (#[repr(C)] plain data): any bytes of its size are a
    // valid value, and read_unaligned copes with any alignment of the ring buffer's memory.
    let rec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<StackRecord>()) };
    (RecordKind::from_u32(rec.kind) == Some(RecordKind::TriggerStack)).then(|| Box::new(rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::{
        stack_field, BuildIdFrame, EXE_NAME_LEN, EXE_PATH_DEPTH, MAX_STACK_DEPTH,
    };

    fn record() -> StackRecord {
        StackRecord {
            kind: RecordKind::TriggerStack as u32,
            present: stack_field::KERNEL | stack_field::USER,
            ktime_ns: 9,
            trigger_pid: 42,
            trigger_tgid: 41,
            kernel_bytes: 16,
            user_bytes: -14,
            build_id_bytes: 0,
            exe_depth: 2,
            start_code: 0x5555_0000_1000,
            end_code: 0x5555_0000_9000,
            kernel: [7; MAX_STACK_DEPTH],
            user: [0; MAX_STACK_DEPTH],
            user_build_ids: [BuildIdFrame {
                status: 0,
                build_id: [0; 20],
                offset_or_ip: 0,
            }; MAX_STACK_DEPTH],
            exe_path: [[0; EXE_NAME_LEN]; EXE_PATH_DEPTH],
        }
    }

    fn bytes_of(r: &StackRecord) -> Vec<u8> {
        // SAFETY: a plain #[repr(C)] value whose padding bytes are all named fields.
        unsafe {
            std::slice::from_raw_parts(
                (r as *const StackRecord).cast::<u8>(),
                std::mem::size_of::<StackRecord>(),
            )
            .to_vec()
        }
    }

    #[test]
    fn stack_records_decode_and_bound_their_frames() {
        let b = bytes_of(&record());
        // trigger_pid @16, kernel_bytes @24, start_code @40, the kernel array @56.
        assert_eq!(&b[16..20], &42i32.to_ne_bytes());
        assert_eq!(&b[24..28], &16i32.to_ne_bytes());
        assert_eq!(&b[40..48], &0x5555_0000_1000u64.to_ne_bytes());
        assert_eq!(&b[56..64], &7u64.to_ne_bytes());
        let d = decode(&b).expect("a stack record");
        assert_eq!(d.kernel_frames(), &[7, 7]);
        // A negative byte count (the helper's error) gives no frames, never a misread.
        assert!(d.user_frames().is_empty());
        assert!(d.build_id_frames().is_empty());
    }

    #[test]
    fn the_executable_path_reads_outermost_first() {
        let mut r = record();
        r.exe_path[0][..5].copy_from_slice(b"leaky");
        r.exe_path[1][..3].copy_from_slice(b"tmp");
        let parts = r.exe_path().unwrap();
        assert_eq!(&parts[..2], &[b"tmp".as_slice(), b"leaky".as_slice()]);
        assert!(parts[2].is_empty());
        r.exe_depth = 0;
        assert!(r.exe_path().is_none());
        // A component without its NUL is taken whole, never read past.
        r.exe_depth = 1;
        r.exe_path[0] = [b'a'; EXE_NAME_LEN];
        assert_eq!(r.exe_path().unwrap()[0].len(), EXE_NAME_LEN);
    }

    #[test]
    fn wrong_sizes_kinds_and_oversized_counts_are_safe() {
        let mut r = record();
        let b = bytes_of(&r);
        assert!(decode(&b[..b.len() - 1]).is_none());
        r.kind = RecordKind::MarkVictimBtf as u32;
        assert!(decode(&bytes_of(&r)).is_none());
        let mut r = record();
        r.kernel_bytes = i32::MAX;
        assert_eq!(
            decode(&bytes_of(&r)).unwrap().kernel_frames().len(),
            MAX_STACK_DEPTH
        );
    }
}
