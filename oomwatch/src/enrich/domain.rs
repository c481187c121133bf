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
//! (node allocatable) → [`Kubepods`](OomDomain::Kubepods). Outside Kubernetes: a plain
//! container's cgroup (Docker `/docker/<id>`, podman `libpod-<id>`, a `--cgroup-parent` of one's
//! own with the id below it) or below it → [`Container`](OomDomain::Container); a podman pod's
//! cgroup → [`Pod`](OomDomain::Pod); any other cgroup (a systemd unit or slice, the parent a
//! container was given with `--cgroup-parent`) → [`System`](OomDomain::System).
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
        PathClass::Level(Level::Container)
        | PathClass::BelowContainer
        | PathClass::OutsideContainer => Some(OomDomain::Container),
        PathClass::Level(Level::Pod) | PathClass::PodmanPod => Some(OomDomain::Pod),
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
        PathClass::NotKubernetes | PathClass::OutsideContainer | PathClass::PodmanPod => {
            Some(Whereabouts::OutsideKubernetes)
        }
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
mod tests {
    //! Tests of [`super`]: every branch of [`classify`] and [`noisy_neighbour`].
    use super::*;

    const UID: &str = "7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e";
    const UID_: &str = "7c3d8a6e_2f41_4b9a_8e5d_0c1f2a3b4d5e";
    const UID2: &str = "0f9e8d7c-6b5a-4f3e-9d2c-1b0a9f8e7d6c";
    const STATIC_UID: &str = "a81259cef8e959c624df1d456e5d3297";
    const CID: &str = "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";
    const CID2: &str = "9c0abe51c6e6655d81de2d044d4fb194931f058c0426c67c7285d8f5657ed64a";

    const ALL: [OomDomain; 8] = [
        OomDomain::Container,
        OomDomain::Pod,
        OomDomain::Qos,
        OomDomain::Kubepods,
        OomDomain::System,
        OomDomain::Global,
        OomDomain::Cpuset,
        OomDomain::Mempolicy,
    ];

    const MEMCG: Option<&str> = Some("CONSTRAINT_MEMCG");

    fn sd_pod() -> String {
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice")
    }

    fn sd_container() -> String {
        format!("{}/crio-{CID}.scope", sd_pod())
    }

    fn fs_container(uid: &str, cid: &str) -> String {
        format!("/kubepods/besteffort/pod{uid}/{cid}")
    }

    #[test]
    fn as_str_matches_json() {
        for d in ALL {
            let json = serde_json::to_string(&d).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
        }
        assert_eq!(OomDomain::Mempolicy.as_str(), "mempolicy");
        assert_eq!(OomDomain::Kubepods.as_str(), "kubepods");
    }

    #[test]
    fn non_memcg_constraints_ignore_the_cgroups() {
        let c = sd_container();
        for memcg in [None, Some("/"), Some(c.as_str())] {
            for victim in [None, Some(c.as_str())] {
                let got = |k| classify(Some(k), memcg, victim);
                assert_eq!(got("CONSTRAINT_NONE"), Some(OomDomain::Global));
                assert_eq!(got("CONSTRAINT_CPUSET"), Some(OomDomain::Cpuset));
                assert_eq!(got("CONSTRAINT_MEMORY_POLICY"), Some(OomDomain::Mempolicy));
            }
        }
    }

