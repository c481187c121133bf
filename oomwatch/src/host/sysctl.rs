//! The `vm.*` sysctls that decide what an OOM does, and the kernel's own default for
//! `vm.min_free_kbytes` on this machine.
//!
//! # The `min_free_kbytes` default
//!
//! At boot (`init_per_zone_wmark_min()`, and again on memory hotplug) the kernel runs
//! `calculate_min_free_kbytes()` in `mm/page_alloc.c`:
//!
//! ```text
//! lowmem_kbytes = nr_free_buffer_pages() * (PAGE_SIZE >> 10);
//! new_min_free_kbytes = int_sqrt(lowmem_kbytes * 16);
//! if (new_min_free_kbytes > user_min_free_kbytes)
//!         min_free_kbytes = clamp(new_min_free_kbytes, 128, 262144);
//! ```
//!
//! The upper clamp was 65536 before Linux 5.7 ("mm/page_alloc.c: increase default
//! min_free_kbytes bound"); this module uses the current 262144.
//!
//! `nr_free_buffer_pages()` is not exported to user space. It sums, over the ZONE_DMA,
//! ZONE_DMA32 and ZONE_NORMAL zones of every node (the GFP_USER zonelist), `managed - high`
//! pages. This module approximates it from `/proc/zoneinfo`'s `managed` and `high` lines of
//! those zones ([`zoneinfo::lowmem_pages`]). That is what the kernel would compute if it
//! recalculated now (hotplug, THP switched off). At boot the watermarks were still zero, so the
//! boot-time value used `managed` alone: about 0.2-0.5% more lowmem, hence a default about
//! 0.1-0.25% higher (the square root halves the relative error). Pages freed late in boot
//! (init memory) and memory hot-added since make `managed` differ slightly from what boot saw.
//!
//! Two things make the running value legitimately differ from that default:
//!
//! * a value written by an administrator (`user_min_free_kbytes`) is kept: later
//!   recalculations only replace it when they compute a larger one;
//! * when transparent huge pages are enabled, khugepaged's `set_recommended_min_free_kbytes()`
//!   raises it (never lowers it) to `pageblock_nr_pages * nr_zones * (2 + 3 * 3)` pages, capped
//!   at 5% of lowmem, where `nr_zones` counts the populated zones at or below ZONE_NORMAL, so
//!   that two pageblocks per zone stay free plus one fallback per migratetype pair. This module
//!   computes that too ([`thp_recommended_min_free_kbytes`]) and the risk rule compares
//!   `min_free_kbytes` with the larger of the two. The pageblock is taken as the PMD huge
//!   page size (`hpage_pmd_size`), true on x86-64 and 4K-page arm64; THP counts as enabled
//!   when the PMD-size anonymous setting (`hugepages-<size>kB/enabled`, or the global
//!   `enabled` when that says `inherit` or does not exist) is `always` or `madvise`; the shmem
//!   and read-only-file THP settings, which the kernel also considers, are ignored.
use std::path::Path;
use std::str::FromStr;

use prometheus::proto::MetricFamily;

use super::read::{read_optional, HostError};
use super::snapshot::HostSnapshot;
use super::zoneinfo;
use crate::sink::metrics::prom::{f, single_gauge};

/// Lower clamp of the kernel's `min_free_kbytes` default.
pub const MIN_FREE_KBYTES_FLOOR: u64 = 128;
/// Upper clamp of the kernel's `min_free_kbytes` default (65536 before Linux 5.7).
pub const MIN_FREE_KBYTES_CEILING: u64 = 262_144;

/// The sysctls read, by file name under `proc/sys/vm`.
pub const SYSCTLS: [&str; 8] = [
    "panic_on_oom",
    "oom_kill_allocating_task",
    "oom_dump_tasks",
    "overcommit_memory",
    "overcommit_ratio",
    "overcommit_kbytes",
    "min_free_kbytes",
    "watermark_scale_factor",
];

/// The values of the `vm.*` sysctls, in the kernel's units; `None` when the file is absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmSysctls {
    pub panic_on_oom: Option<i64>,
    pub oom_kill_allocating_task: Option<i64>,
    pub oom_dump_tasks: Option<i64>,
    pub overcommit_memory: Option<i64>,
    /// Percent.
    pub overcommit_ratio: Option<i64>,
    pub overcommit_kbytes: Option<u64>,
    pub min_free_kbytes: Option<u64>,
    /// In units of 1/10000 of memory.
    pub watermark_scale_factor: Option<i64>,
}

