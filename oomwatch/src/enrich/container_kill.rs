//! Partial kills: whether an OOM kill in a container took the container or left it running.
//!
//! Decided from the victim's pid namespace as the kernel showed it at the kill
//! ([`decide_at_kill`], `tp_btf:mark_victim`), else from the victim's memory cgroup right after
//! the kill ([`observe`], [`decide`]; the event is enriched within the correlation window): the
//! tasks in its `cgroup.procs` and, for each, the `NSpid` line of `/proc/<pid>/status` (the pid
//! in every pid namespace the task is in, the host's first). The container's init is the task
//! whose innermost pid is 1 in a pid namespace other than the host's. The rules (see
//! `docs/events.md`):
//! - a `memory.oom.group` kill (`oom_group` set, or the victim killed as a group member) → the
//!   kill took every task of the cgroup: `false`;
//! - the victim is the container's init (its pid in its namespace is 1) → `false`: the kernel
//!   kills the rest of the namespace when its init dies;
//! - the init is another task, in the victim's cgroup → `true`;
//! - no task is left in the cgroup → `false` (the container ended);
//! - otherwise (tasks left, none of them an init: a container sharing the host's or the pod's
//!   pid namespace) → `null`.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::record::{ContainerInit, ContainerKill, PidNsAtKill};
use crate::sys::cgroup::{MemoryHierarchy, Version};

/// Most bytes read from one `cgroup.procs` (about 150,000 pids).
const MAX_PROCS_BYTES: u64 = 1 << 20;
/// Most tasks whose status is read looking for the init.
const MAX_TASKS: usize = 4096;
/// Most bytes read from one `/proc/<pid>/status`.
const MAX_STATUS_BYTES: u64 = 16 << 10;

/// A task as `/proc/<pid>/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsTask {
    /// Its pid in the agent's pid namespace.
    pub pid: i32,
    /// `NSpid`: outermost namespace first; one entry in the host's namespace only.
    pub nspid: Vec<i32>,
    pub comm: Option<String>,
}

impl NsTask {
    /// Pid 1 of a pid namespace below the agent's.
    fn is_namespace_init(&self) -> bool {
        self.nspid.len() > 1 && self.nspid.last() == Some(&1)
    }

    fn init(&self) -> ContainerInit {
        ContainerInit {
            pid: self.pid,
            comm: self.comm.clone(),
        }
    }
}

/// What the cgroup showed right after the kill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The victim itself, if `/proc` still had it (exiting or a zombie).
    pub victim: Option<NsTask>,
    /// The first namespace init among the cgroup's tasks.
    pub init: Option<NsTask>,
    /// How many tasks the cgroup held; `None` when `cgroup.procs` could not be read.
    pub tasks: Option<usize>,
    /// `memory.oom.group` (v2).
    pub oom_group: Option<bool>,
}

/// The fields, by the rules in the module's documentation. `in_container`: the victim's cgroup
/// names a container; `group_member`: the victim was killed as a member of a group kill.
pub fn decide(in_container: bool, group_member: Option<bool>, seen: &Seen) -> ContainerKill {
    let victim_init = seen.victim.as_ref().filter(|v| v.is_namespace_init());
    let container_init = victim_init.or(seen.init.as_ref()).map(NsTask::init);
    let partial_kill = if !in_container {
        None
    } else if seen.oom_group == Some(true) || group_member == Some(true) || victim_init.is_some() {
        Some(false)
    } else if let Some(init) = &seen.init {
        Some(seen.victim.as_ref().is_none_or(|v| v.pid != init.pid))
    } else if seen.tasks == Some(0) {
        Some(false)
    } else {
        None
    };
    ContainerKill {
        partial_kill,
        container_init,
        oom_group: seen.oom_group,
        at_kill: None,
    }
}

/// The victim as the kill decision needs it.
#[derive(Clone, Copy, Debug)]
pub struct Victim<'a> {
    /// Its process id as the host sees it.
    pub tgid: i32,
    pub comm: Option<&'a str>,
    /// Its memory cgroup's id.
    pub memcg_id: Option<u64>,
}

