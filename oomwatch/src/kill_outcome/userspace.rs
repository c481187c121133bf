//! A userspace OOM killer's SIGKILL as an event: the same shape as a kernel kill's, with
//! `killer` the sender's comm, `killer_pid`/`killer_cgroup` and `trigger` the sender, and the
//! victim's fields from the signal record (else `/proc`, while the victim is still there).
use std::path::Path;

use oomwatch_common::{signal_field, RecordKind, SignalRecord};

use crate::record::{OomEvent, Source, Trigger};
use crate::sys::cgroup::IdResolver;
use crate::sys::clock::wall_clock_of;
use crate::sys::procfs;
use crate::sys::text::comm_str;

/// uapi `SI_KERNEL`: the kernel's own kills (its OOM killer, a group kill), not a process's.
const SI_KERNEL: i32 = 0x80;
/// `enum trace_signal_result`'s `TRACE_SIGNAL_DELIVERED`: the signal was queued (not
/// ignored, not already pending).
const DELIVERED: i32 = 0;

/// The event for a listed killer's SIGKILL, or `None` for one that is not a new userspace kill
/// (sent by the kernel, already pending, not delivered).
pub fn event(
    s: &SignalRecord,
    host: &str,
    proc_root: &Path,
    mut resolver: Option<&mut IdResolver>,
) -> Option<OomEvent> {
    if !is_userspace_kill(s) {
        return None;
    }
    let has = |bit: u32| s.present & bit != 0;
    let src = match RecordKind::from_u32(s.kind) {
        Some(RecordKind::SignalBtf) => Source::SignalBtf,
        _ => Source::SignalTracepoint,
    };
    // The task's cgroup in /proc, checked by inode, spares a walk of the hierarchy.
    let mut resolve = |bit: u32, id: u64, pid: i32| {
        let r = resolver.as_mut().filter(|_| has(bit))?;
        r.resolve_for_task(id, proc_root, pid)
    };
    let cgroup = resolve(
        signal_field::TARGET_MEMCG_ID,
        s.target_memcg_id,
        s.target_pid,
    );
    let killer_cgroup = resolve(
        signal_field::SENDER_MEMCG_ID,
        s.sender_memcg_id,
        s.sender_pid,
    );
    let mut ev = from_record(s, src, host, cgroup);
    // The victim has SIGKILL pending, not yet handled: /proc usually still has it.
    fill_from_proc(&mut ev, proc_root);
    set_killer(&mut ev, s, killer_cgroup);
    Some(ev)
}

/// A new userspace kill: a target, not sent by the kernel, and delivered (not ignored, not
/// already pending).
pub(super) fn is_userspace_kill(s: &SignalRecord) -> bool {
    let has = |bit: u32| s.present & bit != 0;
    if !has(signal_field::TARGET_PID) || s.target_pid <= 0 {
        return false;
    }
    if has(signal_field::CODE) && s.code == SI_KERNEL {
        return false;
    }
    !(has(signal_field::RESULT) && s.result != DELIVERED)
}

/// The event with what the signal record says of the victim.
fn from_record(s: &SignalRecord, src: Source, host: &str, cgroup: Option<String>) -> OomEvent {
    let has = |bit: u32| s.present & bit != 0;
    let mut ev = OomEvent::new(
        s.target_pid,
        s.ktime_ns,
        wall_clock_of(s.ktime_ns),
        host.to_string(),
    );
    ev.sources.insert("pid", src);
    ev.sources.insert("killer", src);
    ev.sources.insert("trigger", src);
    if has(signal_field::TARGET_TGID) {
        ev.tgid = Some(s.target_tgid);
        ev.sources.insert("tgid", src);
    }
    if has(signal_field::TARGET_COMM) {
        ev.comm = Some(comm_str(&s.target_comm));
        ev.sources.insert("comm", src);
    }
    if has(signal_field::TARGET_MEMCG_ID) {
        ev.cgroup_id = Some(s.target_memcg_id);
    }
    if cgroup.is_some() {
        ev.cgroup = cgroup;
        ev.sources.insert("cgroup", Source::Cgroupfs);
    }
    ev
}

/// The victim's fields the record did not have, and its memory, from `/proc`.
fn fill_from_proc(ev: &mut OomEvent, proc_root: &Path) {
    let info = procfs::read(proc_root, ev.pid);
    if ev.tgid.is_none() && info.tgid.is_some() {
        ev.tgid = info.tgid;
        ev.sources.insert("tgid", Source::Procfs);
    }
    if ev.comm.is_none() && info.comm.is_some() {
        ev.comm = info.comm;
        ev.sources.insert("comm", Source::Procfs);
    }
    if ev.cgroup.is_none() && info.cgroup.is_some() {
        ev.cgroup = info.cgroup;
        ev.sources.insert("cgroup", Source::ProcCgroup);
    }
    if info.uid.is_some() {
        ev.uid = info.uid;
        ev.sources.insert("uid", Source::Procfs);
    }
    if info.anon_rss.is_some() {
        ev.total_vm = info.total_vm;
        ev.anon_rss = info.anon_rss;
        ev.file_rss = info.file_rss;
        ev.shmem_rss = info.shmem_rss;
        ev.sources.insert("memory", Source::Procfs);
    }
    if info.pgtables.is_some() {
        ev.pgtables = info.pgtables;
        ev.sources.insert("pgtables", Source::Procfs);
    }
    if info.oom_score_adj.is_some() {
        ev.oom_score_adj = info.oom_score_adj;
        ev.sources.insert("oom_score_adj", Source::Procfs);
    }
}

/// The sender as killer and trigger, and the victim block.
fn set_killer(ev: &mut OomEvent, s: &SignalRecord, killer_cgroup: Option<String>) {
    let killer = comm_str(&s.sender_comm);
    ev.trigger = Some(Trigger {
        pid: s.sender_pid,
        tgid: s.sender_tgid,
        comm: killer.clone(),
        cgroup: killer_cgroup.clone(),
        cgroup_id: (s.present & signal_field::SENDER_MEMCG_ID != 0).then_some(s.sender_memcg_id),
        namespace: None,
        pod: None,
        pod_uid: None,
        stack: None,
    });
    ev.sync_victim();
    ev.killer = Some(killer);
    ev.killer_pid = Some(s.sender_tgid);
    ev.killer_cgroup = killer_cgroup;
}
