//! Tests of [`super`]. Ground truth is the kernel's own output: `%pGg` decodings in real OOM
//! reports (fixtures captured on Linux 6.18, and the live log) and the kernel's name table as
//! tracefs prints it (`show_gfp_flags()` in the `kmem/mm_page_alloc` format, the same
//! `__def_gfpflag_names` `%pGg` uses), evaluated here.
//!
//! Tests on the running kernel skip (`oomwatch_testkit::skip`) when `/sys/kernel/btf/vmlinux`
//! (or tracefs, `/dev/kmsg`) is missing, unless `OOMWATCH_REQUIRE_REAL_KERNEL=1`: then they fail.
use super::*;
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

fn read_fixture(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

use oomwatch_testkit::skip;

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn check(d: &GfpDecoder, mask: u32, want: &[&str]) {
    assert_eq!(d.decode(mask), strings(want), "decode({mask:#x})");
}

/// The `(mask, kernel text)` of every `invoked oom-killer: gfp_mask=0x…(…)` line.
fn invoked(text: &str) -> Vec<(u32, String)> {
    let parse = |line: &str| {
        let (_, rest) = line.split_once(" invoked oom-killer: gfp_mask=0x")?;
        let (hex, rest) = rest.split_once('(')?;
        let (names, _) = rest.split_once(')')?;
        Some((u32::from_str_radix(hex, 16).ok()?, names.to_string()))
    };
    text.lines().filter_map(parse).collect()
}

/// The decoder of the saved 6.18 host layout (`bpftool btf dump` of its `___GFP_*_BIT`s).
fn saved_v6_18(names: NameTable) -> GfpDecoder {
    let text = read_fixture("gfp/gfp-bits-v6.18-host.txt");
    let bits: HashMap<&str, u32> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once('=').unwrap())
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    GfpDecoder::from_bits(
        |f| bits.get(format!("___GFP_{f}_BIT").as_str()).copied(),
        names,
    )
    .expect("the saved 6.18 layout is complete")
}

/// A layout from `(flag, bit)` pairs, for hand-built kernels.
fn layout(pairs: &[(&str, u32)], names: NameTable) -> Option<GfpDecoder> {
    let bits: HashMap<&str, u32> = pairs.iter().copied().collect();
    GfpDecoder::from_bits(|f| bits.get(f).copied(), names)
}

/// The 6.10+ enum: the unconditional flags, `UNUSED` at bit 9, then the config-dependent
/// flags given, numbered in enum order.
fn enum_layout(optional: &[&str]) -> Vec<(&'static str, u32)> {
    let mut pairs = Vec::new();
    let mut bit = 0;
    for &flag in FLAGS {
        if OPTIONAL.contains(&flag) && !optional.contains(&flag) {
            continue;
        }
        bit += u32::from(flag == "DIRECT_RECLAIM"); // ___GFP_UNUSED_BIT
        pairs.push((flag, bit));
        bit += 1;
    }
    pairs.push(("LAST", bit));
    pairs
}

/// Evaluate a C constant expression of the format file: numbers, `( … )`, `~ << & |`.
fn eval(expr: &str) -> u64 {
    let mut spaced = String::new();
    let expr = expr.replace("( unsigned long)", "").replace("( gfp_t)", "");
    for c in expr.replace("<<", " << ").chars() {
        match c {
            '(' | ')' | '|' | '&' | '~' => spaced.extend([' ', c, ' ']),
            _ => spaced.push(c),
        }
    }
    let toks: Vec<String> = spaced.split_whitespace().map(str::to_string).collect();
    fn num(t: &str) -> u64 {
        let t = t.trim_end_matches(['u', 'U', 'l', 'L']);
        match t.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => t.parse().unwrap_or_else(|_| panic!("not a number: {t}")),
        }
    }
    // Precedence, loosest first: | & << (~ and parentheses bind tightest).
    fn binary(t: &[String], i: &mut usize, level: usize) -> u64 {
        if level == 3 {
            return unary(t, i);
        }
        let mut v = binary(t, i, level + 1);
        while *i < t.len() && t[*i] == ["|", "&", "<<"][level] {
            *i += 1;
            let r = binary(t, i, level + 1);
            v = match level {
                0 => v | r,
                1 => v & r,
                _ => v << r,
            };
        }
        v
    }
    fn unary(t: &[String], i: &mut usize) -> u64 {
        *i += 1;
        match t[*i - 1].as_str() {
            "~" => !unary(t, i),
            "(" => {
                let v = binary(t, i, 0);
                assert_eq!(t[*i], ")");
                *i += 1;
                v
            }
            n => num(n),
        }
    }
    let mut i = 0;
    let v = binary(&toks, &mut i, 0);
    assert_eq!(i, toks.len(), "trailing tokens in {expr}");
    v
}

