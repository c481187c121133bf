//! Real-kernel checks of `oomwatch::source::btf` against `/sys/kernel/btf/vmlinux`.
//!
//! Ground truth is computed independently from `bpftool btf dump file ... format raw`, parsed
//! here as text. Without the file or bpftool the tests skip with a message, unless
//! `OOMWATCH_REQUIRE_REAL_KERNEL=1`, in which case they fail.
mod common_btf;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use common_btf::{bpftool_dump, num, Dump};
use oomwatch::source::btf::Btf;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The parsed vmlinux BTF and bpftool's raw dump of it, or `None` (after printing why).
fn real() -> Option<&'static (Btf, Dump)> {
    static REAL: OnceLock<Result<(Btf, Dump), String>> = OnceLock::new();
    let got = REAL.get_or_init(|| {
        if !Path::new(VMLINUX).exists() {
            return Err(format!(
                "{VMLINUX} is missing (kernel without CONFIG_DEBUG_INFO_BTF)"
            ));
        }
        let dump = bpftool_dump(Path::new(VMLINUX))?;
        let btf = Btf::from_file(Path::new(VMLINUX)).expect("vmlinux BTF parses");
        Ok((btf, dump))
    });
    got.as_ref().map_err(oomwatch_testkit::skip).ok()
}

const PATHS: &[(&str, &str)] = &[
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "comm"),
    ("task_struct", "signal"),
    ("task_struct", "cgroups"),
    ("signal_struct", "oom_score_adj"),
    ("css_set", "subsys"),
    ("cgroup_subsys_state", "cgroup"),
    ("cgroup", "kn"),
    ("kernfs_node", "id"),
    ("oom_control", "memcg"),
    ("oom_control", "gfp_mask"),
    ("oom_control", "order"),
    ("oom_control", "totalpages"),
    ("oom_control", "chosen"),
    ("oom_control", "chosen_points"),
    ("oom_control", "constraint"),
];

/// Paths the agent does not use, exercising anonymous unions and nested embedded structs.
const EXTRA_PATHS: &[(&str, &str)] = &[
    ("kernfs_node", "attr"),
    ("page", "mapping"),
    ("page", "_mapcount"),
    ("task_struct", "se.vruntime"),
    ("task_struct", "thread_info.flags"),
];

#[test]
fn real_kernel_member_offsets_and_sizes_match_bpftool() {
    let Some((btf, dump)) = real() else { return };
    for &(s, m) in PATHS.iter().chain(EXTRA_PATHS) {
        let (off, ty) = dump.path(s, m);
        let got = btf
            .member_offset(s, m)
            .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
        assert_eq!(i64::from(got), off, "offset of {s}.{m}");
        let size = btf
            .member_size(s, m)
            .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
        assert_eq!(i64::from(size), dump.size(ty), "size of {s}.{m}");
        println!("{s}.{m}: offset {got}, size {size}");
    }
    let size = btf.struct_size("oom_control").expect("oom_control");
    assert_eq!(
        i64::from(size),
        dump.get(dump.find(&["STRUCT"], "oom_control")).num("size")
    );
    let e = btf
        .member_offset("task_struct", "foo")
        .expect_err("no such member");
    assert_eq!(e.to_string(), "struct `task_struct` has no member `foo`");
}

#[test]
fn real_kernel_enum_and_funcs_match_bpftool() {
    let Some((btf, dump)) = real() else { return };
    let id = dump.find(&["ENUM", "ENUM64"], "cgroup_subsys_id");
    let items = &dump.get(id).items;
    let (_, attrs) = items
        .iter()
        .find(|(n, _)| n == "memory_cgrp_id")
        .expect("memory_cgrp_id");
    let want = num(attrs, "val");
    assert_eq!(
        btf.enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
            .expect("named"),
        want
    );
    assert_eq!(
        btf.enum_value(None, "memory_cgrp_id").expect("any enum"),
        want
    );
    for f in [
        "out_of_memory",
        "mark_oom_victim",
        "__oom_kill_process",
        "no_such_fn_xyz",
    ] {
        let in_dump = dump.0.values().any(|t| t.kind == "FUNC" && t.name == f);
        assert_eq!(btf.has_func(f), in_dump, "has_func({f})");
    }
}

#[test]
fn real_kernel_mark_victim_tracepoint_params() {
    let Some((btf, dump)) = real() else { return };
    let ptr = dump
        .get(dump.find(&["TYPEDEF"], "btf_trace_mark_victim"))
        .num("type_id");
    let proto = dump.get(dump.get(ptr).num("type_id"));
    assert_eq!(proto.kind, "FUNC_PROTO");
    let want: Vec<String> = proto.items[1..]
        .iter()
        .map(|(_, a)| dump.c_name(num(a, "type_id")))
        .collect();
    let got = btf.tracepoint_params("mark_victim").expect("mark_victim");
    println!("btf_trace_mark_victim params: {got:?}");
    assert_eq!(got, want);
    if proto.items.len() == 3 {
        assert_eq!(got, ["struct task_struct *", "uid_t"]);
    }
}

#[test]
fn real_kernel_parse_and_lookup_timing() {
    if real().is_none() {
        return;
    }
    let start = Instant::now();
    let btf = Btf::from_file(Path::new(VMLINUX)).expect("vmlinux BTF parses");
    let parsed = start.elapsed();
    for &(s, m) in PATHS {
        btf.member_offset(s, m).expect("offset");
    }
    btf.enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
        .expect("enum");
    btf.tracepoint_params("mark_victim").expect("tracepoint");
    let total = start.elapsed();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{profile}: parse {parsed:?}, parse + {} lookups {total:?}",
        PATHS.len() + 2
    );
}