/// The same rules from the pid namespace the kernel showed at the kill (`tp_btf:mark_victim`):
/// exact, and independent of what is left to read afterwards. `None` when it cannot decide, and
/// the cgroup is read instead: the victim is in the host's pid namespace, or its namespace's
/// init lives in another memory cgroup (a pod sharing one pid namespace, whose init is the
/// sandbox's pause: the container's own main process is then no namespace init).
pub fn decide_at_kill(
    group_member: Option<bool>,
    oom_group: Option<bool>,
    victim: Victim<'_>,
    ns: &PidNsAtKill,
) -> Option<ContainerKill> {
    if ns.level == 0 {
        return None;
    }
    let victim_init = ns.ns_tgid == 1;
    let init = if victim_init {
        ContainerInit {
            pid: victim.tgid,
            comm: victim.comm.map(str::to_string),
        }
    } else {
        let i = ns.init.as_ref()?;
        (victim.memcg_id? == i.memcg_id).then(|| ContainerInit {
            pid: i.tgid,
            comm: Some(i.comm.clone()),
        })?
    };
    let whole = victim_init || oom_group == Some(true) || group_member == Some(true);
    Some(ContainerKill {
        partial_kill: Some(!whole),
        container_init: Some(init),
        oom_group,
        at_kill: None,
    })
}

/// Reads the cgroup `cgroup` (a path below the hierarchy), the victim `victim` (its tgid) and
/// the `memory.oom.group` settings up to the OOM domain `oom_memcg` (the root for a global OOM).
pub fn observe(
    h: &MemoryHierarchy,
    proc_root: &Path,
    cgroup: &str,
    oom_memcg: Option<&str>,
    victim: i32,
) -> Seen {
    let dir = h.dir(cgroup);
    let oom_group = oom_group(h, cgroup, oom_memcg);
    let victim_task = task(proc_root, victim);
    let procs = read_bounded(&dir.join("cgroup.procs"), MAX_PROCS_BYTES);
    let mut seen = Seen {
        victim: victim_task,
        init: None,
        tasks: None,
        oom_group,
    };
    if let Some(text) = procs {
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        seen.tasks = Some(pids.len());
        // A task outside the agent's pid namespace is listed as 0 (an agent in a pod without
        // the host's pid namespace): counted, but it cannot be read.
        seen.init = pids
            .iter()
            .filter(|&&p| p > 0)
            .take(MAX_TASKS)
            .filter_map(|&p| task(proc_root, p))
            .find(NsTask::is_namespace_init);
    }
    seen
}

/// As the kernel decides a group kill (`mem_cgroup_get_oom_group()`): set when the victim's
/// cgroup or an ancestor up to the OOM domain has `memory.oom.group` 1. `None` on cgroup v1
/// and when the victim's own file cannot be read.
pub fn oom_group(h: &MemoryHierarchy, cgroup: &str, oom_memcg: Option<&str>) -> Option<bool> {
    if h.version == Version::V1 {
        return None;
    }
    let domain = oom_memcg.map(|d| d.trim_end_matches('/'));
    let mut path = cgroup.trim_end_matches('/');
    let mut set = None;
    while !path.is_empty() {
        let v =
            read_bounded(&h.dir(path).join("memory.oom.group"), 64).and_then(|s| match s.trim() {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            });
        match (v, set) {
            (None, None) => return None,
            (v, s) => set = Some(s.unwrap_or(false) || v == Some(true)),
        }
        if Some(path) == domain {
            break;
        }
        path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    set
}

/// `/proc/<pid>/status` as an [`NsTask`]; `None` when gone or without an `NSpid` line
/// (kernels before 4.1).
fn task(proc_root: &Path, pid: i32) -> Option<NsTask> {
    let text = read_bounded(
        &proc_root.join(pid.to_string()).join("status"),
        MAX_STATUS_BYTES,
    )?;
    parse_status(pid, &text)
}

/// The `Name` and `NSpid` lines of a status file.
pub fn parse_status(pid: i32, text: &str) -> Option<NsTask> {
    let mut comm = None;
    let mut nspid = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Name:") {
            comm = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            let ids: Option<Vec<i32>> = v.split_whitespace().map(|n| n.parse().ok()).collect();
            nspid = ids.filter(|ids| !ids.is_empty());
        }
    }
    Some(NsTask {
        pid,
        nspid: nspid?,
        comm,
    })
}