    #[test]
    fn memcg_by_level() {
        let pod = sd_pod();
        let c = sd_container();
        let crun = format!("{c}/container");
        let fs = fs_container(UID, CID);
        let cases: Vec<(String, Option<OomDomain>)> = vec![
            (c.clone(), Some(OomDomain::Container)),
            (crun.clone(), Some(OomDomain::Container)),
            (format!("{fs}/a/b"), Some(OomDomain::Container)),
            (fs.clone(), Some(OomDomain::Container)),
            (pod.clone(), Some(OomDomain::Pod)),
            (format!("/kubepods/pod{STATIC_UID}"), Some(OomDomain::Pod)),
            (
                "/kubepods.slice/kubepods-burstable.slice".into(),
                Some(OomDomain::Qos),
            ),
            ("/kubepods/besteffort".into(), Some(OomDomain::Qos)),
            ("/kubepods.slice".into(), Some(OomDomain::Kubepods)),
            (
                "/kubelet.slice/kubelet-kubepods.slice".into(),
                Some(OomDomain::Kubepods),
            ),
            ("/kubepods".into(), Some(OomDomain::Kubepods)),
            (
                "/system.slice/nginx.service".into(),
                Some(OomDomain::System),
            ),
            (
                "/user.slice/user-1000.slice".into(),
                Some(OomDomain::System),
            ),
            (
                format!("/system.slice/docker-{CID}.scope"),
                Some(OomDomain::Container),
            ),
            // Plain containers outside Kubernetes: their own limit is the container's; a
            // podman pod's is the pod's; a parent's (`--cgroup-parent`, `/docker`) is not.
            (format!("/docker/{CID}"), Some(OomDomain::Container)),
            (
                format!("/libpod_parent/libpod-{CID}"),
                Some(OomDomain::Container),
            ),
            (format!("/my-parent/{CID}"), Some(OomDomain::Container)),
            (format!("/libpod_parent/{CID2}"), Some(OomDomain::Pod)),
            (
                format!("/machine.slice/machine-libpod_pod_{CID2}.slice"),
                Some(OomDomain::Pod),
            ),
            (
                format!("/libpod_parent/{CID2}/conmon"),
                Some(OomDomain::System),
            ),
            ("/docker".into(), Some(OomDomain::System)),
            ("/my-parent".into(), Some(OomDomain::System)),
            ("/foo".into(), Some(OomDomain::System)),
            // Kubernetes, but neither a level nor below a container.
            (format!("{pod}/crio-conmon-{CID}.scope"), None),
            (format!("/kubepods/burstable/pod{UID}/kata-sandbox"), None),
            (
                format!("/kubepods.slice/kubepods-burstable-pod{UID_}.slice"),
                None,
            ),
            // The root has no limit; malformed paths.
            ("/".into(), None),
            (String::new(), None),
            ("kubepods/burstable".into(), None),
            ("/kubepods/../system.slice".into(), None),
        ];
        for (memcg, want) in &cases {
            assert_eq!(classify(MEMCG, Some(memcg), Some(&crun)), *want, "{memcg}");
            assert_eq!(classify(MEMCG, Some(memcg), None), *want, "{memcg}");
        }
    }

    #[test]
    fn memcg_without_oom_memcg_is_unknown() {
        assert_eq!(classify(MEMCG, None, Some(&sd_container())), None);
        assert_eq!(classify(MEMCG, None, None), None);
    }

    #[test]
    fn unknown_constraint_falls_back_to_oom_memcg() {
        let c = sd_container();
        for constraint in [
            None,
            Some("CONSTRAINT_SOMETHING_NEW"),
            Some(""),
            Some("constraint_none"),
        ] {
            assert_eq!(
                classify(constraint, Some(&c), None),
                Some(OomDomain::Container)
            );
            assert_eq!(
                classify(constraint, Some(&sd_pod()), None),
                Some(OomDomain::Pod)
            );
            assert_eq!(
                classify(constraint, Some("/system.slice"), None),
                Some(OomDomain::System)
            );
            assert_eq!(classify(constraint, Some("/"), Some(&c)), None);
            assert_eq!(classify(constraint, None, Some(&c)), None);
        }
    }

    #[test]
    fn inconsistent_victim_is_ignored() {
        // The victim is not below the limiting cgroup: classified from oom_memcg alone.
        let other = fs_container(UID2, CID2);
        assert_eq!(
            classify(MEMCG, Some(&sd_pod()), Some(&other)),
            Some(OomDomain::Pod)
        );
        assert_eq!(
            classify(
                MEMCG,
                Some("/kubepods.slice"),
                Some("/system.slice/sshd.service")
            ),
            Some(OomDomain::Kubepods)
        );
    }