/// The kernel's `(mask, name)` table from a `mm_page_alloc` format's `show_gfp_flags()`.
fn kernel_table(format: &str) -> Vec<(u32, String)> {
    let start = format
        .find("__print_flags(REC->gfp_flags, \"|\",")
        .expect("no show_gfp_flags() in the format");
    let mut rest = &format[start..];
    let mut out = Vec::new();
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("unterminated entry");
        let entry = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if entry.trim_start().starts_with("0,") {
            break;
        }
        let (expr, name) = entry.rsplit_once(", \"").expect("entry without a name");
        let mask = u32::try_from(eval(expr) & 0xffff_ffff).unwrap();
        out.push((mask, name.trim_end_matches('"').to_string()));
    }
    out
}

#[test]
fn names_from_log_splits_the_kernels_text() {
    let names = names_from_log("GFP_HIGHUSER_MOVABLE|__GFP_COMP");
    assert_eq!(names, strings(&["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"]));
    assert_eq!(names_from_log("(GFP_KERNEL)"), strings(&["GFP_KERNEL"]));
    assert_eq!(
        names_from_log(" __GFP_HIGH|0x4000000 "),
        strings(&["__GFP_HIGH", "0x4000000"])
    );
    assert!(
        names_from_log("").is_empty(),
        "gfp_mask=0x0() decodes to nothing"
    );
}

#[test]
fn log_only_decoder_knows_what_it_learned() {
    let mut d = GfpDecoder::from_log_only();
    assert!(!d.has_layout());
    assert_eq!(d.lookup(0x1100cca), None);
    check(&d, 0x1100cca, &["0x1100cca"]);
    assert_eq!(d.decode(0), Vec::<String>::new());
    // A real report of 5.15.0-1041-azure: before 6.10 only the log can tell (here bit 24,
    // ___GFP_SKIP_KASAN_POISON, is part of GFP_HIGHUSER_MOVABLE).
    d.learn_from_log(0x1100cca, "GFP_HIGHUSER_MOVABLE");
    check(&d, 0x1100cca, &["GFP_HIGHUSER_MOVABLE"]);
    d.learn_from_log(0x1100dca, "GFP_HIGHUSER_MOVABLE|__GFP_ZERO");
    check(&d, 0x1100dca, &["GFP_HIGHUSER_MOVABLE", "__GFP_ZERO"]);
    assert_eq!(
        d.decode(0x100cca),
        strings(&["0x100cca"]),
        "only learned masks decode"
    );
    for mask in 1..=(MAX_LEARNED as u32 + 10) {
        d.learn(mask << 1, strings(&["X"]));
    }
    assert_eq!(d.learned.len(), MAX_LEARNED, "the cache is bounded");
    d.learn_from_log(0x1100dca, "GFP_USER");
    assert_eq!(
        d.decode(0x1100dca),
        strings(&["GFP_USER"]),
        "known masks still update"
    );
}

#[test]
fn name_table_follows_the_release() {
    assert_eq!(
        NameTable::for_release("6.18.44-fc-v669\n"),
        NameTable::Enumerated
    );
    assert_eq!(NameTable::for_release("6.15.0"), NameTable::Enumerated);
    assert_eq!(
        NameTable::for_release("6.14.11-300.fc42.x86_64"),
        NameTable::Listed
    );
    assert_eq!(NameTable::for_release("6.10-rc1"), NameTable::Listed);
    assert_eq!(NameTable::for_release("7.0.1"), NameTable::Enumerated);
    assert_eq!(NameTable::for_release("garbage"), NameTable::Enumerated);
}

