//! Parsers of text handed to them whole: tracefs format files, the GFP flag table, cgroup
//! paths, `/proc/<pid>/{status,cgroup,stat}`, mountinfo, and the host collectors' files.
use oomwatch::enrich::{domain, identity};
use oomwatch::explain::{domain as top_domain, rank};
use oomwatch::host::{memcg_events, meminfo, psi, sysctl, vmstat, zoneinfo};
use oomwatch::record::OomDomain;
use oomwatch::source::gfp::table::kernel_table;
use oomwatch::source::gfp::{names_from_log, GfpDecoder, NameTable};
use oomwatch::source::tracefs::{mark_victim_offsets, Format, MarkVictimLayout};
use oomwatch::sys::cgroup::MemoryHierarchy;
use oomwatch::sys::{caps, procfs};
use oomwatch_common::OFFSET_ABSENT;
use proptest::prelude::*;

use crate::harness::{self, bounded, check, Bytes};

const FORMAT_TOKENS: &[&str] = &[
    "name: mark_victim\n",
    "ID: ",
    "format:\n",
    "\tfield:",
    "field:",
    "int pid;",
    "__data_loc char[] comm;",
    "unsigned long total_vm;",
    "char comm[16];",
    "\toffset:",
    "\tsize:",
    "\tsigned:",
    ";",
    "[",
    "]",
    "\n",
    "\t",
    " ",
    "print fmt: \"pid=%d\", REC->pid\n",
];

const GFP_TOKENS: &[&str] = &[
    "__print_flags(REC->gfp_flags, \"|\",",
    "{",
    "}",
    "(",
    ")",
    " << ",
    "|",
    "&",
    "~",
    "1UL",
    "0x",
    "ff",
    "10",
    ", \"GFP_KERNEL\"",
    ", \"__GFP_",
    "\"",
    "( unsigned long)",
    "(( gfp_t)",
    "{ 0, NULL }",
    " ",
];

const CGROUP_TOKENS: &[&str] = &[
    "/",
    "kubepods",
    ".slice",
    ".scope",
    ".service",
    "kubepods-",
    "burstable",
    "besteffort",
    "guaranteed",
    "-pod",
    "pod",
    "6f1c2a8e_3b4d_4e5f_9a0b_1c2d3e4f5a6b",
    "6f1c2a8e-3b4d-4e5f-9a0b-1c2d3e4f5a6b",
    "0123456789abcdef0123456789abcdef",
    "8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f",
    "cri-containerd-",
    "crio-",
    "conmon-",
    "docker-",
    "docker",
    "kubelet",
    "container",
    "system.slice",
    "user-1000.slice",
    "session-3.scope",
    "..",
    ".",
    "-",
    "_",
];

const STATUS_TOKENS: &[&str] = &[
    "Name:\t",
    "Tgid:\t",
    "Uid:\t",
    "VmSize:\t",
    "RssAnon:\t",
    "RssFile:\t",
    "RssShmem:\t",
    "VmPTE:\t",
    "VmSwap:\t",
    "Kthread:\t",
    "CapEff:\t",
    "000001ffffffffff",
    " kB",
    "kB",
    "\n",
    "0::",
    "4:memory:",
    "3:cpu,memory:",
    ":",
    "/kubepods/a",
    "/../..",
    "1",
    " ",
    "tail",
    "(a) b)",
    " S 1 2 3 4 5 ",
    "4194560",
];

const MOUNTINFO_TOKENS: &[&str] = &[
    "36 35 98:0 / /sys/fs/cgroup/memory rw,nosuid",
    "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4",
    " - ",
    "cgroup2 cgroup2 rw,nsdelegate",
    "cgroup cgroup rw,memory",
    "tmpfs tmpfs rw",
    "\\040",
    "\\134",
    "\\999",
    "\\",
    " ",
    "\n",
    "/a b",
];

const HOST_ALPHABET: &[u8] = b" \t\n:,=[]-+.0123456789kBNodezonesomefullavgtotal";

#[test]
fn tracefs_format_files() {
    let mut corpus = harness::fixture_texts("tracefs", ".format");
    corpus.extend(harness::fixture_texts("gfp", ".format"));
    let strategy = prop_oneof![
        harness::mutated(corpus, b"field:offset;size signed:0123456789\t\n[]_", 8),
        harness::soup(FORMAT_TOKENS, 40),
    ];
    check("tracefs_format", 1, strategy, |text: Bytes| {
        let text = text.text();
        let parsed = bounded("Format::parse", text.len(), 8, || Format::parse(&text));
        let Ok(format) = parsed else { return };
        for f in &format.fields {
            assert!(!f.name.is_empty() && f.name.len() <= text.len());
            assert!(f.c_type.len() <= text.len());
        }
        if let Ok((off, layout)) = mark_victim_offsets(&format) {
            let extended = [off.total_vm, off.anon_rss, off.uid, off.oom_score_adj];
            if layout == MarkVictimLayout::Extended {
                assert!(extended.iter().all(|&o| o != OFFSET_ABSENT), "{off:?}");
            }
        }
    });
}