    /// (domain, victim cgroup, trigger cgroup, expected)
    type NoisyCase<'a> = (
        Option<OomDomain>,
        Option<&'a str>,
        Option<&'a str>,
        Option<bool>,
    );

    #[test]
    fn noisy_neighbour_cases() {
        let a1 = fs_container(UID, CID);
        let a2 = fs_container(UID, CID2);
        let a_crun = format!("{}/container", sd_container());
        let b = fs_container(UID2, CID2);
        let s = fs_container(STATIC_UID, CID2);
        let a_pod = format!("/kubepods/besteffort/pod{UID}");
        let sys = "/system.slice/dockerd.service";
        let docker = format!("/docker/{CID2}");
        let conmon = format!("{}/crio-conmon-{CID}.scope", sd_pod());
        let unknown = format!("/kubepods/burstable/pod{UID2}/kata-sandbox");
        let g = Some(OomDomain::Global);
        let cases: Vec<NoisyCase> = vec![
            // Different pods.
            (g, Some(&a1), Some(&b), Some(true)),
            (g, Some(&a1), Some(&s), Some(true)),
            (Some(OomDomain::Kubepods), Some(&a1), Some(&b), Some(true)),
            (Some(OomDomain::Qos), Some(&b), Some(&a1), Some(true)),
            // The same pod: other container, another driver's path of the same UID, pod level.
            (g, Some(&a1), Some(&a2), Some(false)),
            (g, Some(&a1), Some(&a1), Some(false)),
            (g, Some(&a1), Some(&a_crun), Some(false)),
            (Some(OomDomain::Qos), Some(&a1), Some(&a_pod), Some(false)),
            (g, Some(&a1), Some(&conmon), Some(false)),
            // Outside Kubernetes on one side.
            (g, Some(&a1), Some(sys), Some(true)),
            (g, Some(&a1), Some("/"), Some(true)),
            (g, Some(&a1), Some(&docker), Some(true)),
            (g, Some(sys), Some(&a1), Some(true)),
            // Both outside Kubernetes.
            (g, Some(sys), Some(&docker), Some(false)),
            (
                g,
                Some("/"),
                Some("/user.slice/user-1000.slice/session-3.scope"),
                Some(false),
            ),
            // Cannot be told.
            (g, Some(&a1), None, None),
            (g, None, Some(&a1), None),
            (g, None, None, None),
            (g, Some(&a1), Some(&unknown), None),
            (g, Some(&unknown), Some(&a1), None),
            (g, Some(&a1), Some("/kubepods/burstable"), None),
            (g, Some(&a1), Some("/kubepods.slice"), None),
            (g, Some(&a1), Some(""), None),
            (g, Some(&a1), Some("relative/path"), None),
            (g, Some("/kubepods/../x"), Some(&b), None),
            // Not a global or node-level OOM.
            (None, Some(&a1), Some(&b), None),
            (Some(OomDomain::Container), Some(&a1), Some(&b), None),
            (Some(OomDomain::Pod), Some(&a1), Some(&b), None),
            (Some(OomDomain::System), Some(sys), Some(&b), None),
            (Some(OomDomain::Cpuset), Some(&a1), Some(&b), None),
            (Some(OomDomain::Mempolicy), Some(&a1), Some(&b), None),
        ];
        for (i, (domain, victim, trigger, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                noisy_neighbour(domain, victim, trigger),
                want,
                "case {i}: {domain:?} {victim:?} {trigger:?}"
            );
        }
    }

    #[test]
    fn shared_domains() {
        let shared: Vec<OomDomain> = ALL.into_iter().filter(|&d| is_shared(d)).collect();
        assert_eq!(
            shared,
            [OomDomain::Qos, OomDomain::Kubepods, OomDomain::Global]
        );
    }
}