/// A sysctl file's value: one integer, surrounded by whitespace.
pub fn parse_int<T: FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

/// The selected word of a `sys/kernel/mm/transparent_hugepage` setting such as
/// `always [madvise] never`.
pub fn parse_bracketed(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once('[')?;
    let (word, _) = rest.split_once(']')?;
    let word = word.trim();
    (!word.is_empty()).then_some(word)
}

/// Floor of the square root, as the kernel's `int_sqrt()`.
pub fn int_sqrt(x: u64) -> u64 {
    // The float estimate is within one of the answer for every u64; fix it up exactly.
    let mut r = (x as f64).sqrt() as u64;
    while r.checked_mul(r).is_none_or(|sq| sq > x) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|sq| sq <= x) {
        r += 1;
    }
    r
}

/// `calculate_min_free_kbytes()` for `lowmem_kbytes` of lowmem.
pub fn kernel_min_free_kbytes(lowmem_kbytes: u64) -> u64 {
    int_sqrt(lowmem_kbytes.saturating_mul(16)).clamp(MIN_FREE_KBYTES_FLOOR, MIN_FREE_KBYTES_CEILING)
}

/// khugepaged's `set_recommended_min_free_kbytes()` target, in kB: two free pageblocks per
/// zone plus `MIGRATE_PCPTYPES²` (3 × 3) for fallbacks, capped at 5% of lowmem.
pub fn thp_recommended_min_free_kbytes(
    pageblock_pages: u64,
    nr_zones: u64,
    lowmem_pages: u64,
    page_size: u64,
) -> u64 {
    let pages = pageblock_pages
        .saturating_mul(nr_zones)
        .saturating_mul(2 + 3 * 3)
        .min(lowmem_pages / 20);
    pages.saturating_mul(page_size) / 1024
}

/// What the `sysctl` collector read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysctlData {
    pub vm: VmSysctls,
    /// Approximate `nr_free_buffer_pages()` in kB (`None` without `/proc/zoneinfo`).
    pub lowmem_kbytes: Option<u64>,
    /// [`kernel_min_free_kbytes`] of `lowmem_kbytes`.
    pub min_free_default_kbytes: Option<u64>,
    /// Whether PMD-size THP is enabled (`None` when the kernel has no THP sysfs).
    pub thp_enabled: Option<bool>,
    /// khugepaged's target; `Some` only when THP is enabled (the only case the kernel uses it).
    pub thp_recommended_kbytes: Option<u64>,
    /// The console log level: first field of `kernel.printk` (`None` without the file, or
    /// when it does not start with an integer).
    pub console_loglevel: Option<i64>,
    /// The consoles the kernel prints on, from `/proc/consoles`.
    pub consoles: Vec<String>,
}

/// Consoles named at most; longer names are cut to [`CONSOLE_NAME_MAX`] characters.
pub const CONSOLES_MAX: usize = 8;
/// Longest console name kept.
pub const CONSOLE_NAME_MAX: usize = 32;

/// The enabled consoles of `/proc/consoles` (`ttyS0  -W- (EC p a)  4:64`: `E` among the
/// flags in parentheses; a line without them is kept): the first word of each line, printable
/// ASCII only, at most [`CONSOLES_MAX`] of them.
pub fn parse_consoles(text: &str) -> Vec<String> {
    let enabled = |l: &&str| {
        l.split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .is_none_or(|(flags, _)| flags.contains('E'))
    };
    text.lines()
        .filter(enabled)
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(CONSOLE_NAME_MAX)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .take(CONSOLES_MAX)
        .collect()
}

/// `kernel.printk` and `/proc/consoles` under `root`; unreadable or garbled files leave the
/// values out (they only feed a warning).
fn read_console(root: &Path, d: &mut SysctlData) {
    let printk = read_optional(&root.join("proc/sys/kernel/printk"))
        .ok()
        .flatten();
    d.console_loglevel = printk
        .as_deref()
        .and_then(|t| t.split_whitespace().next())
        .and_then(parse_int);
    let consoles = read_optional(&root.join("proc/consoles")).ok().flatten();
    d.consoles = consoles.as_deref().map(parse_consoles).unwrap_or_default();
}

