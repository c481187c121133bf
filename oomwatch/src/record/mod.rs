//! The OOM record: one per victim, and its JSON form (documented in `docs/events.md`).
//!
//! Fields the agent could not learn are `None` and rendered as JSON `null`; they are never
//! guessed. `sources` says, per group of fields, where the values came from.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

pub mod candidate;
pub mod container_kill;
pub mod domain_memory;
pub mod source;
pub mod stack;
pub mod workload;

pub use candidate::Candidate;
pub use container_kill::{ContainerInit, ContainerKill, NsInit, PidNsAtKill};
pub use domain_memory::DomainMemory;
pub use source::{ProbeId, Source};
pub use stack::{Frame, StackMode, TriggerStack};
pub use workload::{OomDomain, QosClass, Runtime};

/// A task other than the victim (the one the killer chose).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
}

/// The victim's identity as one object, the same shape as `trigger` (the same values as the
/// event's top-level `pid`, `tgid`, `comm`, `cgroup`, `cgroup_id`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Victim {
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    /// Its Kubernetes pod (the event's `namespace`, `pod`, `pod_uid`).
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
}

/// The task whose allocation invoked the OOM killer, and its memory cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    /// Its memory cgroup path; `null` when no source names it.
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    /// Its Kubernetes pod, from its cgroup path and the runtime's bundle files (see
    /// [`Workload`]); `null` outside Kubernetes or when unknown.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    /// Its kernel and user stacks when the victim was marked (`--stacks`); `null` when not
    /// captured.
    pub stack: Option<TriggerStack>,
}

/// Who the victim is beyond its pid: Kubernetes identity from its cgroup path and the container
/// runtime's bundle files on the node (no API server), or the systemd unit outside Kubernetes.
/// Every field is `null` when it cannot be known; unknown cgroup layouts give no identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    /// `containerd`, `crio`, `docker` or `podman`.
    pub container_runtime: Option<Runtime>,
    /// The runtime's own name of the container (`docker ps`/`podman ps` NAMES).
    pub container_name: Option<String>,
    /// The image the container was created from, as the runtime names it.
    pub container_image: Option<String>,
    /// Compose labels `com.docker.compose.project` and `com.docker.compose.service`.
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub qos_class: Option<QosClass>,
    /// Which limit the OOM hit: `container`, `pod`, `qos`, `kubepods` (node allocatable),
    /// `system` (a memory cgroup outside Kubernetes), `global` (the host ran out), `cpuset` or
    /// `mempolicy`.
    pub oom_domain: Option<OomDomain>,
    /// A global or node-level OOM whose trigger runs in another pod than the victim.
    pub noisy_neighbour: Option<bool>,
    /// Outside Kubernetes: the innermost systemd unit and slice of the victim's cgroup.
    pub systemd_unit: Option<String>,
    pub systemd_slice: Option<String>,
}