#[test]
fn saved_v6_18_layout_equals_the_kernels_own_table() {
    let format = read_fixture("gfp/mm_page_alloc.v6.18-host.format");
    let d = saved_v6_18(NameTable::Enumerated);
    assert_eq!(d.table, kernel_table(&format));
    assert_eq!(d.table[0], (0x1c24ca, "GFP_TRANSHUGE".to_string()));
}

#[test]
fn saved_v6_18_layout_decodes_real_oom_reports() {
    let d = saved_v6_18(NameTable::Enumerated);
    let mut seen = Vec::new();
    for rel in [
        "gfp/oom-invoked-v6.18-host.kmsg",
        "kmsg/oom-memcg-v6.18-host-sd-pam.kmsg",
        "kmsg/oom-memcg-v6.18-host-tail.kmsg",
        "kmsg/oom-memcg-v6.18-host-web-content.kmsg",
        "kmsg/oom-memcg-v6.18-owtest.kmsg",
    ] {
        for (mask, text) in invoked(&read_fixture(rel)) {
            assert_eq!(
                d.decode(mask),
                names_from_log(&text),
                "{rel}: {mask:#x}({text})"
            );
            seen.push(mask);
        }
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0xcc0, 0x100cca, 0x440dc0, 0x500cc2]);
    // The kernel printed __GFP_ZERO before __GFP_COMP: bit order, the 6.15+ table.
    let listed = saved_v6_18(NameTable::Listed);
    check(
        &listed,
        0x440dc0,
        &["GFP_KERNEL_ACCOUNT", "__GFP_COMP", "__GFP_ZERO"],
    );
}

#[test]
fn hand_built_layouts() {
    // This host's config: no KASAN_HW_TAGS, no LOCKDEP, SLAB_OBJ_EXT.
    let host = layout(&enum_layout(&["NO_OBJ_EXT"]), NameTable::Enumerated).unwrap();
    check(&host, 0x140cca, &["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"]);
    check(&host, 0x1c24ca, &["GFP_TRANSHUGE"]);
    check(&host, 0x1d20ca, &["GFP_TRANSHUGE_LIGHT", "__GFP_NORETRY"]);
    assert_eq!(
        host.decode(0xc00),
        strings(&["GFP_NOIO"]),
        "GFP_NOIO precedes __GFP_RECLAIM"
    );
    check(&host, 0x1000000, &["__GFP_NO_OBJ_EXT"]);
    check(&host, 0x6000220, &["__GFP_HIGH", "0x6000200"]);
    assert_eq!(host.decode(0), Vec::<String>::new());
    // 6.10-6.14 named neither NO_OBJ_EXT nor NOLOCKDEP, and listed flags in another order.
    let old = layout(
        &enum_layout(&["NOLOCKDEP", "NO_OBJ_EXT"]),
        NameTable::Listed,
    )
    .unwrap();
    check(&old, 0x1002000, &["__GFP_NOWARN", "0x1000000"]);
    check(&old, 0x2000800, &["__GFP_KSWAPD_RECLAIM", "0x2000000"]);
    // KASAN_HW_TAGS + LOCKDEP: GFP_HIGHUSER_MOVABLE includes __GFP_SKIP_KASAN (bit 25).
    let all = ["SKIP_ZERO", "SKIP_KASAN", "NOLOCKDEP", "NO_OBJ_EXT"];
    let kasan = layout(&enum_layout(&all), NameTable::Enumerated).unwrap();
    check(&kasan, 0x2100cca, &["GFP_HIGHUSER_MOVABLE"]);
    check(&kasan, 0x100cca, &["GFP_HIGHUSER", "__GFP_MOVABLE"]);
    check(&kasan, 0xc000000, &["__GFP_NOLOCKDEP", "__GFP_NO_OBJ_EXT"]);
    // Layouts this module does not understand.
    let no_io: Vec<_> = enum_layout(&[])
        .into_iter()
        .filter(|p| p.0 != "IO")
        .collect();
    assert!(
        layout(&no_io, NameTable::Enumerated).is_none(),
        "a required flag is missing"
    );
    let mut dup = enum_layout(&[]);
    dup[1].1 = 0;
    assert!(
        layout(&dup, NameTable::Enumerated).is_none(),
        "two flags on one bit"
    );
    let mut wide = enum_layout(&[]);
    wide.last_mut().unwrap().1 = 40;
    assert!(
        layout(&wide, NameTable::Enumerated).is_none(),
        "bits beyond a u32"
    );
}

