//! The agent's offset tables (`oomwatch::source::probe::offsets`) resolved from the BTF of Debian's 6.1
//! and 6.12 cloud kernels, checked field by field against ground truth computed independently
//! from `bpftool btf dump file ... format raw` of the same file.
//!
//! The BTF files are `target/vm/<release>/vmlinux.btf`, written by `cargo xtask vm-test`
//! (`--prepare-only` for just those; `cargo xtask test` does it before `cargo test` as root or
//! in CI). Without them, or without bpftool, the tests skip with a message, unless
//! `OOMWATCH_REQUIRE_REAL_KERNEL=1`, in which case they fail.
mod common_btf;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use common_btf::{bpftool_dump, Dump};
use oomwatch::source::btf::Btf;
use oomwatch::source::probe::offsets;
use oomwatch_common::{OomControlOffsets, PidNsOffsets, TaskOffsets};

const HOST: &str = "/sys/kernel/btf/vmlinux";

/// One kernel's BTF as the agent reads it and as bpftool dumps it.
struct Kernel {
    release: String,
    btf: Btf,
    dump: Dump,
}

/// The workspace's target directory: `CARGO_TARGET_DIR` (relative to the workspace root, as
/// xtask reads it) or `<workspace>/target`.
fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// Every `target/vm/*/vmlinux.btf`, sorted by release.
fn btf_files() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(target_dir().join("vm")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .map(|(release, dir)| (release, dir.join("vmlinux.btf")))
        .filter(|(_, f)| f.is_file())
        .collect();
    found.sort();
    found
}

fn load(release: String, path: &Path) -> Result<Kernel, String> {
    let started = Instant::now();
    let btf = Btf::from_file(path).map_err(|e| format!("{e}"))?;
    let parsed = started.elapsed();
    let dump = bpftool_dump(path)?;
    println!(
        "{release}: {} parsed in {parsed:?}, bpftool dump parsed in {:?}",
        path.display(),
        started.elapsed() - parsed
    );
    Ok(Kernel { release, btf, dump })
}

/// The Debian kernels, or `None` after printing why (a failure under
/// `OOMWATCH_REQUIRE_REAL_KERNEL=1`).
fn debian() -> Option<&'static [Kernel]> {
    static KERNELS: OnceLock<Result<Vec<Kernel>, String>> = OnceLock::new();
    let got = KERNELS.get_or_init(|| {
        let files = btf_files();
        if files.is_empty() {
            let run = "run `cargo xtask vm-test --prepare-only`";
            return Err(format!("no Debian kernel BTF under target/vm ({run})"));
        }
        files
            .into_iter()
            .map(|(release, path)| load(release, &path))
            .collect()
    });
    match got {
        Ok(k) => Some(k),
        Err(reason) => {
            oomwatch_testkit::skip(reason);
            None
        }
    }
}

/// `TaskOffsets` as the dump has them.
fn task_truth(d: &Dump) -> TaskOffsets {
    let off = |s: &str, m: &str| u32::try_from(d.path(s, m).0).expect("offset fits u32");
    // css_set.subsys is `struct cgroup_subsys_state *subsys[CGROUP_SUBSYS_COUNT]`: the memory
    // controller's entry is at index memory_cgrp_id, one pointer (a `long`) per entry.
    let (subsys, ty) = d.path("css_set", "subsys");
    let array = d.get(d.resolve(ty));
    assert_eq!(array.kind, "ARRAY", "css_set.subsys");
    let elem = d.get(d.resolve(array.num("type_id")));
    assert_eq!(elem.kind, "PTR", "css_set.subsys[]");
    let pointer = d.get(d.find(&["INT"], "long int")).num("size");
    let id = |n: &str| d.enum_val("cgroup_subsys_id", n).expect(n);
    assert_eq!(array.num("nr_elems"), id("CGROUP_SUBSYS_COUNT"));
    let memory = subsys + id("memory_cgrp_id") * pointer;
    TaskOffsets {
        task_pid: off("task_struct", "pid"),
        task_tgid: off("task_struct", "tgid"),
        task_comm: off("task_struct", "comm"),
        task_signal: off("task_struct", "signal"),
        signal_oom_score_adj: off("signal_struct", "oom_score_adj"),
        task_cgroups: off("task_struct", "cgroups"),
        css_set_memory_subsys: u32::try_from(memory).expect("offset fits u32"),
        css_cgroup: off("cgroup_subsys_state", "cgroup"),
        cgroup_kn: off("cgroup", "kn"),
        kernfs_node_id: off("kernfs_node", "id"),
        // `sigset_t.sig` is `unsigned long sig[_NSIG_WORDS]`: its offset is the first word's.
        task_pending_signal: off("task_struct", "pending.signal.sig"),
        _pad0: 0,
    }
}

/// `OomControlOffsets` as the dump has them.
fn oom_control_truth(d: &Dump) -> OomControlOffsets {
    let off = |s: &str, m: &str| u32::try_from(d.path(s, m).0).expect("offset fits u32");
    let oc = |m: &str| off("oom_control", m);
    OomControlOffsets {
        memcg: oc("memcg"),
        gfp_mask: oc("gfp_mask"),
        order: oc("order"),
        totalpages: oc("totalpages"),
        chosen: oc("chosen"),
        chosen_points: oc("chosen_points"),
        constraint: oc("constraint"),
        memcg_css: off("mem_cgroup", "css"),
    }
}