/// Why the kernel killed: the OOM invocation that chose this victim. Victims of one invocation
/// (a `memory.oom.group` kill) share it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomContext {
    /// `CONSTRAINT_NONE` (global), `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY` or
    /// `CONSTRAINT_MEMCG`, as the kernel names them.
    pub constraint: Option<String>,
    /// The failed allocation's GFP mask, e.g. `0xcc0`.
    pub gfp_mask: Option<String>,
    /// The same as flag names, as the kernel prints them (`["GFP_KERNEL"]`).
    pub gfp_flags: Option<Vec<String>>,
    /// The failed allocation's order (pages = 2^order); -1 for a manual OOM kill (sysrq f),
    /// which is not for an allocation.
    pub order: Option<i32>,
    /// Size of the OOM domain in pages (the memcg limit, or all of RAM + swap).
    pub totalpages: Option<u64>,
    /// The chosen task's badness points; `None` when the kernel ranked no task (it killed the
    /// allocating task, see [`OomContext::settle_allocating_task_kill`]).
    pub badness: Option<i64>,
    /// The task the killer chose (for group kills, the other victims are killed with it).
    pub chosen: Option<Task>,
    /// The memory cgroup that hit its limit (`oc->memcg`); `null` for a global OOM.
    pub oom_memcg: Option<String>,
    pub oom_memcg_id: Option<u64>,
    /// The kernel's `message` argument: `Out of memory` or `Memory cgroup out of memory`.
    pub message: Option<String>,
    /// Killed as a member of a `memory.oom.group`, not as the chosen task itself.
    pub group_kill: Option<bool>,
    /// The memory cgroup of the task whose allocation invoked the killer (goes to `trigger`).
    #[serde(skip)]
    pub trigger_cgroup: Option<String>,
    #[serde(skip)]
    pub trigger_cgroup_id: Option<u64>,
    /// The tasks the killer scored, the chosen one first, then by points (at most
    /// `--candidates`); `null` without a source (the `oom_badness` probe, else the kernel's
    /// task dump).
    pub candidates: Option<Vec<Candidate>>,
    /// One sentence: why this victim.
    pub explanation: Option<String>,
    /// The chosen task's pid and memory cgroup as the report names them (`task_memcg=`): the
    /// victim's cgroup when its directory is gone before the agent could look its id up (a
    /// container's cgroup removed right after the kill).
    #[serde(skip)]
    pub chosen_memcg: Option<(i32, String)>,
    /// Tasks of the kernel's task dump left out of `candidates` because their points could not
    /// be computed (see [`crate::explain::candidates::unscored`]).
    #[serde(skip)]
    pub unscored: usize,
    /// The domain's size in pages as estimated from the report (for `explanation`; the exact
    /// `totalpages` comes from a probe).
    #[serde(skip)]
    pub estimated_totalpages: Option<u64>,
    /// The domain's memory as the kernel's report gave it (goes to `domain_memory`).
    #[serde(skip)]
    pub domain_memory: Option<DomainMemory>,
}

impl OomContext {
    /// Whether the kernel killed the allocating task itself (`vm.oom_kill_allocating_task=1`:
    /// its message says so) instead of choosing by badness; `None` without the message. Such a
    /// kill ranks nothing, so a badness read from the invocation (`oc->chosen_points` is never
    /// set on that path: 0) or computed from the task dump would be a rank the kernel never
    /// gave: it is dropped.
    pub fn settle_allocating_task_kill(&mut self) -> Option<bool> {
        let allocating = self
            .message
            .as_deref()
            .map(|m| m.contains("oom_kill_allocating_task"));
        if allocating == Some(true) {
            self.badness = None;
        }
        allocating
    }

    /// A manual OOM kill (sysrq f): the only invocation with order -1 (`is_sysrq_oom()`).
    pub fn manual(&self) -> bool {
        self.order == Some(-1) && self.oom_memcg.is_none()
    }
}