#[test]
fn gfp_tracefs_table() {
    let corpus = harness::fixture_texts("gfp", ".format");
    let strategy = (
        prop_oneof![
            harness::mutated(corpus, b"(){}|&~<< 0x1fUL\",", 8),
            harness::soup(GFP_TOKENS, 80),
        ],
        any::<u32>(),
    );
    check("gfp_tracefs_table", 1, strategy, |(text, mask)| {
        let text = text.text();
        let table = bounded("kernel_table", text.len(), 8, || kernel_table(&text));
        if let Some(t) = &table {
            assert!(!t.is_empty() && t.len() <= 256, "{} entries", t.len());
        }
        if let Some(d) = GfpDecoder::from_tracefs_format(&text) {
            for name in d.decode(mask) {
                assert!(!name.is_empty());
            }
        }
    });
}

/// Expressions nested as deep as the length cap allows are refused, not recursed into.
#[test]
fn gfp_deeply_nested_expressions() {
    // The longest expression accepted is 8192 bytes.
    for (open, close) in [("~", ""), ("(", ")"), ("~(", ")"), ("( gfp_t)", "")] {
        let n = 8191 / (open.len() + close.len());
        for depth in [n, n / 2, 64, 65] {
            let expr = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let text =
                format!("__print_flags(REC->gfp_flags, \"|\", {{{expr}, \"X\"}}, {{ 0, NULL }})");
            let _ = kernel_table(&text);
        }
    }
}

#[test]
fn gfp_log_names_and_releases() {
    let masks = proptest::collection::vec((any::<u32>(), harness::bytes(b"|() GFP_x", 60)), 0..64);
    check(
        "gfp_log_names",
        1,
        (masks, harness::bytes(b"0123456789.-rc", 24)),
        |(learn, rel)| {
            let _ = NameTable::for_release(&rel.text());
            let mut d = GfpDecoder::from_log_only();
            for (mask, text) in &learn {
                let text = text.text();
                let names = names_from_log(&text);
                assert!(names.iter().map(String::len).sum::<usize>() <= text.len());
                d.learn_from_log(*mask, &text);
                assert!(!d.decode(*mask).is_empty() || names.is_empty());
                let _ = d.lookup(mask.rotate_left(3));
            }
        },
    );
}

/// The parts of an identity are prefixes (cgroups) or pieces (ids) of the path.
fn check_identity(path: &str) {
    let id = bounded("identity::parse", path.len(), 8, || identity::parse(path));
    let prefix = |p: &str| assert!(path.starts_with(p) || p == "/", "{p:?} of {path:?}");
    if let Some(pod) = &id.pod {
        prefix(&pod.kubepods_cgroup);
        prefix(&pod.pod_cgroup);
        pod.qos_cgroup.as_deref().map(prefix);
        assert!(pod.uid.len() <= path.len());
    }
    if let Some(c) = &id.container {
        prefix(&c.cgroup);
        assert!(path.contains(&c.id));
    }
    let level = identity::level(path);
    assert!(level.is_none() || path.starts_with('/'));
    let d = domain::classify(Some("CONSTRAINT_MEMCG"), Some(path), Some(path));
    let _ = domain::noisy_neighbour(d, Some(path), Some("/kubepods/burstable/pod1/abc"));
    let _ = domain::noisy_neighbour(Some(OomDomain::Global), Some(path), Some(path));
}

#[test]
fn cgroup_paths() {
    let uid = "6f1c2a8e-3b4d-4e5f-9a0b-1c2d3e4f5a6b";
    let cid = "8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f";
    let real: Vec<Vec<u8>> = [
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope", uid.replace('-', "_")),
        format!("/kubepods/besteffort/pod{uid}/{cid}"),
        format!("/kubepods.slice/kubepods-pod{}.slice/crio-{cid}.scope/container", uid.replace('-', "_")),
        format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{}.slice/crio-conmon-{cid}.scope", uid.replace('-', "_")),
        format!("/docker/{cid}/kubepods/burstable/pod{uid}/{cid}"),
        format!("/system.slice/docker-{cid}.scope"),
        "/user.slice/user-1000.slice/session-3.scope".to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    let strategy = prop_oneof![
        harness::mutated(real, b"/.-_podkubescri", 6),
        harness::soup(CGROUP_TOKENS, 30),
    ];
    check("cgroup_paths", 1, strategy, |p| check_identity(&p.text()));
}

fn self_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/self/{name}")).unwrap_or_default()
}

