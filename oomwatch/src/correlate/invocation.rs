//! OOM invocations: what `oom_kill_process()` saw, numbered, and matched to their victims.
//!
//! The kernel serialises OOM kills under the global `oom_lock`: an invocation's
//! `oom_kill_process()` entry, then the `mark_victim` of its chosen task, then (with
//! `memory.oom.group=1`) those of the rest of the group, all before the next invocation starts.
//! A victim therefore belongs to the newest invocation that came before it, if that invocation
//! chose it, or (a group member) was marked within [`GROUP_WINDOW_NS`] of that invocation's
//! previous victim: the kernel marks the members one after another, printing each one's
//! "Killed process" line in between, which on a slow console takes tens of milliseconds per
//! line (seen: 90 ms, and 166 ms with two guests on two host cores, under qemu TCG), so the
//! window runs from the last member, not from the invocation. A `mark_victim` that
//! matches neither is a victim marked without a kill decision (a task already exiting, which
//! the kernel lets go first): it gets no invocation context.
use std::collections::VecDeque;

use oomwatch_common::{oom_field, OomKillRecord};

use crate::record::{OomContext, Source, Task};
use crate::sys::text::comm_str;

/// How long after an invocation's previous victim the next member of its group may be marked.
pub const GROUP_WINDOW_NS: u64 = 250_000_000;
/// Invocations remembered for matching (they arrive just before their victims).
const KEPT: usize = 64;

/// One `oom_kill_process()` call.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub id: u64,
    pub rec: OomKillRecord,
    pub source: Source,
    /// Whether its chosen task's `mark_victim` has been seen (group victims come after it).
    pub chosen_seen: bool,
    /// When its latest victim was marked (the group window runs from there).
    pub last_mark_ns: u64,
}

/// Recent invocations, newest last.
#[derive(Debug, Default)]
pub struct Invocations {
    recent: VecDeque<Invocation>,
    next_id: u64,
    /// `enum oom_constraint` value → name, from the kernel's BTF.
    constraints: Vec<(i64, String)>,
}

impl Invocations {
    pub fn new(constraints: Vec<(i64, String)>) -> Self {
        Self {
            recent: VecDeque::new(),
            next_id: 1,
            constraints,
        }
    }

    /// Records an invocation and returns its id.
    pub fn push(&mut self, rec: OomKillRecord, source: Source) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(Invocation {
            id,
            rec,
            source,
            chosen_seen: false,
            last_mark_ns: rec.ktime_ns,
        });
        id
    }

    /// The invocation that killed victim `pid` (of process `tgid`) marked at `ktime_ns`, if
    /// any. The kernel chooses a process (its leader, even a leader that has exited while its
    /// threads run on) but marks the thread that holds the mm (`find_lock_task_mm`): a victim
    /// is the chosen one when it is that task or a thread of that process.
    pub fn match_victim(
        &mut self,
        pid: i32,
        tgid: Option<i32>,
        ktime_ns: u64,
    ) -> Option<&Invocation> {
        let idx = self
            .recent
            .iter()
            .rposition(|inv| inv.rec.ktime_ns <= ktime_ns)?;
        let inv = &mut self.recent[idx];
        let same_process = tgid.is_some_and(|t| t > 0 && t == inv.rec.chosen_tgid);
        let chosen =
            inv.rec.present & oom_field::CHOSEN != 0 && (inv.rec.chosen_pid == pid || same_process);
        let group = inv.chosen_seen && ktime_ns.saturating_sub(inv.last_mark_ns) <= GROUP_WINDOW_NS;
        if chosen {
            inv.chosen_seen = true;
        }
        if chosen || group {
            inv.last_mark_ns = inv.last_mark_ns.max(ktime_ns);
        }
        (chosen || group).then_some(&self.recent[idx])
    }

    /// The event's `oom` object. `resolve` turns a cgroup id into its path.
    pub fn context(
        &self,
        inv: &Invocation,
        mut resolve: impl FnMut(u64) -> Option<String>,
    ) -> OomContext {
        let r = &inv.rec;
        let has = |bit: u32| r.present & bit != 0;
        let memcg_id = has(oom_field::MEMCG_ID).then_some(r.memcg_id);
        let trigger_cgroup_id = has(oom_field::TRIGGER_MEMCG_ID).then_some(r.trigger_memcg_id);
        OomContext {
            constraint: has(oom_field::CONSTRAINT).then(|| self.constraint_name(r.constraint)),
            gfp_mask: has(oom_field::GFP_MASK).then(|| format!("{:#x}", r.gfp_mask)),
            order: has(oom_field::ORDER).then_some(r.order),
            totalpages: has(oom_field::TOTALPAGES).then_some(r.totalpages),
            badness: has(oom_field::CHOSEN_POINTS).then_some(r.chosen_points),
            chosen: has(oom_field::CHOSEN).then(|| Task {
                pid: r.chosen_pid,
                tgid: r.chosen_tgid,
                comm: comm_str(&r.chosen_comm),
            }),
            oom_memcg: memcg_id.and_then(&mut resolve),
            oom_memcg_id: memcg_id,
            message: has(oom_field::MESSAGE).then(|| nul_str(&r.message)),
            trigger_cgroup: trigger_cgroup_id.and_then(&mut resolve),
            trigger_cgroup_id,
            ..OomContext::default()
        }
    }

    fn constraint_name(&self, v: u32) -> String {
        self.constraints
            .iter()
            .find(|(n, _)| *n == i64::from(v))
            .map_or_else(|| format!("CONSTRAINT_{v}"), |(_, name)| name.clone())
    }
}

