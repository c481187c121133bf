//! Whether an OOM kill in a container took the whole container or left it running (a *partial*
//! kill, which kubelet and the runtimes do not see; documented in `docs/events.md`).
use serde::Serialize;

/// A container's init process: the task whose pid is 1 in the container's pid namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerInit {
    /// Its process id as the agent sees it (the host's pid namespace).
    pub pid: i32,
    pub comm: Option<String>,
}

/// The partial-kill fields of an event, flattened into it; all `null` when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContainerKill {
    /// `true`: the victim was not the container's init and the container kept running (no
    /// restart, no `OOMKilled` status); `false`: the kill took the container (its init was the
    /// victim, a `memory.oom.group` kill took every task, or no task was left in its cgroup);
    /// `null` outside containers or when it cannot be known.
    pub partial_kill: Option<bool>,
    /// The container's init, when one was found in the victim's cgroup (or was the victim).
    pub container_init: Option<ContainerInit>,
    /// The victim cgroup's `memory.oom.group` right after the kill (cgroup v2 only; `null` on
    /// v1, where the file does not exist).
    pub oom_group: Option<bool>,
    /// The victim's pid namespace as the kernel had it at the kill (read by
    /// `tp_btf:mark_victim`); the fields above are decided from it when present.
    #[serde(skip)]
    pub at_kill: Option<PidNsAtKill>,
}

/// The victim's pid namespace at the kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidNsAtKill {
    /// 0: the host's (initial) pid namespace.
    pub level: u32,
    /// The victim's process id in that namespace (1: it is the namespace's init).
    pub ns_tgid: i32,
    /// The namespace's init (`child_reaper`), when read.
    pub init: Option<NsInit>,
}

/// A pid namespace's init as read at the kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsInit {
    /// Its process id as the host sees it.
    pub tgid: i32,
    pub comm: String,
    /// Its memory cgroup's id.
    pub memcg_id: u64,
}
