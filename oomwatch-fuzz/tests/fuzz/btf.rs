//! The BTF reader: a hand-built blob that answers every query (mutated), this kernel's
//! `/sys/kernel/btf/vmlinux` cut short and mutated, and hostile headers and type graphs that
//! claim far more than they hold.
use std::path::Path;
use std::time::{Duration, Instant};

use oomwatch::source::btf::kind::{
    ARRAY, CONST, ENUM, ENUM64, FUNC, FUNC_PROTO, FWD, INT, PTR, STRUCT, TYPEDEF, UNION,
};
use oomwatch::source::btf::Btf;
use oomwatch::source::gfp::{GfpDecoder, NameTable};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::harness::{self, bounded, check, Bytes, Edit};

const GFP_BITS: &[&str] = &[
    "DMA",
    "HIGHMEM",
    "DMA32",
    "MOVABLE",
    "RECLAIMABLE",
    "HIGH",
    "IO",
    "FS",
    "ZERO",
    "UNUSED",
    "DIRECT_RECLAIM",
    "KSWAPD_RECLAIM",
    "WRITE",
    "NOWARN",
    "RETRY_MAYFAIL",
    "NOFAIL",
    "NORETRY",
    "MEMALLOC",
    "COMP",
    "NOMEMALLOC",
    "HARDWALL",
    "THISNODE",
    "ACCOUNT",
    "ZEROTAGS",
    "NO_OBJ_EXT",
    "LAST",
];

/// Builds little-endian BTF by hand (independently of the reader).
#[derive(Default)]
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    last_id: u32,
}

impl Builder {
    fn new() -> Self {
        Builder {
            strings: vec![0],
            ..Builder::default()
        }
    }
    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend(name.bytes().chain([0]));
        off
    }
    fn w(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }
    fn ty(&mut self, name: &str, kind: u8, kflag: bool, vlen: u32, size_type: u32) -> u32 {
        let n = self.s(name);
        let info = (u32::from(kflag) << 31) | (u32::from(kind) << 24) | vlen;
        for v in [n, info, size_type] {
            self.w(v);
        }
        self.last_id += 1;
        self.last_id
    }
    fn rec(&mut self, name: &str, rest: &[u32]) {
        let n = self.s(name);
        for &v in [n].iter().chain(rest) {
            self.w(v);
        }
    }
    fn build(&self) -> Vec<u8> {
        let (tl, sl) = (self.types.len() as u32, self.strings.len() as u32);
        let hdr = [0x0001_eb9f, 24, 0, tl, tl, sl].map(u32::to_le_bytes);
        [hdr.concat(), self.types.clone(), self.strings.clone()].concat()
    }
}

/// `struct task_struct { int pid; int tgid; union { long rss; }; struct mm_struct *mm;
/// char comm[16]; unsigned flags:3; }`, `typedef void (*btf_trace_mark_victim)(void *,
/// struct task_struct *, const uid_t)`, the `___GFP_*_BIT` enum, an ENUM64 and a FUNC.
fn sample() -> Vec<u8> {
    let mut b = Builder::new();
    let int = b.ty("int", INT, false, 0, 4);
    b.w((1 << 24) | 32);
    let long = b.ty("long int", INT, false, 0, 8);
    b.w((1 << 24) | 64);
    let uint = b.ty("unsigned int", INT, false, 0, 4);
    b.w(32);
    let chr = b.ty("char", INT, false, 0, 1);
    b.w(8);
    let uid = b.ty("uid_t", TYPEDEF, false, 0, uint);
    let cuid = b.ty("", CONST, false, 0, uid);
    let task = b.last_id + 1;
    let union = task + 1;
    let mm = task + 2;
    let mm_ptr = task + 3;
    let comm = task + 4;
    b.ty("task_struct", STRUCT, true, 6, 64);
    b.rec("pid", &[int, 0]);
    b.rec("tgid", &[int, 32]);
    b.rec("", &[union, 64]);
    b.rec("mm", &[mm_ptr, 128]);
    b.rec("comm", &[comm, 192]);
    b.rec("flags", &[uint, (3 << 24) | 320]);
    b.ty("", UNION, false, 1, 8);
    b.rec("rss", &[long, 0]);
    b.ty("mm_struct", FWD, false, 0, 0);
    b.ty("", PTR, false, 0, mm);
    b.ty("", ARRAY, false, 0, 0);
    for v in [chr, int, 16] {
        b.w(v);
    }
    let task_ptr = b.ty("", PTR, false, 0, task);
    let void_ptr = b.ty("", PTR, false, 0, 0);
    let proto = b.ty("", FUNC_PROTO, false, 3, 0);
    for t in [void_ptr, task_ptr, cuid] {
        b.rec("", &[t]);
    }
    let proto_ptr = b.ty("", PTR, false, 0, proto);
    b.ty("btf_trace_mark_victim", TYPEDEF, false, 0, proto_ptr);
    b.ty("oom_kill_process", FUNC, false, 0, proto);
    b.ty("", ENUM, false, GFP_BITS.len() as u32, 4);
    for (i, bit) in GFP_BITS.iter().enumerate() {
        b.rec(&format!("___GFP_{bit}_BIT"), &[i as u32]);
    }
    b.ty("big", ENUM64, true, 1, 8);
    b.rec("BIG", &[0xffff_fffe, 0x8000_0000]);
    b.build()
}

