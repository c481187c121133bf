//! Who and where a victim is, as names: its container runtime, its pod's QoS class, and the OOM
//! domain (which limit the kill hit). Derived in `enrich`; named here so that every stage can
//! carry them.
use serde::Serialize;

/// The container runtime a cgroup name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "crio",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// The pod's QoS class, from the kubelet's cgroup level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        }
    }
}

/// Which limit an OOM kill hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OomDomain {
    /// A container's own memory limit: Kubernetes, or a plain Docker/podman container.
    Container,
    /// A Kubernetes pod's memory limit (the sum of its containers', plus overhead), or a
    /// podman pod's.
    Pod,
    /// A Kubernetes QoS level (`burstable`, `besteffort`).
    Qos,
    /// The kubepods cgroup: node allocatable memory for all pods.
    Kubepods,
    /// A memory cgroup outside Kubernetes.
    System,
    /// The whole machine (`CONSTRAINT_NONE`).
    Global,
    /// The allocating task's cpuset memory nodes.
    Cpuset,
    /// A NUMA memory policy's node set.
    Mempolicy,
}

impl OomDomain {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
            Self::Qos => "qos",
            Self::Kubepods => "kubepods",
            Self::System => "system",
            Self::Global => "global",
            Self::Cpuset => "cpuset",
            Self::Mempolicy => "mempolicy",
        }
    }
}
