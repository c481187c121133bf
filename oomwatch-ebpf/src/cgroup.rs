//! Cgroup ids: the kernfs id of a cgroup, which is also its directory's inode number.
use aya_ebpf::EbpfContext;
use oomwatch_common::TaskOffsets;

use crate::read;

/// `css->cgroup->kn->id`.
#[inline(always)]
pub fn css_cgroup_id<C: EbpfContext>(ctx: &C, css: *const u8, off: &TaskOffsets) -> Option<u64> {
    let cg = read::at::<*const u8, _>(ctx, css, off.css_cgroup, "css.cgroup")?;
    let kn = read::at::<*const u8, _>(ctx, cg, off.cgroup_kn, "cgroup.kn")?;
    read::at::<u64, _>(ctx, kn, off.kernfs_node_id, "kernfs_node.id")
}

/// The id of a task's memory cgroup: `task->cgroups->subsys[memory_cgrp_id]`, then as above.
#[inline(always)]
pub fn task_memcg_id<C: EbpfContext>(ctx: &C, task: *const u8, off: &TaskOffsets) -> Option<u64> {
    let cset = read::at::<*const u8, _>(ctx, task, off.task_cgroups, "task_struct.cgroups")?;
    let css = read::at::<*const u8, _>(ctx, cset, off.css_set_memory_subsys, "css_set.subsys")?;
    css_cgroup_id(ctx, css, off)
}