/// One OOM victim.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomEvent {
    /// Wall-clock time of the kill (derived from the kernel's monotonic timestamp).
    #[serde(serialize_with = "rfc3339_nanos")]
    pub time: SystemTime,
    /// `bpf_ktime_get_ns()` at the kill: CLOCK_MONOTONIC, ns.
    pub ktime_ns: u64,
    pub host: String,
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: Option<String>,
    pub uid: Option<u32>,
    /// Bytes.
    pub total_vm: Option<u64>,
    pub anon_rss: Option<u64>,
    pub file_rss: Option<u64>,
    pub shmem_rss: Option<u64>,
    pub pgtables: Option<u64>,
    pub oom_score_adj: Option<i16>,
    /// The victim's memory cgroup, as a path below the memory controller's mount.
    pub cgroup: Option<String>,
    /// Kernfs id (inode number) of that cgroup.
    pub cgroup_id: Option<u64>,
    /// The task running when the victim was marked (the allocation that invoked the killer).
    pub trigger: Option<Trigger>,
    /// The victim as one object (see [`Victim`]).
    pub victim: Victim,
    /// `vm.panic_on_oom` when the event was built (0, 1 or 2).
    pub panic_on_oom: Option<u8>,
    /// `vm.oom_kill_allocating_task` when the event was built (0 or 1).
    pub oom_kill_allocating_task: Option<u8>,
    /// The kernel killed the allocating task itself (`vm.oom_kill_allocating_task=1`) instead of
    /// choosing by badness: its message says `(oom_kill_allocating_task)`.
    pub allocating_task_kill: Option<bool>,
    /// Recorded from the kernel log after the fact: a kill that happened while the agent was
    /// not running (see `--state-dir`), or listed by `oomwatch history`.
    pub replayed: bool,
    /// Who killed: `"kernel"` for the kernel's OOM killer, else the comm of the userspace OOM
    /// killer whose SIGKILL this is (`earlyoom`, `systemd-oomd`, ...; see `crate::kill_outcome`).
    pub killer: Option<String>,
    /// A userspace killer's pid (tgid) and memory cgroup; `null` for kernel kills.
    pub killer_pid: Option<i32>,
    pub killer_cgroup: Option<String>,
    /// Agent-local number of the OOM invocation; shared by all victims of one invocation.
    pub oom_id: Option<u64>,
    /// The invocation's context (why this victim), flattened into the event; all `null` when no
    /// source of it is available.
    #[serde(flatten)]
    pub oom: OomContext,
    /// The OOM domain's memory right after the kill: the limiting cgroup's `memory.stat`,
    /// limit and swap, or `/proc/meminfo` for a global OOM; `null` when the domain is unknown.
    pub domain_memory: Option<DomainMemory>,
    /// Kubernetes or systemd identity and the OOM domain, flattened into the event.
    #[serde(flatten)]
    pub workload: Workload,
    /// Whether a kill in a container left it running (`partial_kill`, `container_init`,
    /// `oom_group`), flattened into the event.
    #[serde(flatten)]
    pub container_kill: ContainerKill,
    /// Field group → where it came from. Groups: `pid`, `tgid`, `comm`, `uid`, `memory`,
    /// `pgtables`, `oom_score_adj`, `cgroup`, `trigger`, `oom`, `partial_kill`, `oom_group`.
    pub sources: BTreeMap<&'static str, Source>,
}

/// The `killer` of the kernel's own OOM kills.
pub const KILLER_KERNEL: &str = "kernel";

fn rfc3339_nanos<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*t))
}

impl OomEvent {
    /// Sets [`OomEvent::victim`] from the top-level victim fields (`pid`, `tgid`, `comm`,
    /// `cgroup`, `cgroup_id`); its pod is filled by enrichment.
    pub fn sync_victim(&mut self) {
        self.victim = Victim {
            pid: self.pid,
            tgid: self.tgid,
            comm: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            cgroup_id: self.cgroup_id,
            ..Victim::default()
        };
    }

    /// A victim known only by pid and kernel timestamp: every other field absent, to be filled
    /// by whoever learns it.
    pub fn new(pid: i32, ktime_ns: u64, time: SystemTime, host: String) -> Self {
        Self {
            time,
            ktime_ns,
            host,
            pid,
            tgid: None,
            comm: None,
            uid: None,
            total_vm: None,
            anon_rss: None,
            file_rss: None,
            shmem_rss: None,
            pgtables: None,
            oom_score_adj: None,
            cgroup: None,
            cgroup_id: None,
            trigger: None,
            victim: Victim::default(),
            panic_on_oom: None,
            oom_kill_allocating_task: None,
            allocating_task_kill: None,
            replayed: false,
            killer: Some(KILLER_KERNEL.to_string()),
            killer_pid: None,
            killer_cgroup: None,
            oom_id: None,
            oom: OomContext::default(),
            domain_memory: None,
            workload: Workload::default(),
            container_kill: ContainerKill::default(),
            sources: BTreeMap::new(),
        }
    }