/// Every query the agent makes; errors are fine, panics and unbounded work are not.
fn exercise(btf: &Btf) {
    for path in [
        "pid", "tgid", "rss", "mm", "comm", "flags", "nope", "", "a..b",
    ] {
        let _ = btf.member_offset("task_struct", path);
        let _ = btf.member_size("task_struct", path);
    }
    let _ = btf.struct_size("task_struct");
    let _ = btf.struct_size("mm_struct");
    let _ = btf.enum_value(None, "___GFP_IO_BIT");
    let _ = btf.enum_value(Some("big"), "BIG");
    let _ = btf.has_func("oom_kill_process");
    let _ = btf.tracepoint_params("mark_victim");
    for names in [NameTable::Listed, NameTable::Enumerated] {
        if let Some(d) = GfpDecoder::from_btf_with(btf, names) {
            let _ = d.decode(0x0014_0cca);
            let _ = d.decode(u32::MAX);
        }
    }
}

#[test]
fn btf_sample_answers_as_built() {
    let btf = Btf::from_bytes(&sample()).expect("the sample parses");
    assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), 4);
    assert_eq!(btf.member_offset("task_struct", "rss").unwrap(), 8);
    assert_eq!(btf.member_size("task_struct", "comm").unwrap(), 16);
    assert_eq!(
        btf.enum_value(Some("big"), "BIG").unwrap(),
        i64::MIN + (1 << 32) - 2
    );
    let params = btf.tracepoint_params("mark_victim").unwrap();
    assert_eq!(params, ["struct task_struct *", "const uid_t"]);
    assert!(GfpDecoder::from_btf_with(&btf, NameTable::Enumerated).is_some());
}

#[test]
fn btf_sample_mutated() {
    let strategy = prop_oneof![
        4 => harness::mutated(vec![sample()], b"\x00\x01\x02\x04\x08\x0c\x10\xff", 8),
        1 => harness::bytes(b"\x00\x01\x9f\xeb\x18\x0c\xff", 600),
    ];
    check("btf_sample_mutated", 1, strategy, |blob: Bytes| {
        let btf = bounded("Btf::from_bytes", blob.0.len(), 16, || {
            Btf::from_bytes(&blob.0)
        });
        if let Ok(btf) = btf {
            bounded("BTF queries", blob.0.len(), 64, || exercise(&btf));
        }
    });
}