/// The running kernel's decoder, or None (with the reason printed) when it cannot be built.
fn host_decoder() -> Option<GfpDecoder> {
    if !Path::new(VMLINUX).exists() {
        skip(format!("no kernel BTF at {VMLINUX}"));
        return None;
    }
    let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
    let started = std::time::Instant::now();
    let decoder = GfpDecoder::from_btf(&btf);
    eprintln!("GfpDecoder::from_btf took {:?}", started.elapsed());
    if btf.enum_value(None, "___GFP_LAST_BIT").is_err() {
        assert!(decoder.is_none());
        oomwatch_testkit::skip::not_applicable(
            "this kernel (before 6.10) has no ___GFP_*_BIT enumerators in BTF",
        );
        return None;
    }
    Some(decoder.expect("BTF has ___GFP_*_BIT enumerators but no decoder was built"))
}

#[test]
fn host_btf_decodes_gfp_kernel_and_this_hosts_reports() {
    let Some(d) = host_decoder() else { return };
    check(&d, 0xcc0, &["GFP_KERNEL"]);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !release.starts_with("6.18.") {
        return oomwatch_testkit::skip::not_applicable(format!(
            "the 6.18 fixtures do not apply to kernel {}",
            release.trim()
        ));
    }
    assert_eq!(d.table, saved_v6_18(NameTable::Enumerated).table);
    let text = read_fixture("gfp/oom-invoked-v6.18-host.kmsg");
    for (mask, names) in invoked(&text) {
        assert_eq!(d.decode(mask), names_from_log(&names), "{mask:#x}({names})");
    }
}

#[test]
fn host_btf_equals_the_running_kernels_table() {
    let Some(d) = host_decoder() else { return };
    let format = crate::source::tracefs::ensure_mounted()
        .map_err(|e| e.to_string())
        .and_then(|(tracefs, _)| {
            let path = tracefs.join("events/kmem/mm_page_alloc/format");
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
        });
    let Some(format) = oomwatch_testkit::host_or_skip("tracefs", format) else {
        return;
    };
    if format.contains("___GFP_") {
        // 6.10-6.12 before commit 60295b944ff6 left the enum names unresolved.
        return oomwatch_testkit::skip::not_applicable(
            "this kernel's tracefs format shows unresolved ___GFP_ enums",
        );
    }
    assert_eq!(d.table, kernel_table(&format));
}

/// Everything `/dev/kmsg` holds now, or why it cannot be read.
fn kernel_log() -> Result<String, String> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("/dev/kmsg: {e}"))?;
    let (mut buf, mut log) = (vec![0u8; 16 * 1024], String::new());
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => log.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    Ok(log)
}

/// Every OOM report of the live kernel log decodes as the kernel printed it. When the log holds
/// none, one is made: a `tail /dev/zero` OOM-killed in a memory cgroup of this test's own.
#[test]
fn host_btf_decodes_the_live_kernel_log() {
    let Some(d) = host_decoder() else { return };
    let Some(mut log) = oomwatch_testkit::host_or_skip("cannot read the kernel log", kernel_log())
    else {
        return;
    };
    // The report header is rate limited (10 per 5 s, shared with every OOM on the host).
    for _ in 0..4 {
        if !invoked(&log).is_empty() {
            break;
        }
        if !oomwatch_testkit::root_or_skip("to OOM-kill a task in a memory cgroup of its own") {
            return;
        }
        oomwatch_testkit::TestCgroup::new(32 << 20).oom_kill(0);
        log = kernel_log().unwrap();
        if invoked(&log).is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5500));
        }
    }
    let reports = invoked(&log);
    let lines = log.matches(" invoked oom-killer: gfp_mask=0x").count();
    assert!(!reports.is_empty(), "no OOM report in the kernel log");
    assert_eq!(reports.len(), lines, "every report's gfp_mask line parses");
    for (mask, names) in &reports {
        assert_eq!(
            &d.decode(*mask),
            &names_from_log(names),
            "{mask:#x}({names})"
        );
    }
    eprintln!(
        "checked {} OOM report(s) in the live kernel log",
        reports.len()
    );
}