    /// Seconds since the Unix epoch, for `oomwatch_last_oom_kill_timestamp_seconds`.
    pub fn unix_seconds(&self) -> f64 {
        self.time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    }

    /// One JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serializing this type cannot fail: every field is a plain value or a string map.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OomEvent {
        let mut sources = BTreeMap::new();
        sources.insert("memory", Source::MarkVictimTracepoint);
        sources.insert("tgid", Source::MarkVictimBtf);
        let time = SystemTime::UNIX_EPOCH + Duration::new(1_763_760_000, 123_456_789);
        OomEvent {
            tgid: Some(4242),
            comm: Some("python3".into()),
            uid: Some(0),
            total_vm: Some(1 << 20),
            anon_rss: Some(65_536 * 1024),
            file_rss: Some(0),
            shmem_rss: None,
            pgtables: Some(4096),
            oom_score_adj: Some(500),
            cgroup: Some("/t".into()),
            cgroup_id: Some(77),
            sources,
            ..OomEvent::new(4242, 42, time, "node-1".into())
        }
    }

    #[test]
    fn json_has_stable_field_names_and_nulls_for_absent() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json_line()).unwrap();
        assert_eq!(v["time"], "2025-11-21T21:20:00.123456789Z");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["comm"], "python3");
        assert_eq!(v["anon_rss"], 65_536 * 1024);
        assert!(v["shmem_rss"].is_null());
        assert!(v["trigger"].is_null());
        assert_eq!(v["oom_score_adj"], 500);
        assert_eq!(v["sources"]["memory"], "tracepoint:oom/mark_victim");
        assert_eq!(v["sources"]["tgid"], "tp_btf:mark_victim");
    }

    #[test]
    fn unix_seconds_keeps_fraction() {
        assert!((sample().unix_seconds() - 1_763_760_000.123_456_7).abs() < 1e-6);
    }

    /// The event's schema: every top-level field the JSON carries has its row in
    /// `docs/events.md`, and the Docker/podman identity fields are among them.
    #[test]
    fn every_event_field_is_documented() {
        let doc = include_str!("../../../docs/events.md");
        let json = serde_json::to_value(sample()).expect("serialize");
        let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
        for key in [
            "container_name",
            "container_image",
            "compose_project",
            "compose_service",
        ] {
            assert!(keys.iter().any(|k| *k == key), "{key} not in the event");
        }
        let missing: Vec<&&String> = keys
            .iter()
            .filter(|k| !doc.contains(&format!("| `{k}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "fields without a row in docs/events.md: {missing:?}"
        );
    }

    /// The documented example event (docs/events.md, also in the README) carries every field
    /// an event has, the trigger's stack and its frames included.
    #[test]
    fn the_documented_example_carries_every_field() {
        let doc = include_str!("../../../docs/events.md");
        let line = doc
            .lines()
            .find(|l| l.starts_with("{\"time\""))
            .expect("an example event");
        let example: serde_json::Value = serde_json::from_str(line).expect("example is JSON");
        let frame = Frame {
            symbol: Some("out_of_memory".into()),
            module: Some("vmlinux".into()),
            offset: 1,
            ..Frame::default()
        };
        let mut ev = sample();
        ev.trigger = Some(Trigger {
            pid: 1,
            tgid: 1,
            comm: "t".into(),
            stack: Some(TriggerStack {
                kernel: vec![frame.clone()],
                user: vec![frame],
                summary: None,
            }),
            ..Trigger::default()
        });
        let got = serde_json::to_value(&ev).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&example), keys(&got));
        for path in [
            "/trigger",
            "/trigger/stack",
            "/trigger/stack/kernel/0",
            "/trigger/stack/user/0",
        ] {
            let (e, g) = (example.pointer(path), got.pointer(path));
            assert_eq!(e.map(keys), g.map(keys), "{path}");
        }
    }
}