/// This kernel's BTF: the header and the first 64 KiB of types, cut anywhere and mutated, in
/// front of the whole string section (so names resolve and parsing goes deep).
#[test]
fn btf_vmlinux_prefix_mutated() {
    let read = std::fs::read("/sys/kernel/btf/vmlinux");
    let Some(vmlinux) = oomwatch_testkit::host_or_skip("/sys/kernel/btf/vmlinux", read) else {
        return;
    };
    let word = |i: usize| u32::from_le_bytes(vmlinux[i..i + 4].try_into().unwrap()) as usize;
    let (hdr, type_off, type_len, str_off, str_len) =
        (word(4), word(8), word(12), word(16), word(20));
    let types = &vmlinux[hdr + type_off..][..type_len.min(64 << 10)];
    let strings = vmlinux[hdr + str_off..][..str_len].to_vec();
    let head: Vec<u8> = [&vmlinux[..24], types].concat();
    let strategy = (any::<Index>(), harness::edits(b"\x00\x01\x04\x0c\xff", 8));
    check(
        "btf_vmlinux_prefix",
        2,
        strategy,
        |(cut, edits): (Index, Vec<Edit>)| {
            let cut = 24 + cut.index(head.len() - 23);
            let mut prefix = head[..cut].to_vec();
            let tl = (cut - 24) as u32;
            for (at, v) in [
                (4, 24),
                (8, 0),
                (12, tl),
                (16, tl),
                (20, strings.len() as u32),
            ] {
                prefix[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            for e in &edits {
                harness::apply(&mut prefix, e);
            }
            let blob = [prefix, strings.clone()].concat();
            let btf = bounded("Btf::from_bytes", blob.len(), 8, || Btf::from_bytes(&blob));
            if let Ok(btf) = btf {
                bounded("BTF queries", blob.len(), 8, || exercise(&btf));
            }
        },
    );
}

/// Headers claiming gigabytes in a small buffer are refused at once, without allocating.
#[test]
fn btf_absurd_sizes_are_refused_cheaply() {
    let sample = sample();
    let mut cases = Vec::new();
    for (at, v) in [
        (4, u32::MAX),
        (8, u32::MAX),
        (12, u32::MAX),
        (16, 1 << 31),
        (20, u32::MAX),
    ] {
        let mut b = sample.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        cases.push(b);
    }
    // One STRUCT claiming 65535 members, and one claiming a 4 GiB array of 4 GiB elements.
    let mut b = Builder::new();
    let int = b.ty("int", INT, false, 0, 4);
    b.w(32);
    b.ty("s", STRUCT, false, 0xffff, 1 << 31);
    cases.push(b.build());
    let mut b = Builder::new();
    let big = b.ty("big", STRUCT, false, 0, u32::MAX);
    let arr = b.ty("", ARRAY, false, 0, 0);
    for v in [big, int, u32::MAX] {
        b.w(v);
    }
    b.ty("s", STRUCT, false, 1, 8);
    b.rec("a", &[arr, 0]);
    cases.push(b.build());
    for blob in cases {
        let t = Instant::now();
        let (btf, peak) = harness::peak_heap(|| Btf::from_bytes(&blob));
        assert!(
            peak <= 64 << 10,
            "{peak} bytes for a {}-byte blob",
            blob.len()
        );
        if let Ok(btf) = btf {
            bounded("BTF queries", blob.len(), 64, || exercise(&btf));
            assert!(btf.member_size("s", "a").is_err());
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

/// A raw tracepoint whose 65535 parameters each point to a prototype of 65535 parameters of
/// one struct with a 4 KiB name: naming them all would spell 16 TiB from 1 MiB of BTF.
#[test]
fn btf_shared_type_names_stay_bounded() {
    let mut b = Builder::new();
    let name = "n".repeat(4096);
    let s = b.ty(&name, STRUCT, false, 0, 0);
    let inner = b.ty("", FUNC_PROTO, false, 0xffff, 0);
    for _ in 0..0xffff {
        b.rec("", &[s]);
    }
    let inner_ptr = b.ty("", PTR, false, 0, inner);
    let void_ptr = b.ty("", PTR, false, 0, 0);
    let outer = b.ty("", FUNC_PROTO, false, 0xffff, 0);
    b.rec("", &[void_ptr]);
    for _ in 1..0xffff {
        b.rec("", &[inner_ptr]);
    }
    let outer_ptr = b.ty("", PTR, false, 0, outer);
    b.ty("btf_trace_wide", TYPEDEF, false, 0, outer_ptr);
    let blob = b.build();
    let btf = Btf::from_bytes(&blob).expect("well-formed");
    let t = Instant::now();
    let params = bounded("tracepoint_params", blob.len(), 16, || {
        btf.tracepoint_params("wide")
    });
    assert!(params.is_err(), "{} names", params.map_or(0, |p| p.len()));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// This kernel's whole BTF parses within a small multiple of its size.
#[test]
fn btf_vmlinux_whole_is_bounded() {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let Some(data) =
        oomwatch_testkit::host_or_skip(&path.display().to_string(), std::fs::read(path))
    else {
        return;
    };
    let btf = bounded("Btf::from_bytes", data.len(), 8, || Btf::from_bytes(&data));
    let btf = btf.expect("this kernel's BTF parses");
    bounded("BTF queries", data.len(), 1, || exercise(&btf));
}
