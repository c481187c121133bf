//! Unit tests of the BTF reader on hand-built blobs and hostile input.
use super::*;

/// Builds little-endian BTF blobs by hand: `ty` emits a type header, `w` trailing words,
/// `rec` a named record (member, enumerator, parameter).
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    last_id: u32,
}

impl Builder {
    fn s(&mut self, name: &str) -> u32 {
        let off = if name.is_empty() {
            0
        } else {
            self.strings.len() as u32
        };
        self.strings
            .extend(name.bytes().chain((!name.is_empty()).then_some(0)));
        off
    }
    fn w(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }
    fn ty(&mut self, name: &str, kind: u8, kflag: bool, vlen: u32, size_type: u32) -> u32 {
        let n = self.s(name);
        for v in [
            n,
            (u32::from(kflag) << 31) | (u32::from(kind) << 24) | vlen,
            size_type,
        ] {
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

/// struct inner { int a; int b; };
/// struct outer { unsigned head; union { int x; struct inner in; };
///                unsigned flags:3; struct inner emb; const u32 tail; };   (kind_flag)
/// typedef void (*btf_trace_demo)(void *, struct outer *, const u32);
/// plus enums, a FUNC, an old-style INT bitfield and a typedef cycle.
fn sample() -> Vec<u8> {
    let mut b = Builder {
        types: Vec::new(),
        strings: vec![0],
        last_id: 0,
    };
    let int = b.ty("int", INT, false, 0, 4);
    b.w((1 << 24) | 32);
    let uint = b.ty("unsigned int", INT, false, 0, 4);
    b.w(32);
    let inner = b.ty("inner", STRUCT, false, 2, 8);
    b.rec("a", &[int, 0]);
    b.rec("b", &[int, 32]);
    let anon = b.ty("", UNION, false, 2, 8);
    b.rec("x", &[int, 0]);
    b.rec("in", &[inner, 0]);
    let outer = b.ty("outer", STRUCT, true, 5, 32);
    let (u32_id, const_u32) = (outer + 1, outer + 2);
    b.rec("head", &[uint, 0]);
    b.rec("", &[anon, 64]);
    b.rec("flags", &[uint, (3 << 24) | 128]);
    b.rec("emb", &[inner, 160]);
    b.rec("tail", &[const_u32, 224]);
    assert_eq!(b.ty("u32", TYPEDEF, false, 0, uint), u32_id);
    assert_eq!(b.ty("", CONST, false, 0, u32_id), const_u32);
    let p_outer = b.ty("", PTR, false, 0, outer);
    let p_void = b.ty("", PTR, false, 0, 0);
    let proto = b.ty("", FUNC_PROTO, false, 3, 0);
    for p in [p_void, p_outer, const_u32] {
        b.rec("", &[p]);
    }
    let p_proto = b.ty("", PTR, false, 0, proto);
    b.ty("btf_trace_demo", TYPEDEF, false, 0, p_proto);
    b.ty("colors", ENUM, true, 2, 4);
    b.rec("RED", &[0]);
    b.rec("BLUE", &[u32::MAX]);
    b.ty("big", ENUM64, false, 1, 8);
    b.rec("HUGE", &[2, 1]);
    b.ty("do_demo", FUNC, false, 1, proto);
    b.ty("other", ENUM, false, 1, 4);
    b.rec("RED", &[5]);
    let u3 = b.ty("u3", INT, false, 0, 4);
    b.w(3);
    b.ty("legacy", STRUCT, false, 1, 4);
    b.rec("lo", &[u3, 0]);
    let loop_a = b.ty("loop_a", TYPEDEF, false, 0, b.last_id + 2);
    b.ty("loop_b", TYPEDEF, false, 0, loop_a);
    let cyclic = b.ty("cyclic", STRUCT, false, 2, 4);
    b.rec("l", &[loop_a, 0]);
    b.rec("", &[cyclic, 0]);
    b.build()
}

#[test]
fn lookups_on_hand_built_blob() {
    let btf = Btf::from_bytes(&sample()).expect("sample parses");
    let off = |p| btf.member_offset("outer", p).map_err(|e| e.to_string());
    assert_eq!(off("head"), Ok(0));
    assert_eq!(off("x"), Ok(8));
    assert_eq!(off("in.b"), Ok(12));
    assert_eq!(off("emb.b"), Ok(24));
    assert_eq!(off("tail"), Ok(28));
    assert!(off("flags")
        .unwrap_err()
        .contains("`flags` of struct `outer` is a bitfield"));
    assert!(matches!(
        btf.member_offset("legacy", "lo"),
        Err(BtfError::Bitfield(..))
    ));
    assert_eq!(
        off("foo").unwrap_err(),
        "struct `outer` has no member `foo`"
    );
    assert_eq!(
        off("emb.zz").unwrap_err(),
        "struct `inner` has no member `zz`"
    );
    assert!(off("head.a")
        .unwrap_err()
        .contains("is `unsigned int`, not an embedded"));
    assert!(matches!(
        btf.member_offset("outer", "a..b"),
        Err(BtfError::BadPath(_))
    ));
    let e = btf
        .member_offset("task_struct", "pid")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "BTF has no struct `task_struct`");
    assert_eq!(btf.struct_size("outer").unwrap(), 32);
    assert_eq!(btf.member_size("outer", "tail").unwrap(), 4);
    assert_eq!(btf.member_size("outer", "in").unwrap(), 8);
    assert!(matches!(
        btf.member_size("cyclic", "l"),
        Err(BtfError::TooDeep(_))
    ));
    assert!(matches!(
        btf.member_offset("cyclic", "zz"),
        Err(BtfError::TooDeep(_))
    ));
    assert_eq!(btf.enum_value(Some("colors"), "BLUE").unwrap(), -1);
    assert_eq!(btf.enum_value(None, "HUGE").unwrap(), 0x1_0000_0002);
    assert_eq!(btf.enum_value(Some("other"), "RED").unwrap(), 5);
    let e = btf.enum_value(None, "RED");
    assert!(matches!(e, Err(BtfError::AmbiguousEnumerator(_, 0, 5))));
    assert!(matches!(
        btf.enum_value(Some("zz"), "RED"),
        Err(BtfError::NoEnum(_))
    ));
    assert!(matches!(
        btf.enum_value(None, "GREEN"),
        Err(BtfError::NoEnumerator(..))
    ));
    assert!(btf.has_func("do_demo") && !btf.has_func("btf_trace_demo"));
    assert_eq!(
        btf.tracepoint_params("demo").unwrap(),
        ["struct outer *", "const u32"]
    );
    let e = btf.tracepoint_params("nope");
    assert!(matches!(e, Err(BtfError::NoTracepoint(_))));
    let e = Btf::from_file(Path::new("/nonexistent/vmlinux"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/vmlinux") && e.contains("CONFIG_DEBUG_INFO_BTF"),
        "{e}"
    );
}

#[test]
fn malformed_input_is_rejected() {
    let good = sample();
    let bad = |at: usize, bytes: &[u8]| {
        let mut d = good.clone();
        d[at..at + bytes.len()].copy_from_slice(bytes);
        Btf::from_bytes(&d).expect_err("must fail")
    };
    let word = |v: u32| v.to_le_bytes();
    let err = |d: &[u8]| Btf::from_bytes(d).expect_err("must fail");
    assert!(matches!(err(&good[..10]), BtfError::TruncatedHeader(10)));
    assert!(matches!(err(&[]), BtfError::TruncatedHeader(0)));
    assert!(matches!(bad(0, &[0]), BtfError::BadMagic(_)));
    assert!(matches!(bad(0, &[0xeb, 0x9f]), BtfError::BigEndian));
    assert!(matches!(bad(2, &[2]), BtfError::BadVersion(2)));
    assert!(matches!(
        bad(4, &word(1000)),
        BtfError::BadHeaderLen(1000, _)
    ));
    let e = bad(12, &word(1 << 20)); // type_len past the end
    assert!(matches!(e, BtfError::SectionOutOfBounds("type", ..)));
    let e = bad(16, &word(u32::MAX)); // str_off past the end (and overflowing u32)
    assert!(matches!(e, BtfError::SectionOutOfBounds("string", ..)));
    let e = bad(24, &word(1 << 20)); // name_off of type 1
    assert!(matches!(e, BtfError::BadStringOffset(1, 0x10_0000, _)));
    assert!(matches!(
        bad(28, &word(25 << 24)),
        BtfError::UnknownKind(1, 25)
    ));
    assert!(matches!(bad(12, &word(30)), BtfError::TruncatedType(2)));
    assert!(matches!(
        bad(good.len() - 1, b"x"),
        BtfError::BadStringSection
    ));
}

/// Runs every query, only to check that nothing panics or hangs.
fn exercise(btf: &Btf) {
    for s in ["outer", "inner", "legacy", "cyclic", "colors", ""] {
        for m in ["head", "x", "in.b", "emb.a", "tail", "flags", "l", "lo"] {
            let _ = (btf.member_offset(s, m), btf.member_size(s, m));
        }
        let _ = (
            btf.struct_size(s),
            btf.enum_value(Some(s), "RED"),
            btf.has_func(s),
        );
    }
    let _ = (btf.enum_value(None, "HUGE"), btf.tracepoint_params("demo"));
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rng = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    for _ in 0..20_000 {
        let mut d: Vec<u8> = (0..rng() % 256).map(|_| rng() as u8).collect();
        if rng() % 2 == 0 && d.len() >= 24 {
            d[..8].copy_from_slice(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]);
        }
        let _ = Btf::from_bytes(&d).map(|b| exercise(&b));
    }
    let (good, mut parsed) = (sample(), 0);
    for _ in 0..20_000 {
        let mut d = good.clone();
        for _ in 0..1 + rng() % 4 {
            let bit = rng() % (d.len() * 8);
            d[bit / 8] ^= 1 << (bit % 8);
        }
        if rng() % 4 == 0 {
            d.truncate(rng() % d.len());
        }
        if let Ok(b) = Btf::from_bytes(&d) {
            parsed += 1;
            exercise(&b);
        }
    }
    assert!(parsed > 1000, "only {parsed} mutated blobs parsed");
}