#[test]
fn proc_status_cgroup_stat() {
    let mut corpus = vec![
        b"Name:\tweb server\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nUid:\t1000\t1000\t1000\t1000\n\
          VmSize:\t  123456 kB\nVmPTE:\t     120 kB\nVmSwap:\t      8 kB\nRssAnon:\t  1024 kB\n\
          RssFile:\t  2048 kB\nRssShmem:\t 0 kB\nCapEff:\t000001ffffffffff\nKthread:\t0\n"
            .to_vec(),
        b"12:memory:/kubepods/burstable/pod1/abc\n11:cpu,cpuacct:/x\n0::/system.slice/a.service\n".to_vec(),
        b"42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5 1000 10\n".to_vec(),
    ];
    corpus.extend(["status", "cgroup", "stat"].map(self_file));
    corpus.retain(|c| !c.is_empty());
    let strategy = prop_oneof![
        harness::mutated(corpus, b":\t\n 0123456789kB()/", 8),
        harness::soup(STATUS_TOKENS, 40),
    ];
    check("proc_status_cgroup_stat", 1, strategy, |text| {
        let text = text.text();
        let mut info = procfs::ProcInfo::default();
        bounded("parse_status", text.len(), 8, || {
            procfs::parse_status(&text, &mut info)
        });
        assert!(info.comm.as_ref().is_none_or(|c| c.len() <= text.len()));
        if let Some(cg) = procfs::parse_cgroup(&text) {
            assert!(text.contains(&cg) && !cg.split('/').any(|c| c == ".."));
        }
        let _ = caps::effective_from_status(&text);
        let _ = rank::parse_stat_flags(&text);
        for page in [1, 4096, 65536, u64::MAX] {
            if let Some(m) = top_domain::parse_meminfo(&text, page) {
                assert!(m.total_pages() >= 1);
            }
        }
    });
}

#[test]
fn mountinfo() {
    let mut corpus = vec![MOUNTINFO_TOKENS[..2]
        .join(" - cgroup cgroup rw,memory\n")
        .into_bytes()];
    corpus.push(self_file("mountinfo"));
    corpus.retain(|c| !c.is_empty());
    let strategy = (
        prop_oneof![
            harness::mutated(corpus, b" -\\0123456789/\n", 8),
            harness::soup(MOUNTINFO_TOKENS, 30),
        ],
        any::<bool>(),
    );
    check("mountinfo", 1, strategy, |(text, v2)| {
        let text = text.text();
        let h = bounded("from_mountinfo", text.len(), 8, || {
            MemoryHierarchy::from_mountinfo(&text, |_| v2)
        });
        if let Some(h) = h {
            assert!(h.mount.as_os_str().len() <= text.len());
            let _ = h.dir(&text);
            let _ = top_domain::resolve(&h, &text);
        }
    });
}

fn run_host_parsers(text: &str) {
    let zones = zoneinfo::parse(text);
    assert!(zones.len() <= zoneinfo::MAX_ZONES);
    let _ = zoneinfo::lowmem_pages(&zones);
    let _ = zoneinfo::populated_lowmem_zones(&zones);
    let _ = sysctl::parse_int::<i64>(text);
    let _ = sysctl::parse_bracketed(text);
    let _ = meminfo::parse_meminfo(text);
    let _ = meminfo::parse_node_meminfo(text);
    let _ = meminfo::node_number(text);
    let _ = psi::parse(text);
    let _ = vmstat::parse_oom_kill(text);
    let _ = memcg_events::parse_memory_events(text);
    let _ = memcg_events::parse_oom_control(text);
}

#[test]
fn host_files() {
    let corpus: Vec<Vec<u8>> = harness::files_below(&harness::fixtures("host"))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let strategy = prop_oneof![
        3 => harness::mutated(corpus, HOST_ALPHABET, 10),
        1 => harness::bytes(HOST_ALPHABET, 400),
    ];
    check("host_files", 1, strategy, |text| {
        let text = text.text();
        bounded("host parsers", text.len(), 16, || run_host_parsers(&text));
    });
}

/// More zones than `MAX_ZONES` are not kept.
#[test]
fn endless_zoneinfo_stays_bounded() {
    let zone = "Node 0, zone   Normal\n  pages free 1\n        min 2\n        low 3\n        high 4\n        present 5\n        managed 6\n";
    let text = zone.repeat(zoneinfo::MAX_ZONES + 5000);
    let zones = bounded("zoneinfo", text.len(), 2, || zoneinfo::parse(&text));
    assert_eq!(zones.len(), zoneinfo::MAX_ZONES);
}

#[test]
fn oom_score_arithmetic() {
    let strategy = (any::<u64>(), any::<i16>(), any::<u64>(), any::<i64>());
    check(
        "oom_score_arithmetic",
        1,
        strategy,
        |(mem, adj, total, points)| {
            let b = oomwatch::explain::badness::badness(mem, adj, total);
            let _ = oomwatch::explain::badness::oom_score(b, total);
            let _ = oomwatch::explain::badness::oom_score(points, total);
            let _ = top_domain::page_counter_max(total);
            let _ = sysctl::kernel_min_free_kbytes(mem);
            let _ = sysctl::int_sqrt(mem);
        },
    );
}
