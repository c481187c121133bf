//! The JSON lines of SIGKILL attribution: `{"type":"sigkill"}` for each SIGKILL to a task in a
//! non-root memory cgroup, `{"type":"container_killed"}` when a container's init exits after
//! one (both in `docs/events.md`).
use std::collections::BTreeMap;

use serde::Serialize;

use super::kind::SenderKind;
use crate::record::{Runtime, Workload};

/// Who a task is: its ids, cgroup and the container or pod its cgroup names.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Party {
    pub pid: i32,
    pub tgid: Option<i32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub container_id: Option<String>,
    pub container_runtime: Option<Runtime>,
    pub container_name: Option<String>,
    pub container_image: Option<String>,
}

impl Party {
    /// The identity fields from an enriched workload.
    pub fn set_workload(&mut self, w: Workload) {
        self.namespace = w.namespace;
        self.pod = w.pod;
        self.pod_uid = w.pod_uid;
        self.container = w.container;
        self.container_id = w.container_id;
        self.container_runtime = w.container_runtime;
        self.container_name = w.container_name;
        self.container_image = w.container_image;
    }

    /// The metric's labels: namespace, pod, container (the runtime's name outside Kubernetes).
    pub fn labels(&self) -> [String; 3] {
        let c = self
            .container
            .clone()
            .or_else(|| self.container_name.clone());
        [
            self.namespace.clone().unwrap_or_default(),
            self.pod.clone().unwrap_or_default(),
            c.unwrap_or_default(),
        ]
    }
}

/// The sender: a [`Party`] and the executable it ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SenderParty {
    #[serde(flatten)]
    pub party: Party,
    /// The executable's path (from the sender's own root: a containerised sender's path is
    /// inside its container), innermost components as the kernel had them at the signal.
    pub exe: Option<String>,
}

/// `{"type":"sigkill", ...}`.
#[derive(Clone, Debug, Serialize)]
pub struct SigkillLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub ktime_ns: u64,
    pub host: String,
    /// Agent-local number of this SIGKILL (`container_killed` refers to it).
    pub sigkill_id: u64,
    pub target: Party,
    /// The target is its container's init (pid 1 in its pid namespace): its death ends the
    /// container. `null` when the pid namespace was not read.
    pub container_init: Option<bool>,
    pub sender: SenderParty,
    pub sender_kind: SenderKind,
    /// The OOM kill this SIGKILL is (`oom_kernel`, `oom_group`): its event's `oom_id`.
    pub oom_id: Option<u64>,
    /// `si_code`: 0 `SI_USER` (kill(2)), 128 `SI_KERNEL` (the kernel's own), negative for
    /// `tkill`/`sigqueue`.
    pub si_code: Option<i32>,
    /// The signal was queued (not ignored, not already pending).
    pub delivered: Option<bool>,
    /// Field group → where it came from: `target`, `target_cgroup` (when read from /proc),
    /// `sender`, `sender_exe`, `container_init`, `sender_kind`.
    pub sources: BTreeMap<&'static str, &'static str>,
}

/// `{"type":"container_killed", ...}`: a container's init exited after a SIGKILL.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerKilledLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// When the init exited.
    pub ktime_ns: u64,
    pub host: String,
    /// The init (its process as the host sees it).
    pub init: Party,
    /// The SIGKILL that ended it (its `sigkill` record) and who sent it.
    pub sigkill_id: u64,
    pub sender_kind: SenderKind,
    pub sender: SenderParty,
    pub oom_id: Option<u64>,
    pub kill_to_exit_ns: Option<u64>,
    /// Partial OOM kills (`partial_kill: true`) the agent saw in this container's cgroup before.
    pub partial_oom_kills_before: u64,
    pub last_partial_oom_id: Option<u64>,
    /// The cgroup's own count of OOM kills (`memory.events` `oom_kill`, or v1
    /// `memory.oom_control`), read at the exit: what the runtime's OOM watch saw.
    pub cgroup_oom_kills: Option<u64>,
    /// What containerd's CRI and Docker will report for this exit (`reason`/`OOMKilled`):
    /// `OOMKilled` when the cgroup saw an OOM kill during the container's life, else `Error`
    /// (exit code 137).
    pub runtime_reason: &'static str,
    pub exit_code: i32,
    /// One sentence for `kubectl describe pod` readers.
    pub explanation: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn party() -> Party {
        Party {
            pid: 7,
            tgid: Some(7),
            comm: Some("sleep".into()),
            cgroup: Some("/docker/abc".into()),
            ..Party::default()
        }
    }

    fn sigkill() -> SigkillLine {
        SigkillLine {
            kind: "sigkill",
            time: "t".into(),
            ktime_ns: 1,
            host: "h".into(),
            sigkill_id: 0,
            target: party(),
            container_init: Some(true),
            sender: SenderParty {
                party: party(),
                exe: Some("/usr/sbin/runc".into()),
            },
            sender_kind: SenderKind::Runtime,
            oom_id: None,
            si_code: Some(0),
            delivered: Some(true),
            sources: BTreeMap::from([("target", "signal_btf")]),
        }
    }

    /// Every key of both lines (and of their objects) is in docs/events.md's tables.
    #[test]
    fn every_field_is_documented() {
        let docs = include_str!("../../../../docs/events.md");
        let k = sigkill();
        let end = ContainerKilledLine {
            kind: "container_killed",
            time: "t".into(),
            ktime_ns: 2,
            host: "h".into(),
            init: party(),
            sigkill_id: 0,
            sender_kind: SenderKind::Runtime,
            sender: k.sender.clone(),
            oom_id: None,
            kill_to_exit_ns: Some(1),
            partial_oom_kills_before: 0,
            last_partial_oom_id: None,
            cgroup_oom_kills: Some(0),
            runtime_reason: "Error",
            exit_code: 137,
            explanation: "x".into(),
        };
        let mut missing = Vec::new();
        for v in [
            serde_json::to_value(&k).unwrap(),
            serde_json::to_value(&end).unwrap(),
        ] {
            let obj = v.as_object().unwrap();
            for (key, inner) in obj {
                let mut keys = vec![key.clone()];
                if key != "sources" {
                    if let Some(o) = inner.as_object() {
                        keys.extend(o.keys().cloned());
                    }
                }
                for key in keys {
                    if !docs.contains(&format!("`{key}`")) {
                        missing.push(key);
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in docs/events.md: {missing:?}");
    }
}
