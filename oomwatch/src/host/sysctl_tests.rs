use super::*;

#[test]
fn parse_int_trims_and_rejects_garbage() {
    assert_eq!(parse_int::<i64>("2\n"), Some(2));
    assert_eq!(parse_int::<i64>("  -1 "), Some(-1));
    assert_eq!(parse_int::<u64>("-1"), None);
    assert_eq!(parse_int::<i64>(""), None);
    assert_eq!(parse_int::<i64>("1 2"), None);
    assert_eq!(parse_int::<i64>("99999999999999999999"), None);
}

#[test]
fn bracketed_selection() {
    assert_eq!(parse_bracketed("always [madvise] never\n"), Some("madvise"));
    assert_eq!(
        parse_bracketed("[always] inherit madvise never"),
        Some("always")
    );
    assert_eq!(parse_bracketed("always madvise never"), None);
    assert_eq!(parse_bracketed("[]"), None);
    assert_eq!(parse_bracketed("]["), None);
}

#[test]
fn int_sqrt_is_exact_floor() {
    for x in [
        0u64,
        1,
        2,
        3,
        4,
        15,
        16,
        17,
        99,
        100,
        1 << 52,
        (1 << 53) + 1,
    ] {
        let r = int_sqrt(x);
        assert!(r * r <= x && (r + 1) * (r + 1) > x, "{x} -> {r}");
    }
    assert_eq!(int_sqrt(u64::MAX), 4_294_967_295);
    assert_eq!(int_sqrt(u64::MAX - 1), 4_294_967_295);
}

#[test]
fn kernel_default_matches_the_kernel_comment_table() {
    // mm/page_alloc.c: "16MB: 512k ... 1024MB: 4096k ... 16384MB: 16384k".
    assert_eq!(kernel_min_free_kbytes(16 * 1024), 512);
    assert_eq!(kernel_min_free_kbytes(1024 * 1024), 4096);
    assert_eq!(kernel_min_free_kbytes(8192 * 1024), 11585);
    assert_eq!(kernel_min_free_kbytes(16384 * 1024), 16384);
    // Clamped at both ends.
    assert_eq!(kernel_min_free_kbytes(0), 128);
    assert_eq!(kernel_min_free_kbytes(512), 128);
    assert_eq!(kernel_min_free_kbytes(4 << 30), 262_144);
    assert_eq!(kernel_min_free_kbytes(u64::MAX), 262_144);
}

#[test]
fn thp_recommendation_matches_a_real_x86_64_machine() {
    // 3 populated lowmem zones (DMA, DMA32, Normal), 2 MiB pageblocks of 4 KiB pages: the
    // kernel set min_free_kbytes to 67584 on the machine this was recorded on.
    assert_eq!(
        thp_recommended_min_free_kbytes(512, 3, 2_389_817, 4096),
        67_584
    );
    // Capped at 5% of lowmem.
    assert_eq!(thp_recommended_min_free_kbytes(512, 3, 20_000, 4096), 4000);
    assert_eq!(
        thp_recommended_min_free_kbytes(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
        u64::MAX / 1024
    );
}

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

const ZONEINFO: &str = "Node 0, zone DMA\n high 38\n present 3998\n managed 3840\n\
Node 0, zone DMA32\n high 8109\n present 782336\n managed 772915\n\
Node 0, zone Normal\n high 17191\n present 5505024\n managed 1638400\n\
Node 0, zone Movable\n high 32\n present 0\n managed 0\n";

#[test]
fn read_computes_default_and_thp_recommendation() {
    let t = tree(&[
        ("proc/sys/vm/min_free_kbytes", "67584\n"),
        ("proc/sys/vm/panic_on_oom", "0\n"),
        ("proc/zoneinfo", ZONEINFO),
        (
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        ),
        (
            "sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
            "2097152\n",
        ),
        (
            "sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
            "always [inherit] madvise never\n",
        ),
    ]);
    let d = read(t.path(), 4096).unwrap();
    assert_eq!(d.vm.min_free_kbytes, Some(67584));
    assert_eq!(d.vm.panic_on_oom, Some(0));
    assert_eq!(d.vm.watermark_scale_factor, None);
    assert_eq!(d.lowmem_kbytes, Some(2_389_817 * 4));
    assert_eq!(d.min_free_default_kbytes, Some(12_367));
    assert_eq!(d.thp_enabled, Some(true));
    assert_eq!(d.thp_recommended_kbytes, Some(67_584));
}

#[test]
fn per_size_thp_setting_overrides_global() {
    let t = tree(&[
        ("proc/sys/vm/min_free_kbytes", "1024"),
        ("proc/zoneinfo", ZONEINFO),
        (
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always madvise [never]\n",
        ),
        (
            "sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
            "2097152\n",
        ),
        (
            "sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
            "[always] inherit madvise never\n",
        ),
    ]);
    assert_eq!(read(t.path(), 4096).unwrap().thp_enabled, Some(true));
    let t = tree(&[
        ("proc/sys/vm/min_free_kbytes", "1024"),
        (
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always madvise [never]\n",
        ),
    ]);
    let d = read(t.path(), 4096).unwrap();
    assert_eq!(d.thp_enabled, Some(false));
    assert_eq!(d.thp_recommended_kbytes, None);
    assert_eq!(d.min_free_default_kbytes, None, "no zoneinfo");
}

#[test]
fn read_fails_on_garbage_or_missing_dir() {
    let t = tree(&[("proc/sys/vm/panic_on_oom", "yes\n")]);
    let e = read(t.path(), 4096).unwrap_err();
    assert!(e.to_string().contains("panic_on_oom"), "{e}");
    let t = tree(&[("proc/meminfo", "")]);
    assert!(read(t.path(), 4096).is_err());
}