fn read_bounded(path: &Path, max: u64) -> Option<String> {
    let mut s = String::new();
    File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pid: i32, nspid: &[i32], comm: &str) -> NsTask {
        NsTask {
            pid,
            nspid: nspid.to_vec(),
            comm: Some(comm.into()),
        }
    }

    fn seen(victim: Option<NsTask>, init: Option<NsTask>, tasks: usize) -> Seen {
        Seen {
            victim,
            init,
            tasks: Some(tasks),
            oom_group: None,
        }
    }

    #[test]
    fn status_gives_comm_and_nspid() {
        let s = "Name:\tworker\nTgid:\t900\nNSpid:\t900\t7\nPPid:\t1\n";
        assert_eq!(parse_status(900, s), Some(t(900, &[900, 7], "worker")));
        assert_eq!(parse_status(1, "Name:\tx\n"), None);
        assert_eq!(parse_status(1, "Name:\tx\nNSpid:\t1\tjunk\n"), None);
    }

    #[test]
    fn a_child_killed_while_init_lives_is_partial() {
        let s = seen(None, Some(t(800, &[800, 1], "sh")), 1);
        let k = decide(true, None, &s);
        assert_eq!(k.partial_kill, Some(true));
        assert_eq!(k.container_init.unwrap().pid, 800);
        // The victim still exiting, another task is init: partial too.
        let s = seen(
            Some(t(801, &[801, 5], "w")),
            Some(t(800, &[800, 1], "sh")),
            2,
        );
        assert_eq!(decide(true, None, &s).partial_kill, Some(true));
    }

    #[test]
    fn the_init_killed_or_the_cgroup_emptied_is_not_partial() {
        let init = t(800, &[800, 1], "app");
        let k = decide(true, None, &seen(Some(init.clone()), None, 1));
        assert_eq!(k.partial_kill, Some(false));
        assert_eq!(k.container_init.unwrap().comm.as_deref(), Some("app"));
        let k = decide(true, None, &seen(Some(init.clone()), Some(init), 1));
        assert_eq!(k.partial_kill, Some(false));
        let k = decide(true, None, &seen(None, None, 0));
        assert_eq!((k.partial_kill, k.container_init), (Some(false), None));
    }

    #[test]
    fn group_kills_are_not_partial() {
        let s = Seen {
            oom_group: Some(true),
            ..seen(None, Some(t(800, &[800, 1], "sh")), 1)
        };
        let k = decide(true, None, &s);
        assert_eq!((k.partial_kill, k.oom_group), (Some(false), Some(true)));
        let s = seen(None, Some(t(800, &[800, 1], "sh")), 1);
        assert_eq!(decide(true, Some(true), &s).partial_kill, Some(false));
    }

    #[test]
    fn unknown_outside_containers_and_without_a_namespace() {
        let s = seen(None, Some(t(800, &[800, 1], "sh")), 1);
        assert_eq!(decide(false, None, &s).partial_kill, None);
        // Tasks left, all in the host's pid namespace: no init to judge by.
        let s = seen(Some(t(900, &[900], "w")), None, 3);
        assert_eq!(decide(true, None, &s).partial_kill, None);
        let unread = Seen::default();
        assert_eq!(decide(true, None, &unread), ContainerKill::default());
    }

    fn ns(level: u32, ns_tgid: i32, init_memcg: u64) -> PidNsAtKill {
        PidNsAtKill {
            level,
            ns_tgid,
            init: Some(crate::record::NsInit {
                tgid: 800,
                comm: "sh".into(),
                memcg_id: init_memcg,
            }),
        }
    }

    const VICTIM: Victim<'static> = Victim {
        tgid: 801,
        comm: Some("worker"),
        memcg_id: Some(7),
    };

    #[test]
    fn at_the_kill_a_child_with_its_init_in_the_cgroup_is_partial() {
        let k = decide_at_kill(None, None, VICTIM, &ns(1, 5, 7)).unwrap();
        assert_eq!(k.partial_kill, Some(true));
        assert_eq!(k.container_init.unwrap().pid, 800);
        let k = decide_at_kill(Some(false), Some(true), VICTIM, &ns(1, 5, 7)).unwrap();
        assert_eq!(k.partial_kill, Some(false), "a memory.oom.group kill");
        let k = decide_at_kill(Some(true), None, VICTIM, &ns(1, 5, 7)).unwrap();
        assert_eq!(k.partial_kill, Some(false), "a group member");
    }

    #[test]
    fn at_the_kill_the_init_itself_is_not_partial() {
        let k = decide_at_kill(None, None, VICTIM, &ns(2, 1, 99)).unwrap();
        assert_eq!(k.partial_kill, Some(false));
        let init = k.container_init.unwrap();
        assert_eq!((init.pid, init.comm.as_deref()), (801, Some("worker")));
    }

    #[test]
    fn at_the_kill_undecided_in_the_host_namespace_or_with_the_init_elsewhere() {
        assert_eq!(decide_at_kill(None, None, VICTIM, &ns(0, 801, 7)), None);
        assert_eq!(decide_at_kill(None, None, VICTIM, &ns(1, 5, 8)), None);
        let no_id = Victim {
            memcg_id: None,
            ..VICTIM
        };
        assert_eq!(decide_at_kill(None, None, no_id, &ns(1, 5, 7)), None);
        let unread = PidNsAtKill {
            init: None,
            ..ns(1, 5, 7)
        };
        assert_eq!(decide_at_kill(None, None, VICTIM, &unread), None);
    }

    #[test]
    fn observe_reads_a_real_looking_tree() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("cg/kubepods/podx/c1");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cgroup.procs"), "801\n800\n").unwrap();
        let hidden = root.path().join("cg/kubepods/podx/c2");
        std::fs::create_dir_all(&hidden).unwrap();
        std::fs::write(hidden.join("cgroup.procs"), "0\n0\n").unwrap();
        std::fs::write(cg.join("memory.oom.group"), "0\n").unwrap();
        let proc_root = root.path().join("proc");
        for (pid, status) in [
            (800, "Name:\tsh\nNSpid:\t800\t1\n"),
            (801, "Name:\tworker\nNSpid:\t801\t2\n"),
        ] {
            let d = proc_root.join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("status"), status).unwrap();
        }
        let h = MemoryHierarchy {
            version: Version::V2,
            mount: root.path().join("cg"),
        };
        let s = observe(
            &h,
            &proc_root,
            "/kubepods/podx/c1",
            Some("/kubepods/podx/c1"),
            999,
        );
        assert_eq!(s.tasks, Some(2));
        assert_eq!(s.oom_group, Some(false));
        assert_eq!(s.init.as_ref().map(|i| i.pid), Some(800));
        assert_eq!(s.victim, None);
        // Set on the pod's cgroup, within the OOM domain: a group kill; above it: not.
        std::fs::write(root.path().join("cg/kubepods/podx/memory.oom.group"), "1").unwrap();
        let pod = Some("/kubepods/podx");
        let s = observe(&h, &proc_root, "/kubepods/podx/c1", pod, 999);
        assert_eq!(s.oom_group, Some(true));
        let c = Some("/kubepods/podx/c1");
        assert_eq!(
            observe(&h, &proc_root, "/kubepods/podx/c1", c, 999).oom_group,
            Some(false)
        );
        let v1 = MemoryHierarchy {
            version: Version::V1,
            ..h.clone()
        };
        // Tasks the agent's pid namespace cannot see: there, but no init to judge by.
        let s = observe(&h, &proc_root, "/kubepods/podx/c2", None, 999);
        assert_eq!((s.tasks, &s.init), (Some(2), &None));
        assert_eq!(decide(true, None, &s).partial_kill, None);
        let s = observe(&v1, &proc_root, "/kubepods/podx/c1", c, 801);
        assert_eq!(s.oom_group, None);
        assert_eq!(s.victim.map(|v| v.nspid), Some(vec![801, 2]));
    }
}