fn nul_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomwatch_common::RecordKind;

    fn inv(ktime: u64, chosen: i32) -> OomKillRecord {
        let mut r = OomKillRecord::zeroed();
        r.kind = RecordKind::OomKill as u32;
        r.ktime_ns = ktime;
        r.chosen_pid = chosen;
        r.constraint = 3;
        r.gfp_mask = 0xcc0;
        r.memcg_id = 42;
        r.present = oom_field::CHOSEN
            | oom_field::CONSTRAINT
            | oom_field::GFP_MASK
            | oom_field::MEMCG_ID
            | oom_field::MESSAGE;
        r.message[..27].copy_from_slice(b"Memory cgroup out of memory");
        r
    }

    fn names() -> Vec<(i64, String)> {
        vec![
            (0, "CONSTRAINT_NONE".into()),
            (3, "CONSTRAINT_MEMCG".into()),
        ]
    }

    #[test]
    fn chosen_victim_matches_and_group_members_share_the_id() {
        let mut invs = Invocations::new(names());
        let id = invs.push(inv(1_000, 10), Source::OomKillFentry);
        assert_eq!(invs.match_victim(10, None, 1_500).map(|i| i.id), Some(id));
        assert_eq!(
            invs.match_victim(11, None, 2_000).map(|i| i.id),
            Some(id),
            "group member"
        );
        assert!(invs
            .match_victim(12, None, 2_000 + GROUP_WINDOW_NS + 1)
            .is_none());
    }

    #[test]
    fn a_slowly_printed_group_is_one_invocation() {
        // Each member is marked 90 ms after the previous one (the console prints its "Killed
        // process" line in between): the whole group belongs to the invocation even though the
        // last member comes long after the window from the invocation itself.
        let mut invs = Invocations::new(names());
        let id = invs.push(inv(1_000, 10), Source::OomKillFentry);
        let step = GROUP_WINDOW_NS * 9 / 10;
        assert_eq!(
            invs.match_victim(10, None, 1_000 + step).map(|i| i.id),
            Some(id)
        );
        for (n, pid) in (11..15).enumerate() {
            let t = 1_000 + step * (n as u64 + 2);
            assert_eq!(
                invs.match_victim(pid, None, t).map(|i| i.id),
                Some(id),
                "member {pid}"
            );
        }
        // A pause longer than the window ends the group.
        let last = 1_000 + step * 5;
        assert!(invs
            .match_victim(20, None, last + GROUP_WINDOW_NS + 1)
            .is_none());
    }

    #[test]
    fn a_victim_before_its_chosen_task_or_of_no_invocation_gets_none() {
        let mut invs = Invocations::new(names());
        assert!(
            invs.match_victim(10, None, 5).is_none(),
            "no invocation yet"
        );
        invs.push(inv(1_000, 10), Source::OomKillKprobe);
        assert!(
            invs.match_victim(99, None, 1_100).is_none(),
            "exiting task marked without a kill"
        );
        assert!(
            invs.match_victim(10, None, 900).is_none(),
            "earlier than the invocation"
        );
    }

    #[test]
    fn a_thread_of_the_chosen_process_is_the_chosen_victim() {
        // The leader (pid 10) exited; the kernel chose its process and marked thread 13, the
        // one still holding the mm. Seen on 7.2 in the VM: without the tgid the kill had no
        // invocation and the fentry row was counted silent.
        let mut invs = Invocations::new(names());
        let mut rec = inv(1_000, 10);
        rec.chosen_tgid = 10;
        let id = invs.push(rec, Source::OomKillFentry);
        assert_eq!(
            invs.match_victim(13, Some(10), 1_100).map(|i| i.id),
            Some(id)
        );
        assert!(
            invs.match_victim(14, Some(11), 1_100 + GROUP_WINDOW_NS * 2)
                .is_none(),
            "another process, long after"
        );
    }

    #[test]
    fn newer_invocation_wins() {
        let mut invs = Invocations::new(names());
        invs.push(inv(1_000, 10), Source::OomKillFentry);
        let second = invs.push(inv(2_000, 10), Source::OomKillFentry);
        assert_eq!(
            invs.match_victim(10, None, 2_100).map(|i| i.id),
            Some(second)
        );
    }

    #[test]
    fn context_names_the_constraint_and_resolves_cgroups() {
        let mut invs = Invocations::new(names());
        invs.push(inv(1_000, 10), Source::OomKillFentry);
        let i = invs.match_victim(10, None, 1_001).unwrap().clone();
        let c = invs.context(&i, |id| (id == 42).then(|| "/t".to_string()));
        assert_eq!(c.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(c.gfp_mask.as_deref(), Some("0xcc0"));
        assert_eq!(c.oom_memcg.as_deref(), Some("/t"));
        assert_eq!(c.message.as_deref(), Some("Memory cgroup out of memory"));
        assert_eq!(c.order, None, "absent bits stay absent");
        assert_eq!(c.chosen.unwrap().pid, 10);
        let unknown = Invocations::new(vec![]).constraint_name(7);
        assert_eq!(unknown, "CONSTRAINT_7");
    }

    #[test]
    fn memory_is_bounded() {
        let mut invs = Invocations::new(names());
        for i in 0..1000 {
            invs.push(inv(i, 1), Source::OomKillFentry);
        }
        assert_eq!(invs.recent.len(), KEPT);
    }
}
