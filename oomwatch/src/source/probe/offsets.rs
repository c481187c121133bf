//! Offsets handed to the eBPF programs, resolved at start-up: `task_struct` and friends and
//! `struct oom_control` from BTF, the `mark_victim` record from its tracefs format file. Nothing
//! here is a number written in the source: every offset comes from the running kernel.
use oomwatch_common::{
    ExeOffsets, MarkVictimOffsets, OomControlOffsets, PidNsOffsets, TaskOffsets,
};

use crate::source::btf::Btf;
use crate::source::tracefs::{self, MarkVictimLayout};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `task_struct`, `signal_struct` and the cgroup chain to a task's memory cgroup id.
pub fn task(btf: &Btf) -> Result<TaskOffsets, String> {
    let m = |s: &str, f: &str| btf.member_offset(s, f).map_err(err);
    let memory_id = btf
        .enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
        .map_err(err)?;
    let subsys = m("css_set", "subsys")?;
    // css_set.subsys is `struct cgroup_subsys_state *[CGROUP_SUBSYS_COUNT]`: the element size
    // comes from BTF too.
    let count = btf
        .enum_value(Some("cgroup_subsys_id"), "CGROUP_SUBSYS_COUNT")
        .map_err(err)?;
    let array = btf.member_size("css_set", "subsys").map_err(err)?;
    let (Ok(index), Ok(count)) = (u32::try_from(memory_id), u32::try_from(count)) else {
        return Err("cgroup_subsys_id values out of range".into());
    };
    if count == 0 || index >= count {
        return Err(format!(
            "memory_cgrp_id {index} not below CGROUP_SUBSYS_COUNT {count}"
        ));
    }
    let ptr = array / count;
    Ok(TaskOffsets {
        task_pid: m("task_struct", "pid")?,
        task_tgid: m("task_struct", "tgid")?,
        task_comm: m("task_struct", "comm")?,
        task_signal: m("task_struct", "signal")?,
        signal_oom_score_adj: m("signal_struct", "oom_score_adj")?,
        task_cgroups: m("task_struct", "cgroups")?,
        css_set_memory_subsys: subsys + index * ptr,
        css_cgroup: m("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: m("cgroup", "kn")?,
        kernfs_node_id: m("kernfs_node", "id")?,
        task_pending_signal: m("task_struct", "pending.signal.sig")?,
        _pad0: 0,
    })
}

/// `task->mm->exe_file` and its dentry chain: the trigger's program file, for the symbols of
/// its stack once it has exited.
pub fn exe(btf: &Btf) -> Result<ExeOffsets, String> {
    let m = |s: &str, f: &str| btf.member_offset(s, f).map_err(err);
    Ok(ExeOffsets {
        task_mm: m("task_struct", "mm")?,
        mm_exe_file: m("mm_struct", "exe_file")?,
        file_dentry: m("file", "f_path.dentry")?,
        dentry_parent: m("dentry", "d_parent")?,
        dentry_name: m("dentry", "d_name.name")?,
        mm_start_code: m("mm_struct", "start_code")?,
        mm_end_code: m("mm_struct", "end_code")?,
        _pad0: 0,
    })
}

/// `task->group_leader->thread_pid` (4.19+), `struct pid`'s `level` and `numbers[]`, `struct
/// upid` and `pid_namespace.child_reaper`: the victim's pid namespace and its init.
pub fn pidns(btf: &Btf) -> Result<PidNsOffsets, String> {
    let m = |s: &str, f: &str| btf.member_offset(s, f).map_err(err);
    Ok(PidNsOffsets {
        task_group_leader: m("task_struct", "group_leader")?,
        task_thread_pid: m("task_struct", "thread_pid")?,
        pid_level: m("pid", "level")?,
        pid_numbers: m("pid", "numbers")?,
        upid_size: btf.struct_size("upid").map_err(err)?,
        upid_nr: m("upid", "nr")?,
        upid_ns: m("upid", "ns")?,
        pidns_child_reaper: m("pid_namespace", "child_reaper")?,
    })
}

/// Whether this kernel's `mark_victim` tracepoint passes the victim's `task_struct` (6.8+ and
/// backports), which the tp_btf program needs; older kernels pass only `int pid`.
pub fn mark_victim_passes_task(btf: &Btf) -> Result<(), String> {
    let params = btf.tracepoint_params("mark_victim").map_err(err)?;
    if params.first().map(String::as_str) == Some("struct task_struct *") {
        Ok(())
    } else {
        Err(format!(
            "this kernel's mark_victim passes ({}), not a task_struct",
            params.join(", ")
        ))
    }
}

/// `struct oom_control` and `mem_cgroup.css`, for the `oom_kill_process` programs.
pub fn oom_control(btf: &Btf) -> Result<OomControlOffsets, String> {
    if !btf.has_func("oom_kill_process") {
        return Err("kernel BTF has no function oom_kill_process".into());
    }
    let m = |f: &str| btf.member_offset("oom_control", f).map_err(err);
    Ok(OomControlOffsets {
        memcg: m("memcg")?,
        gfp_mask: m("gfp_mask")?,
        order: m("order")?,
        totalpages: m("totalpages")?,
        chosen: m("chosen")?,
        chosen_points: m("chosen_points")?,
        constraint: m("constraint")?,
        memcg_css: btf.member_offset("mem_cgroup", "css").map_err(err)?,
    })
}

/// The `mark_victim` record's field offsets, from tracefs (mounted if needed).
pub fn mark_victim(
    force_pid_only: bool,
) -> Result<(MarkVictimOffsets, MarkVictimLayout, String), String> {
    let (root, mounted) = tracefs::ensure_mounted().map_err(err)?;
    if mounted {
        tracing::info!(path = %root.display(), "mounted tracefs");
    }
    let format = tracefs::read_format(root, "oom", "mark_victim").map_err(err)?;
    let (mut off, mut layout) = tracefs::mark_victim_offsets(&format).map_err(err)?;
    if force_pid_only {
        off = MarkVictimOffsets {
            pid: off.pid,
            ..MarkVictimOffsets::ABSENT
        };
        layout = MarkVictimLayout::PidOnly;
    }
    let detail = match layout {
        MarkVictimLayout::Extended => "extended format: pid, comm, memory, uid, oom_score_adj",
        MarkVictimLayout::PidOnly => "pid-only format: other fields from /proc",
        MarkVictimLayout::Partial => "partial format: missing fields from /proc",
    };
    Ok((off, layout, detail.to_string()))
}

/// The names of `enum oom_constraint`'s values, indexed by value, as this kernel's BTF has them.
pub fn constraint_names(btf: &Btf) -> Vec<(i64, String)> {
    [
        "CONSTRAINT_NONE",
        "CONSTRAINT_CPUSET",
        "CONSTRAINT_MEMORY_POLICY",
        "CONSTRAINT_MEMCG",
    ]
    .iter()
    .filter_map(|n| {
        btf.enum_value(Some("oom_constraint"), n)
            .ok()
            .map(|v| (v, (*n).to_string()))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::OFFSET_ABSENT;
    use std::path::Path;

    /// This kernel's BTF, or `None` after skipping (a failure under
    /// `OOMWATCH_REQUIRE_REAL_KERNEL=1`).
    fn host_btf() -> Option<Btf> {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            oomwatch_testkit::skip(format!("no kernel BTF at {}", path.display()));
            return None;
        }
        Some(Btf::from_file(path).unwrap())
    }

    #[test]
    fn task_offsets_resolve_on_this_kernel() {
        let Some(btf) = host_btf() else { return };
        let off = task(&btf).unwrap();
        let all = [
            off.task_pid,
            off.task_tgid,
            off.task_comm,
            off.task_signal,
            off.signal_oom_score_adj,
            off.task_cgroups,
            off.css_set_memory_subsys,
            off.css_cgroup,
            off.cgroup_kn,
            off.kernfs_node_id,
            off.task_pending_signal,
        ];
        assert!(all.iter().all(|&o| o != OFFSET_ABSENT), "{off:?}");
        assert!(mark_victim_passes_task(&btf).is_ok());
    }

    #[test]
    fn pidns_offsets_resolve_on_this_kernel() {
        let Some(btf) = host_btf() else { return };
        let p = pidns(&btf).unwrap();
        assert_eq!(
            p.upid_size, 16,
            "struct upid is {{ int nr; struct pid_namespace *ns; }}"
        );
        assert_eq!((p.upid_nr, p.upid_ns), (0, 8), "{p:?}");
        let pid_size = btf.struct_size("pid").unwrap();
        assert!(p.pid_level < pid_size && p.pid_numbers <= pid_size, "{p:?}");
    }

    #[test]
    fn oom_control_offsets_resolve_on_this_kernel() {
        let Some(btf) = host_btf() else { return };
        let oc = oom_control(&btf).unwrap();
        assert_eq!(
            oc.memcg_css, 0,
            "css is mem_cgroup's first member on every kernel since 3.x"
        );
        let size = btf.struct_size("oom_control").unwrap();
        for o in [
            oc.memcg,
            oc.gfp_mask,
            oc.order,
            oc.totalpages,
            oc.chosen,
            oc.chosen_points,
            oc.constraint,
        ] {
            assert!(o < size, "{oc:?}");
        }
        let names = constraint_names(&btf);
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&(3, "CONSTRAINT_MEMCG".to_string())));
    }
}