#[test]
fn debian_task_offsets_match_bpftool() {
    let Some(kernels) = debian() else { return };
    let columns = |o: &TaskOffsets| {
        [
            ("pid", o.task_pid),
            ("tgid", o.task_tgid),
            ("comm", o.task_comm),
            ("signal", o.task_signal),
            ("pending", o.task_pending_signal),
            ("cgroups", o.task_cgroups),
            ("oom_adj", o.signal_oom_score_adj),
            ("mem_css", o.css_set_memory_subsys),
            ("css.cgroup", o.css_cgroup),
            ("cgroup.kn", o.cgroup_kn),
            ("kn.id", o.kernfs_node_id),
        ]
    };
    let header: Vec<String> = columns(&TaskOffsets::ABSENT)
        .iter()
        .map(|(n, _)| format!("{n:>11}"))
        .collect();
    println!("{:<28}{}", "kernel", header.concat());
    for k in kernels {
        let want = task_truth(&k.dump);
        let got = offsets::task(&k.btf).unwrap_or_else(|e| panic!("{}: {e}", k.release));
        let row: Vec<String> = columns(&got)
            .iter()
            .map(|(_, v)| format!("{v:>11}"))
            .collect();
        println!("{:<28}{}", k.release, row.concat());
        assert_eq!(got, want, "TaskOffsets of {}", k.release);
    }
}

/// `PidNsOffsets` as the dump has them.
fn pidns_truth(d: &Dump) -> PidNsOffsets {
    let off = |s: &str, m: &str| u32::try_from(d.path(s, m).0).expect("offset fits u32");
    let upid = d.get(d.find(&["STRUCT"], "upid")).num("size");
    PidNsOffsets {
        task_group_leader: off("task_struct", "group_leader"),
        task_thread_pid: off("task_struct", "thread_pid"),
        pid_level: off("pid", "level"),
        pid_numbers: off("pid", "numbers"),
        upid_size: u32::try_from(upid).expect("size fits u32"),
        upid_nr: off("upid", "nr"),
        upid_ns: off("upid", "ns"),
        pidns_child_reaper: off("pid_namespace", "child_reaper"),
    }
}

#[test]
fn debian_pidns_offsets_match_bpftool() {
    let Some(kernels) = debian() else { return };
    for k in kernels {
        let got = offsets::pidns(&k.btf).unwrap_or_else(|e| panic!("{}: {e}", k.release));
        println!("{:<28}{got:?}", k.release);
        assert_eq!(got, pidns_truth(&k.dump), "PidNsOffsets of {}", k.release);
    }
}

#[test]
fn debian_oom_control_offsets_match_bpftool() {
    let Some(kernels) = debian() else { return };
    for k in kernels {
        let d = &k.dump;
        let has =
            d.0.values()
                .any(|t| t.kind == "FUNC" && t.name == "oom_kill_process");
        assert!(has, "{}: the dump has no FUNC oom_kill_process", k.release);
        let want = oom_control_truth(d);
        let got = offsets::oom_control(&k.btf).unwrap_or_else(|e| panic!("{}: {e}", k.release));
        println!("{}: {got:?}", k.release);
        assert_eq!(got, want, "OomControlOffsets of {}", k.release);
    }
}

#[test]
fn debian_oom_constraint_names_match_bpftool() {
    let Some(kernels) = debian() else { return };
    for k in kernels {
        let id = k.dump.find(&["ENUM", "ENUM64"], "oom_constraint");
        let mut want: Vec<(i64, String)> = k
            .dump
            .get(id)
            .items
            .iter()
            .map(|(n, a)| (common_btf::num(a, "val"), n.clone()))
            .collect();
        want.sort();
        let mut got = offsets::constraint_names(&k.btf);
        got.sort();
        println!("{}: {got:?}", k.release);
        assert_eq!(got, want, "enum oom_constraint of {}", k.release);
        assert_eq!(got.len(), 4, "{}", k.release);
    }
}

#[test]
fn debian_mark_victim_passes_task_struct() {
    let Some(kernels) = debian() else { return };
    for k in kernels {
        let params = k.dump.tracepoint_params("mark_victim");
        println!(
            "{}: btf_trace_mark_victim(void *, {})",
            k.release,
            params.join(", ")
        );
        let passes_task = params.first().map(String::as_str) == Some("struct task_struct *");
        assert_eq!(
            offsets::mark_victim_passes_task(&k.btf).is_ok(),
            passes_task,
            "{}: {params:?}",
            k.release
        );
        // Debian's 6.1 (6.1.0-56) and 6.12 kernels carry the 6.8 change that passes the task.
        assert_eq!(
            params,
            ["struct task_struct *", "uid_t"],
            "{}: the Debian kernels' mark_victim passes the task and its uid",
            k.release
        );
    }
}

#[test]
fn task_pid_offset_differs_between_kernels() {
    let Some(kernels) = debian() else { return };
    let mut pids: Vec<(String, u32)> = kernels
        .iter()
        .map(|k| (k.release.clone(), offsets::task(&k.btf).unwrap().task_pid))
        .collect();
    if Path::new(HOST).exists() {
        let host = Btf::from_file(Path::new(HOST)).expect("host BTF parses");
        pids.push(("host".into(), offsets::task(&host).unwrap().task_pid));
    }
    println!("task_struct.pid: {pids:?}");
    assert!(
        pids.iter().any(|(_, p)| *p != pids[0].1),
        "task_struct.pid is the same on every kernel ({pids:?}): the test cannot show that \
         offsets are resolved rather than hard-coded"
    );
}