/// Reads the sysctls, `/proc/zoneinfo` and the THP settings under `root`. Fails if
/// `proc/sys/vm` has none of the sysctls, or a file exists but cannot be read or parsed;
/// an absent sysctl (older kernel) or an absent zoneinfo/THP file only leaves values out.
pub fn read(root: &Path, page_size: u64) -> Result<SysctlData, HostError> {
    let dir = root.join("proc/sys/vm");
    let mut d = SysctlData::default();
    let mut found = 0;
    for name in SYSCTLS {
        let path = dir.join(name);
        let Some(text) = read_optional(&path)? else {
            continue;
        };
        found += 1;
        let bad = || HostError::parse(&path, format!("not an integer: {:?}", text.trim()));
        let v = &mut d.vm;
        match name {
            "overcommit_kbytes" => v.overcommit_kbytes = Some(parse_int(&text).ok_or_else(bad)?),
            "min_free_kbytes" => v.min_free_kbytes = Some(parse_int(&text).ok_or_else(bad)?),
            _ => {
                let n = Some(parse_int::<i64>(&text).ok_or_else(bad)?);
                match name {
                    "panic_on_oom" => v.panic_on_oom = n,
                    "oom_kill_allocating_task" => v.oom_kill_allocating_task = n,
                    "oom_dump_tasks" => v.oom_dump_tasks = n,
                    "overcommit_memory" => v.overcommit_memory = n,
                    "overcommit_ratio" => v.overcommit_ratio = n,
                    _ => v.watermark_scale_factor = n,
                }
            }
        }
    }
    if found == 0 {
        return Err(HostError::parse(&dir, "none of the vm sysctls exists"));
    }
    read_console(root, &mut d);

    let zones = match read_optional(&root.join("proc/zoneinfo"))? {
        Some(text) => zoneinfo::parse(&text),
        None => Vec::new(),
    };
    let lowmem_pages = zoneinfo::lowmem_pages(&zones);
    d.lowmem_kbytes = lowmem_pages.map(|p| p.saturating_mul(page_size) / 1024);
    d.min_free_default_kbytes = d.lowmem_kbytes.map(kernel_min_free_kbytes);

    let thp = root.join("sys/kernel/mm/transparent_hugepage");
    let pmd_size = match read_optional(&thp.join("hpage_pmd_size"))? {
        Some(text) => Some(
            parse_int::<u64>(&text)
                .ok_or_else(|| HostError::parse(&thp.join("hpage_pmd_size"), "not an integer"))?,
        ),
        None => None,
    };
    let global = read_optional(&thp.join("enabled"))?;
    let global = global.as_deref().and_then(parse_bracketed);
    let per_size = match pmd_size {
        Some(bytes) => read_optional(&thp.join(format!("hugepages-{}kB/enabled", bytes / 1024)))?,
        None => None,
    };
    let mode = match per_size.as_deref().and_then(parse_bracketed) {
        Some("inherit") | None => global,
        Some(own) => Some(own),
    };
    d.thp_enabled = mode.map(|m| matches!(m, "always" | "madvise"));
    if d.thp_enabled == Some(true) {
        if let (Some(pmd), Some(lowmem)) = (pmd_size, lowmem_pages) {
            let pageblock = pmd / page_size.max(1);
            if pageblock > 0 {
                d.thp_recommended_kbytes = Some(thp_recommended_min_free_kbytes(
                    pageblock,
                    zoneinfo::populated_lowmem_zones(&zones),
                    lowmem,
                    page_size,
                ));
            }
        }
    }
    Ok(d)
}

