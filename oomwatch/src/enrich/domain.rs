//! Which limit an OOM kill hit: the OOM domain.
//!
//! From the kernel's `constraint` (as `oom-kill:constraint=…` and the tracepoints name it):
//!
//! | constraint | domain |
//! | --- | --- |
//! | `CONSTRAINT_NONE` | [`Global`](OomDomain::Global): the whole machine ran out |
//! | `CONSTRAINT_CPUSET` | [`Cpuset`](OomDomain::Cpuset): the task's cpuset memory nodes |
//! | `CONSTRAINT_MEMORY_POLICY` | [`Mempolicy`](OomDomain::Mempolicy): an `mbind`/`set_mempolicy` node set |
//! | `CONSTRAINT_MEMCG` | by the limiting memory cgroup (`oom_memcg`), below |
//!
//! A memory cgroup limit is classified by the Kubernetes level of `oom_memcg`
//! ([`identity::level`]): a container's cgroup, or any cgroup below it (crun applies the
//! limits to its `container` sub-cgroup) → [`Container`](OomDomain::Container); a pod's →
//! [`Pod`](OomDomain::Pod); a QoS level's → [`Qos`](OomDomain::Qos); the kubepods level's
//! (node allocatable) → [`Kubepods`](OomDomain::Kubepods); a cgroup outside Kubernetes
//! (a systemd unit or slice, a standalone Docker container) → [`System`](OomDomain::System).
//! A cgroup under a kubepods level that is none of these (CRI-O's conmon cgroup, an unknown
//! layout) gives None, as does an unknown `oom_memcg`, the root `/`, or a malformed path.
//! When the constraint is unknown (absent, or a name this code does not know), an `oom_memcg`
//! other than `/` is still classified the same way: only memcg OOMs name one.
//!
//! The limiting cgroup is the victim's cgroup or an ancestor of it. The victim's cgroup is
//! not needed to classify, and inconsistent input (a victim outside `oom_memcg`) is
//! classified from `oom_memcg` alone.
use super::identity::{self, Level, PathClass};
use crate::record::OomDomain;

/// The whole node, or a node-level Kubernetes limit shared by many pods.
fn is_shared(d: OomDomain) -> bool {
    matches!(d, OomDomain::Global | OomDomain::Kubepods | OomDomain::Qos)
}
/// `constraint` is the kernel's name (`CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`,
/// `CONSTRAINT_MEMORY_POLICY`, `CONSTRAINT_MEMCG`). `oom_memcg` is the limiting memory cgroup
/// path (None for non-memcg OOMs or when unknown), `victim_cgroup` the victim's (not needed:
/// see the module docs).
pub fn classify(
    constraint: Option<&str>,
    oom_memcg: Option<&str>,
    victim_cgroup: Option<&str>,
) -> Option<OomDomain> {
    let _ = victim_cgroup;
    match constraint {
        Some("CONSTRAINT_NONE") => Some(OomDomain::Global),
        Some("CONSTRAINT_CPUSET") => Some(OomDomain::Cpuset),
        Some("CONSTRAINT_MEMORY_POLICY") => Some(OomDomain::Mempolicy),
        // The root memory cgroup has no limit to hit.
        _ => oom_memcg.filter(|m| *m != "/").and_then(memcg_domain),
    }
}

fn memcg_domain(oom_memcg: &str) -> Option<OomDomain> {
    match identity::class(oom_memcg) {
        PathClass::Level(Level::Container) | PathClass::BelowContainer => {
            Some(OomDomain::Container)
        }
        PathClass::Level(Level::Pod) => Some(OomDomain::Pod),
        PathClass::Level(Level::Qos) => Some(OomDomain::Qos),
        PathClass::Level(Level::Kubepods) => Some(OomDomain::Kubepods),
        PathClass::NotKubernetes => Some(OomDomain::System),
        PathClass::OtherKubernetes | PathClass::Invalid => None,
    }
}

/// Where a task is, for telling neighbours apart.
#[derive(PartialEq, Eq)]
enum Whereabouts {
    Pod(String),
    OutsideKubernetes,
}

fn whereabouts(cgroup: &str) -> Option<Whereabouts> {
    if let Some(pod) = identity::parse(cgroup).pod {
        return Some(Whereabouts::Pod(pod.uid));
    }
    match identity::class(cgroup) {
        PathClass::NotKubernetes => Some(Whereabouts::OutsideKubernetes),
        // Kubernetes, but no pod (a qos or kubepods level, an unknown layout), or malformed.
        _ => None,
    }
}

/// A global or node-level (kubepods/qos) OOM whose trigger task is in a different pod than
/// the victim, or the trigger is outside Kubernetes while the victim is in a pod, or the
/// trigger is in a pod while the victim is outside Kubernetes. `Some(false)` when both are in
/// the same pod, or both outside Kubernetes. None when it cannot be told (either cgroup
/// unknown, malformed, or in Kubernetes but not in a pod) or the domain is not global or
/// node-level.
pub fn noisy_neighbour(
    domain: Option<OomDomain>,
    victim_cgroup: Option<&str>,
    trigger_cgroup: Option<&str>,
) -> Option<bool> {
    if !is_shared(domain?) {
        return None;
    }
    let victim = whereabouts(victim_cgroup?)?;
    let trigger = whereabouts(trigger_cgroup?)?;
    Some(victim != trigger)
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