impl SysctlData {
    pub(super) fn fill(&self, s: &mut HostSnapshot) {
        let v = &self.vm;
        s.panic_on_oom = v.panic_on_oom;
        s.oom_kill_allocating_task = v.oom_kill_allocating_task;
        s.oom_dump_tasks = v.oom_dump_tasks;
        s.overcommit_memory = v.overcommit_memory;
        s.overcommit_ratio = v.overcommit_ratio;
        s.overcommit_kbytes = v.overcommit_kbytes;
        s.min_free_kbytes = v.min_free_kbytes;
        s.watermark_scale_factor = v.watermark_scale_factor;
        s.min_free_default_kbytes = self.min_free_default_kbytes;
        s.min_free_thp_recommended_kbytes = self.thp_recommended_kbytes;
        s.thp_enabled = self.thp_enabled;
        s.console_loglevel = self.console_loglevel;
        s.consoles = self.consoles.clone();
    }

    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let v = &self.vm;
        let i = |x: Option<i64>| x.map(|n| n as f64);
        let kb = |x: Option<u64>| x.map(|n| f(n.saturating_mul(1024)));
        [
            single_gauge(
                "oomwatch_vm_panic_on_oom",
                "vm.panic_on_oom: 0 kill a task, 1 panic on a system-wide OOM, 2 panic on every \
                 OOM including memory cgroup ones.",
                i(v.panic_on_oom),
            ),
            single_gauge(
                "oomwatch_vm_oom_kill_allocating_task",
                "vm.oom_kill_allocating_task: 1 kills the task that triggered the OOM instead \
                 of the one with the highest badness.",
                i(v.oom_kill_allocating_task),
            ),
            single_gauge(
                "oomwatch_vm_oom_dump_tasks",
                "vm.oom_dump_tasks: 1 prints the task list at each OOM kill in the kernel log.",
                i(v.oom_dump_tasks),
            ),
            single_gauge(
                "oomwatch_vm_overcommit_memory",
                "vm.overcommit_memory: 0 heuristic, 1 always overcommit, 2 strict accounting \
                 against CommitLimit.",
                i(v.overcommit_memory),
            ),
            single_gauge(
                "oomwatch_vm_overcommit_ratio",
                "vm.overcommit_ratio / 100: share of RAM counted in CommitLimit under \
                 overcommit_memory=2 (unused when overcommit_kbytes is set).",
                v.overcommit_ratio.map(|n| n as f64 / 100.0),
            ),
            single_gauge(
                "oomwatch_vm_overcommit_bytes",
                "vm.overcommit_kbytes in bytes: RAM counted in CommitLimit under \
                 overcommit_memory=2 when non-zero.",
                kb(v.overcommit_kbytes),
            ),
            single_gauge(
                "oomwatch_vm_min_free_bytes",
                "vm.min_free_kbytes in bytes: memory the kernel keeps free for atomic \
                 allocations (the sum of the zones' min watermarks).",
                kb(v.min_free_kbytes),
            ),
            single_gauge(
                "oomwatch_vm_min_free_default_bytes",
                "The kernel's own min_free_kbytes for this machine in bytes, \
                 clamp(sqrt(16 * lowmem kB), 128, 262144) kB, with lowmem estimated from \
                 /proc/zoneinfo.",
                kb(self.min_free_default_kbytes),
            ),
            single_gauge(
                "oomwatch_vm_min_free_thp_recommended_bytes",
                "The min_free_kbytes khugepaged raises the value to while transparent huge \
                 pages are enabled, in bytes (absent when THP is disabled).",
                kb(self.thp_recommended_kbytes),
            ),
            single_gauge(
                "oomwatch_vm_transparent_hugepage_enabled",
                "Whether PMD-size transparent huge pages are enabled (always or madvise).",
                self.thp_enabled.map(|b| if b { 1.0 } else { 0.0 }),
            ),
            single_gauge(
                "oomwatch_vm_watermark_scale_factor",
                "vm.watermark_scale_factor, in units of 1/10000 of memory: the distance \
                 between the min, low and high watermarks.",
                i(v.watermark_scale_factor),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
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
    fn consoles_and_the_console_log_level_are_read_bounded() {
        let hostile = format!(
            "ttyS1 -W- (C p a) 4:65\nttyS0                -W- (EC p a)    4:64\n\u{1b}[31mred\u{7}  \
             -W-\n\n{}\n{}",
            "x".repeat(100),
            "c\n".repeat(20)
        );
        let t = tree(&[
            ("proc/sys/vm/panic_on_oom", "0\n"),
            ("proc/sys/kernel/printk", "4\t4\t1\t7\n"),
            ("proc/consoles", &hostile),
        ]);
        let d = read(t.path(), 4096).unwrap();
        assert_eq!(d.console_loglevel, Some(4));
        assert_eq!(d.consoles.len(), CONSOLES_MAX);
        assert_eq!(d.consoles[0], "ttyS0");
        assert_eq!(d.consoles[1], "[31mred");
        assert_eq!(d.consoles[2].len(), CONSOLE_NAME_MAX);
        let t = tree(&[
            ("proc/sys/vm/panic_on_oom", "0\n"),
            ("proc/sys/kernel/printk", "loud\n"),
        ]);
        let d = read(t.path(), 4096).unwrap();
        assert_eq!((d.console_loglevel, d.consoles.len()), (None, 0));
    }

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
}
