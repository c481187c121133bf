//! Container and Kubernetes identity from a memory cgroup path.
//!
//! The input is a cgroup path as `/proc/<pid>/cgroup` and the kernel's OOM report print it:
//! relative to the root of the memory controller's hierarchy (cgroup v1 or v2 give the same
//! paths), starting with `/`. Everything here is a pure function of that string: no I/O.
//!
//! # Rule: unknown layouts yield no identity
//!
//! A path is read as Kubernetes as soon as one of its components is a *kubepods level*: a
//! directory named `kubepods` (cgroupfs driver), or a systemd slice `kubepods.slice` /
//! `<prefix>-kubepods.slice` (systemd driver, `--cgroup-root` or a nested node). The first
//! such component, from the root, is the one used, so a prefix above it (a kind or k3d node
//! container, a `--cgroup-root`) is allowed. Every level below it must then follow the
//! kubelet's scheme exactly, or the whole path yields no identity at all (no pod, no
//! container, no unit): a wrong pod or container is worse than none. Checked are:
//! systemd slice names repeating their parent's name as prefix (`kubelet-kubepods.slice`
//! below `kubelet.slice`, `kubepods.slice` never directly below another slice), the QoS
//! level, the pod UID (a UUID in lowercase hex, or a static pod's 32-hex config hash), and
//! the container directory (runtime prefix and a 64-lowercase-hex id). `.`/`..` components,
//! empty components and paths not starting with `/` are rejected.
//!
//! # Kubernetes layouts (kubelet `cgroupsPerQOS`)
//!
//! systemd driver (`-` in the pod UID escaped as `_`):
//!
//! ```text
//! /kubepods.slice                                                  kubepods level
//! /kubepods.slice/kubepods-burstable.slice                         qos level (burstable, besteffort)
//! /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7c3d8a6e_2f41_4b9a_8e5d_0c1f2a3b4d5e.slice
//! /kubepods.slice/kubepods-pod7c3d8a6e_2f41_4b9a_8e5d_0c1f2a3b4d5e.slice   guaranteed pod (no qos level)
//! <pod>/cri-containerd-<id>.scope     containerd
//! <pod>/crio-<id>.scope               CRI-O
//! <pod>/docker-<id>.scope             Docker (dockershim, cri-dockerd)
//! <pod>/crio-conmon-<id>.scope        CRI-O's conmon: the pod, but no container
//! ```
//!
//! cgroupfs driver (pod UID with dashes):
//!
//! ```text
//! /kubepods                                                        kubepods level
//! /kubepods/burstable                                              qos level (burstable, besteffort)
//! /kubepods/burstable/pod7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e      pod level
//! /kubepods/pod7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e                guaranteed pod
//! <pod>/<id>                          containerd or Docker: the bare id says no runtime
//! <pod>/crio-<id>                     CRI-O
//! <pod>/crio-conmon-<id>              CRI-O's conmon: the pod, but no container
//! ```
//!
//! Static pods (from the kubelet's manifest directory) have as UID the md5 config hash,
//! 32 lowercase hex without dashes (`pod3a6f0c2e9b7d41e8a5c4f1d2e3b4a5c6`); it is kept as is,
//! the value of the mirror pod's `kubernetes.io/config.hash` annotation.
//!
//! Any directory below the container's is still that container: crun's `container`
//! sub-cgroup on cgroup v2 (`…/crio-<id>.scope/container`, where crun applies the limits),
//! `crun-exec`, or a nested hierarchy (Docker-in-Docker, kind inside a pod: the outermost
//! pod and container are reported).
//!
//! Prefixes seen in practice: `--cgroup-root=/kubelet` (kind:
//! `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/…`,
//! `/kubelet/kubepods/burstable/…`), and nodes that are containers
//! (`/docker/<node id>/kubepods/…`, `/system.slice/docker-<node id>.scope/kubepods.slice/…`).
//!
//! A path at the pod level gives a [`Pod`] without container; a path at the qos or kubepods
//! level gives no pod ([`level`] tells which level it is).
//!
//! # Outside Kubernetes
//!
//! When no kubepods level is present: the outermost container among `docker-<id>.scope`,
//! `cri-containerd-<id>.scope`, `crio-<id>.scope` (systemd) and `docker/<id>` (Docker's
//! cgroupfs driver) is the [`Container`]; the innermost systemd unit (`*.service`, `*.scope`,
//! `*.socket`, `*.mount`, `*.swap`) that is not such a container is `systemd_unit`; the
//! innermost `*.slice` is `systemd_slice`. Examples:
//!
//! ```text
//! /system.slice/nginx.service                    unit nginx.service, slice system.slice
//! /user.slice/user-1000.slice/session-3.scope    unit session-3.scope, slice user-1000.slice
//! /system.slice/docker-<id>.scope                Docker container <id>, slice system.slice, no unit
//! /docker/<id>                                   Docker container <id>
//! /system.slice/containerd.service               unit containerd.service (the runtime and its
//!                                                shims are not a container)
//! /machine.slice/libpod-<id>.scope               podman container <id> (systemd cgroup manager)
//! /libpod_parent/libpod-<id>                     podman container <id> (cgroupfs manager)
//! /libpod_parent/<pod id>/libpod-<id>            podman container <id> in podman pod <pod id>
//! /machine.slice/machine-libpod_pod_<pod id>.slice/libpod-<id>.scope   likewise, systemd
//! /my-parent/<id>                                a container <id> whose runtime the path does
//!                                                not say (`docker run --cgroup-parent`): its
//!                                                runtime's state files tell
//! /libpod_parent/libpod-conmon-<id>, …/conmon    podman's conmon: no container
//! /                                              nothing
//! ```
//!
//! A path exactly at a podman pod's cgroup (`/libpod_parent/<pod id>`,
//! `machine-libpod_pod_<pod id>.slice`) sets `podman_pod`: a limit there is the pod's.
use crate::record::{QosClass, Runtime};
use serde::Serialize;

/// The kubelet's cgroup driver, from the shape of the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

impl CgroupDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::Cgroupfs => "cgroupfs",
        }
    }
}

/// A Kubernetes pod, as its cgroup path says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// `1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d` (dashes, lowercase), or a static pod's 32-hex
    /// config hash as is.
    pub uid: String,
    pub qos_class: QosClass,
    pub driver: CgroupDriver,
    /// Path of the kubepods level, with any prefix: `/kubepods.slice`, `/docker/<id>/kubepods`.
    pub kubepods_cgroup: String,
    /// Path of the qos level (None for guaranteed pods).
    pub qos_cgroup: Option<String>,
    /// Path of the pod level.
    pub pod_cgroup: String,
}

/// A container, as its cgroup path says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// None when the path does not say (cgroupfs driver with a bare id).
    pub runtime: Option<Runtime>,
    /// The runtime's container id: 64 lowercase hex.
    pub id: String,
    /// Path of the container level (not of a sub-cgroup below it).
    pub cgroup: String,
}

/// Everything a cgroup path says about who is in it. All None for unknown layouts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub pod: Option<Pod>,
    pub container: Option<Container>,
    /// Outside Kubernetes: the innermost systemd unit (`foo.service`, `session-3.scope`;
    /// `docker-<id>.scope` is a container, not a unit).
    pub systemd_unit: Option<String>,
    /// Outside Kubernetes: the innermost slice (`system.slice`, `user-1000.slice`).
    pub systemd_slice: Option<String>,
    /// Outside Kubernetes: the cgroup path of the podman pod the path is in (or is).
    pub podman_pod: Option<String>,
}

/// Which Kubernetes level a cgroup path is exactly (not below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Kubepods,
    Qos,
    Pod,
    Container,
}

/// Reads a cgroup path (see the module docs for the layouts). Never panics.
pub fn parse(cgroup: &str) -> Identity {
    let Some(comps) = components(cgroup) else {
        return Identity::default();
    };
    match scan(&comps) {
        Scan::NotKubernetes => outside(&comps),
        Scan::Unknown => Identity::default(),
        Scan::Kube(k) => {
            let pod = k.pod.map(|(idx, uid, qos_class)| Pod {
                uid,
                qos_class,
                driver: k.driver,
                kubepods_cgroup: join(&comps[..=k.kubepods]),
                qos_cgroup: k.qos.map(|q| join(&comps[..=q])),
                pod_cgroup: join(&comps[..=idx]),
            });
            let container = match k.child {
                Some((idx, Child::Container(runtime, id))) => Some(Container {
                    runtime,
                    id: id.to_owned(),
                    cgroup: join(&comps[..=idx]),
                }),
                _ => None,
            };
            Identity {
                pod,
                container,
                ..Identity::default()
            }
        }
    }
}

/// Which Kubernetes level the path is, exactly: a path below a container (crun's `container`
/// sub-cgroup), a conmon cgroup, an unknown layout or a non-Kubernetes path give None.
pub fn level(cgroup: &str) -> Option<Level> {
    match class(cgroup) {
        PathClass::Level(l) => Some(l),
        _ => None,
    }
}

/// What a path is, for the OOM domain: finer than [`level`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathClass {
    /// Exactly a Kubernetes level.
    Level(Level),
    /// Below a Kubernetes container's cgroup.
    BelowContainer,
    /// Under a kubepods level, but neither a level nor below a container: a conmon cgroup,
    /// or an unknown layout.
    OtherKubernetes,
    /// No kubepods level in the path, at or below a plain (Docker, podman, containerd)
    /// container's cgroup.
    OutsideContainer,
    /// No kubepods level in the path, exactly a podman pod's cgroup.
    PodmanPod,
    /// No kubepods level in the path (includes `/`), and neither of the above.
    NotKubernetes,
    /// Not a well-formed cgroup path (empty, relative, `..`).
    Invalid,
}

pub(crate) fn class(cgroup: &str) -> PathClass {
    let Some(comps) = components(cgroup) else {
        return PathClass::Invalid;
    };
    match scan(&comps) {
        Scan::NotKubernetes => {
            let id = outside(&comps);
            if id.container.is_some() {
                PathClass::OutsideContainer
            } else if id.podman_pod.as_deref() == Some(cgroup) {
                PathClass::PodmanPod
            } else {
                PathClass::NotKubernetes
            }
        }
        Scan::Unknown => PathClass::OtherKubernetes,
        Scan::Kube(k) => match (k.child, k.pod, k.qos) {
            (Some((idx, Child::Container(..))), _, _) if idx + 1 == comps.len() => {
                PathClass::Level(Level::Container)
            }
            (Some((_, Child::Container(..))), _, _) => PathClass::BelowContainer,
            (Some((_, Child::Conmon)), _, _) => PathClass::OtherKubernetes,
            (None, Some(_), _) => PathClass::Level(Level::Pod),
            (None, None, Some(_)) => PathClass::Level(Level::Qos),
            (None, None, None) => PathClass::Level(Level::Kubepods),
        },
    }
}

/// `/a/b` → `["a", "b"]`, `/` → `[]`; None for paths that are not absolute or have empty,
/// `.` or `..` components.
fn components(cgroup: &str) -> Option<Vec<&str>> {
    let rest = cgroup.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let comps: Vec<&str> = rest.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return None;
    }
    Some(comps)
}

fn join(comps: &[&str]) -> String {
    if comps.is_empty() {
        return "/".to_owned();
    }
    let mut s = String::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for c in comps {
        s.push('/');
        s.push_str(c);
    }
    s
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A containerd, CRI-O or Docker container id: 64 lowercase hex.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// A pod UID as the cgroup name carries it, `sep` being `-` (cgroupfs) or `_` (systemd):
/// a UUID, or a static pod's 32-hex config hash. Returned with dashes.
fn pod_uid(s: &str, sep: u8) -> Option<String> {
    if s.len() == 32 && is_lower_hex(s) {
        return Some(s.to_owned());
    }
    if s.len() != 36 {
        return None;
    }
    let ok = s.bytes().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => b == sep,
        _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
    });
    ok.then(|| s.replace(char::from(sep), "-"))
}

/// What sits directly below a pod's cgroup.
enum Child<'a> {
    Container(Option<Runtime>, &'a str),
    /// CRI-O's conmon monitor (`crio-conmon-<id>`): part of the pod, not a container.
    Conmon,
}

/// A path that follows the kubelet scheme from its kubepods level down (indexes into the
/// components).
struct Kube<'a> {
    driver: CgroupDriver,
    kubepods: usize,
    qos: Option<usize>,
    pod: Option<(usize, String, QosClass)>,
    child: Option<(usize, Child<'a>)>,
}

enum Scan<'a> {
    NotKubernetes,
    /// A kubepods level, but the path does not follow the scheme below it.
    Unknown,
    Kube(Kube<'a>),
}

fn is_kubepods_candidate(c: &str) -> bool {
    c == "kubepods" || c == "kubepods.slice" || c.ends_with("-kubepods.slice")
}

fn scan<'a>(comps: &[&'a str]) -> Scan<'a> {
    let Some(k) = comps.iter().position(|c| is_kubepods_candidate(c)) else {
        return Scan::NotKubernetes;
    };
    let kube = if comps[k] == "kubepods" {
        scan_cgroupfs(comps, k)
    } else {
        scan_systemd(comps, k)
    };
    kube.map_or(Scan::Unknown, Scan::Kube)
}

fn qos_of(name: &str) -> Option<QosClass> {
    match name {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

/// `/kubepods[/<qos>][/pod<uid>[/<container>[/…]]]`.
fn scan_cgroupfs<'a>(comps: &[&'a str], k: usize) -> Option<Kube<'a>> {
    let mut kube = Kube {
        driver: CgroupDriver::Cgroupfs,
        kubepods: k,
        qos: None,
        pod: None,
        child: None,
    };
    let mut i = k + 1;
    let Some(&next) = comps.get(i) else {
        return Some(kube);
    };
    let qos = match qos_of(next) {
        Some(q) => {
            kube.qos = Some(i);
            i += 1;
            q
        }
        None => QosClass::Guaranteed,
    };
    let Some(&pod) = comps.get(i) else {
        return Some(kube);
    };
    let uid = pod_uid(pod.strip_prefix("pod")?, b'-')?;
    kube.pod = Some((i, uid, qos));
    i += 1;
    let Some(&c) = comps.get(i) else {
        return Some(kube);
    };
    let child = if let Some(id) = c.strip_prefix("crio-conmon-") {
        is_container_id(id).then_some(Child::Conmon)
    } else if let Some(id) = c.strip_prefix("crio-") {
        is_container_id(id).then_some(Child::Container(Some(Runtime::Crio), id))
    } else {
        is_container_id(c).then_some(Child::Container(None, c))
    }?;
    kube.child = Some((i, child));
    Some(kube)
}

/// `<parent stem>-<name>.slice` → `<name>`.
fn sub_slice<'a>(parent_stem: &str, c: &'a str) -> Option<&'a str> {
    c.strip_suffix(".slice")?
        .strip_prefix(parent_stem)?
        .strip_prefix('-')
}

const SCOPE_RUNTIMES: [(&str, Runtime); 3] = [
    ("cri-containerd-", Runtime::Containerd),
    ("crio-", Runtime::Crio),
    ("docker-", Runtime::Docker),
];

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` → runtime and id.
fn scope_container(c: &str) -> Option<(Runtime, &str)> {
    let name = c.strip_suffix(".scope")?;
    SCOPE_RUNTIMES.iter().find_map(|&(prefix, rt)| {
        let id = name.strip_prefix(prefix)?;
        is_container_id(id).then_some((rt, id))
    })
}

/// `[…/]<p>.slice/<p>-kubepods.slice[/<p>-kubepods-<qos>.slice]
/// [/<p>-kubepods[-<qos>]-pod<uid_>.slice[/<container>.scope[/…]]]`.
fn scan_systemd<'a>(comps: &[&'a str], k: usize) -> Option<Kube<'a>> {
    let stem = comps[k].strip_suffix(".slice")?;
    let parent = k.checked_sub(1).and_then(|p| comps.get(p)).copied();
    match stem.strip_suffix("-kubepods") {
        // `<p>-kubepods.slice` lives in `<p>.slice`.
        Some(prefix) => {
            if prefix.is_empty() || parent.and_then(|p| p.strip_suffix(".slice")) != Some(prefix) {
                return None;
            }
        }
        // A top-level slice: directly below the root or a non-slice (a node's container).
        None => {
            if stem != "kubepods" || parent.is_some_and(|p| p.ends_with(".slice")) {
                return None;
            }
        }
    }
    let mut kube = Kube {
        driver: CgroupDriver::Systemd,
        kubepods: k,
        qos: None,
        pod: None,
        child: None,
    };
    let mut i = k + 1;
    let Some(&next) = comps.get(i) else {
        return Some(kube);
    };
    let below_kubepods = sub_slice(stem, next)?;
    let (qos, pod_name) = match qos_of(below_kubepods) {
        Some(q) => {
            kube.qos = Some(i);
            i += 1;
            let Some(&pod) = comps.get(i) else {
                return Some(kube);
            };
            let qos_stem = next.strip_suffix(".slice")?;
            (q, sub_slice(qos_stem, pod)?)
        }
        None => (QosClass::Guaranteed, below_kubepods),
    };
    let uid = pod_uid(pod_name.strip_prefix("pod")?, b'_')?;
    kube.pod = Some((i, uid, qos));
    i += 1;
    let Some(&c) = comps.get(i) else {
        return Some(kube);
    };
    let conmon = c
        .strip_suffix(".scope")
        .and_then(|n| n.strip_prefix("crio-conmon-"));
    let child = match conmon {
        Some(id) => is_container_id(id).then_some(Child::Conmon),
        None => scope_container(c).map(|(rt, id)| Child::Container(Some(rt), id)),
    }?;
    kube.child = Some((i, child));
    Some(kube)
}

const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// Characters systemd allows in unit names.
fn is_unit_text(s: &str) -> bool {
    s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
        })
}

fn has_stem(c: &str, suffix: &str) -> bool {
    c.strip_suffix(suffix).is_some_and(|stem| !stem.is_empty())
}

fn is_unit(c: &str) -> bool {
    is_unit_text(c) && UNIT_SUFFIXES.iter().any(|s| has_stem(c, s))
}

fn is_slice(c: &str) -> bool {
    is_unit_text(c) && has_stem(c, ".slice")
}

/// podman's container cgroup: `libpod-<id>` (cgroupfs) or `libpod-<id>.scope` (systemd);
/// never its conmon (`libpod-conmon-<id>`).
fn podman_container(c: &str) -> Option<&str> {
    let id = c
        .strip_suffix(".scope")
        .unwrap_or(c)
        .strip_prefix("libpod-")?;
    is_container_id(id).then_some(id)
}

/// A podman pod's cgroup: `<pod id>` below `libpod_parent` (cgroupfs), or
/// `machine-libpod_pod_<pod id>.slice` (systemd).
fn is_podman_pod(parent: Option<&str>, c: &str) -> bool {
    let systemd = c
        .strip_suffix(".slice")
        .and_then(|n| n.strip_prefix("machine-libpod_pod_"))
        .is_some_and(is_container_id);
    systemd || (parent == Some("libpod_parent") && is_container_id(c))
}

/// The container component at `i`, if any: a runtime's scope, podman's `libpod-<id>`,
/// Docker's `docker/<id>`, or a bare id (a `--cgroup-parent` of one's own: runtime unknown).
/// Returns the runtime, the id, and the index of the container's own component.
fn outside_container<'a>(comps: &[&'a str], i: usize) -> Option<(Option<Runtime>, &'a str, usize)> {
    let c = comps[i];
    let parent = i.checked_sub(1).map(|p| comps[p]);
    if let Some((rt, id)) = scope_container(c) {
        return Some((Some(rt), id, i));
    }
    if let Some(id) = podman_container(c) {
        return Some((Some(Runtime::Podman), id, i));
    }
    if is_container_id(c) && !is_podman_pod(parent, c) {
        let runtime = (parent == Some("docker")).then_some(Runtime::Docker);
        return Some((runtime, c, i));
    }
    None
}

/// A path without a kubepods level.
fn outside(comps: &[&str]) -> Identity {
    let mut id = Identity::default();
    for (i, &c) in comps.iter().enumerate() {
        let found = outside_container(comps, i);
        if id.container.is_none() {
            if let Some((runtime, cid, end)) = found {
                id.container = Some(Container {
                    runtime,
                    id: cid.to_owned(),
                    cgroup: join(&comps[..=end]),
                });
            }
        }
        if id.container.is_none() && is_podman_pod(i.checked_sub(1).map(|p| comps[p]), c) {
            id.podman_pod = Some(join(&comps[..=i]));
        }
        if found.is_none() && is_unit(c) {
            id.systemd_unit = Some(c.to_owned());
        }
        if is_slice(c) && !is_podman_pod(None, c) {
            id.systemd_slice = Some(c.to_owned());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    //! Tests of [`super`]: the kubelet layouts (driver × QoS × runtime × cgroup version), nested
    //! nodes, sub-cgroups, conmon, static pods, non-Kubernetes paths, and malformed input that
    //! must give no identity.
    //!
    //! cgroup v1 (the memory controller's hierarchy) and v2 carry the same names; what differs on
    //! v2 is crun's `container` sub-cgroup below the runtime's scope (crun is CRI-O's default on
    //! several distributions), so the v2 CRI-O victims below are in it.
    use super::*;

    const UID: &str = "7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e";
    const UID_: &str = "7c3d8a6e_2f41_4b9a_8e5d_0c1f2a3b4d5e";
    const UID2: &str = "0f9e8d7c-6b5a-4f3e-9d2c-1b0a9f8e7d6c";
    /// A static pod's UID: the md5 config hash, 32 hex.
    const STATIC_UID: &str = "a81259cef8e959c624df1d456e5d3297";
    const CID: &str = "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";
    const CID2: &str = "9c0abe51c6e6655d81de2d044d4fb194931f058c0426c67c7285d8f5657ed64a";
    const NODE: &str = "1b16b1df538ba12dc3f97edbb85caa7050d46c148134290feba80f8236c83db9";

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum V {
        V1,
        V2,
    }

    const QOS: [QosClass; 3] = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ];
    const RUNTIMES: [Runtime; 3] = [Runtime::Containerd, Runtime::Crio, Runtime::Docker];
    const DRIVERS: [CgroupDriver; 2] = [CgroupDriver::Systemd, CgroupDriver::Cgroupfs];

    /// The kubelet's and the runtime's paths for one combination.
    struct Layout {
        kubepods: String,
        qos: Option<String>,
        pod: String,
        container: String,
        /// What the path says of the runtime.
        runtime: Option<Runtime>,
        /// Where the victim is: the container's cgroup, or crun's sub-cgroup on v2.
        victim: String,
    }

    fn layout(v: V, driver: CgroupDriver, qos: QosClass, rt: Runtime) -> Layout {
        let q = match qos {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        };
        let (kubepods, qos_cg, pod, container, runtime) = match driver {
            CgroupDriver::Systemd => {
                let kubepods = "/kubepods.slice".to_owned();
                let qos_cg = q.map(|q| format!("{kubepods}/kubepods-{q}.slice"));
                let pod = match q {
                    Some(q) => {
                        format!("{kubepods}/kubepods-{q}.slice/kubepods-{q}-pod{UID_}.slice")
                    }
                    None => format!("{kubepods}/kubepods-pod{UID_}.slice"),
                };
                let scope = match rt {
                    Runtime::Containerd => format!("cri-containerd-{CID}.scope"),
                    Runtime::Crio => format!("crio-{CID}.scope"),
                    Runtime::Docker => format!("docker-{CID}.scope"),
                    Runtime::Podman => unreachable!("podman is not a kubelet runtime"),
                };
                (
                    kubepods,
                    qos_cg,
                    pod.clone(),
                    format!("{pod}/{scope}"),
                    Some(rt),
                )
            }
            CgroupDriver::Cgroupfs => {
                let kubepods = "/kubepods".to_owned();
                let qos_cg = q.map(|q| format!("{kubepods}/{q}"));
                let pod = format!("{}/pod{UID}", qos_cg.as_deref().unwrap_or(&kubepods));
                // containerd and Docker name the directory by the bare id; CRI-O prefixes `crio-`.
                let (dir, runtime) = match rt {
                    Runtime::Crio => (format!("crio-{CID}"), Some(Runtime::Crio)),
                    _ => (CID.to_owned(), None),
                };
                (
                    kubepods,
                    qos_cg,
                    pod.clone(),
                    format!("{pod}/{dir}"),
                    runtime,
                )
            }
        };
        let victim = if v == V::V2 && rt == Runtime::Crio {
            format!("{container}/container")
        } else {
            container.clone()
        };
        Layout {
            kubepods,
            qos: qos_cg,
            pod,
            container,
            runtime,
            victim,
        }
    }

    #[test]
    fn ids_are_real_shapes() {
        assert_eq!(CID.len(), 64);
        assert_eq!(CID2.len(), 64);
        assert_eq!(NODE.len(), 64);
        assert_eq!(STATIC_UID.len(), 32);
        assert_eq!(UID.len(), 36);
    }

    #[test]
    fn matrix_of_kubelet_layouts() {
        let mut n = 0;
        for v in [V::V1, V::V2] {
            for driver in DRIVERS {
                for qos in QOS {
                    for rt in RUNTIMES {
                        let l = layout(v, driver, qos, rt);
                        let ctx = format!("{v:?} {driver:?} {qos:?} {rt:?}: {}", l.victim);
                        let pod = Pod {
                            uid: UID.to_owned(),
                            qos_class: qos,
                            driver,
                            kubepods_cgroup: l.kubepods.clone(),
                            qos_cgroup: l.qos.clone(),
                            pod_cgroup: l.pod.clone(),
                        };
                        let container = Container {
                            runtime: l.runtime,
                            id: CID.to_owned(),
                            cgroup: l.container.clone(),
                        };
                        let want = Identity {
                            pod: Some(pod.clone()),
                            container: Some(container),
                            systemd_unit: None,
                            systemd_slice: None,
                            podman_pod: None,
                        };
                        assert_eq!(parse(&l.victim), want, "{ctx}");
                        assert_eq!(parse(&l.container), want, "{ctx}");
                        assert_eq!(level(&l.container), Some(Level::Container), "{ctx}");
                        // Below the container (crun's sub-cgroup) is not a level itself.
                        let victim_level = (l.victim == l.container).then_some(Level::Container);
                        assert_eq!(level(&l.victim), victim_level, "{ctx}");

                        let at_pod = Identity {
                            pod: Some(pod),
                            ..Identity::default()
                        };
                        assert_eq!(parse(&l.pod), at_pod, "{ctx}");
                        assert_eq!(level(&l.pod), Some(Level::Pod), "{ctx}");
                        if let Some(q) = &l.qos {
                            assert_eq!(parse(q), Identity::default(), "{ctx}");
                            assert_eq!(level(q), Some(Level::Qos), "{ctx}");
                        }
                        assert_eq!(parse(&l.kubepods), Identity::default(), "{ctx}");
                        assert_eq!(level(&l.kubepods), Some(Level::Kubepods), "{ctx}");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 36);
    }

    /// Every cut of a valid path gives either nothing or the right pod/container: never another.
    #[test]
    fn truncations_never_give_a_wrong_identity() {
        for driver in DRIVERS {
            for qos in QOS {
                for rt in RUNTIMES {
                    let l = layout(V::V2, driver, qos, rt);
                    for (cut, _) in l.victim.char_indices() {
                        let id = parse(&l.victim[..cut]);
                        if let Some(p) = &id.pod {
                            assert_eq!(p.uid, UID, "{}", &l.victim[..cut]);
                        }
                        if let Some(c) = &id.container {
                            assert_eq!(c.id, CID, "{}", &l.victim[..cut]);
                        }
                        assert_eq!(id.systemd_unit, None);
                    }
                }
            }
        }
    }

    /// (path, kubepods level, qos level, pod level, qos, driver, container level, runtime, uid, id)
    type Row = (
        String,
        String,
        Option<String>,
        String,
        QosClass,
        CgroupDriver,
        String,
        Option<Runtime>,
        &'static str,
        &'static str,
    );

    fn check_rows(rows: Vec<Row>) {
        for (path, kubepods, qos_cg, pod_cg, qos, driver, cont, runtime, uid, cid) in rows {
            let want = Identity {
                pod: Some(Pod {
                    uid: uid.to_owned(),
                    qos_class: qos,
                    driver,
                    kubepods_cgroup: kubepods,
                    qos_cgroup: qos_cg,
                    pod_cgroup: pod_cg,
                }),
                container: Some(Container {
                    runtime,
                    id: cid.to_owned(),
                    cgroup: cont,
                }),
                systemd_unit: None,
                systemd_slice: None,
                podman_pod: None,
            };
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn nested_nodes_and_cgroup_roots() {
        let s = |x: &str| x.to_owned();
        let kind =
            format!("/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice");
        let kind_pod = format!(
            "{kind}/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice"
        );
        let k3d1 = format!("/docker/{NODE}/kubepods");
        let k3d2 = format!("/system.slice/docker-{NODE}.scope/kubepods");
        let kind1 = format!("/docker/{NODE}/kubelet/kubepods");
        let ab = s("/a.slice/a-b.slice/a-b-kubepods.slice");
        let ab_pod =
            format!("{ab}/a-b-kubepods-besteffort.slice/a-b-kubepods-besteffort-pod{UID_}.slice");
        let sys = format!("/system.slice/docker-{NODE}.scope/kubepods.slice");
        let outer = s("/kubepods/burstable");
        let outer_pod = format!("{outer}/pod{UID}");
        let rows = vec![
        // kind on cgroup v2, seen from the host.
        (format!("{kind_pod}/cri-containerd-{CID}.scope"), kind.clone(), Some(format!("{kind}/kubelet-kubepods-burstable.slice")), kind_pod.clone(), QosClass::Burstable, CgroupDriver::Systemd, format!("{kind_pod}/cri-containerd-{CID}.scope"), Some(Runtime::Containerd), UID, CID),
        // kind seen from inside the node (cgroup namespace): `--cgroup-root=/kubelet`.
        (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"), s("/kubelet.slice/kubelet-kubepods.slice"), None, format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice"), QosClass::Guaranteed, CgroupDriver::Systemd, format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"), Some(Runtime::Containerd), UID, CID),
        // kind (older, cgroupfs) on cgroup v1.
        (format!("{kind1}/besteffort/pod{UID}/{CID}"), kind1.clone(), Some(format!("{kind1}/besteffort")), format!("{kind1}/besteffort/pod{UID}"), QosClass::BestEffort, CgroupDriver::Cgroupfs, format!("{kind1}/besteffort/pod{UID}/{CID}"), None, UID, CID),
        // k3d on cgroup v1 and v2.
        (format!("{k3d1}/burstable/pod{UID}/{CID}"), k3d1.clone(), Some(format!("{k3d1}/burstable")), format!("{k3d1}/burstable/pod{UID}"), QosClass::Burstable, CgroupDriver::Cgroupfs, format!("{k3d1}/burstable/pod{UID}/{CID}"), None, UID, CID),
        (format!("{k3d2}/pod{UID}/{CID}"), k3d2.clone(), None, format!("{k3d2}/pod{UID}"), QosClass::Guaranteed, CgroupDriver::Cgroupfs, format!("{k3d2}/pod{UID}/{CID}"), None, UID, CID),
        // A systemd node inside a container, default cgroup root.
        (format!("{sys}/kubepods-pod{UID_}.slice/crio-{CID}.scope/container"), sys.clone(), None, format!("{sys}/kubepods-pod{UID_}.slice"), QosClass::Guaranteed, CgroupDriver::Systemd, format!("{sys}/kubepods-pod{UID_}.slice/crio-{CID}.scope"), Some(Runtime::Crio), UID, CID),
        // A two-level `--cgroup-root=/a/b` with systemd.
        (format!("{ab_pod}/crio-{CID}.scope"), ab.clone(), Some(format!("{ab}/a-b-kubepods-besteffort.slice")), ab_pod.clone(), QosClass::BestEffort, CgroupDriver::Systemd, format!("{ab_pod}/crio-{CID}.scope"), Some(Runtime::Crio), UID, CID),
        // kind inside a pod: the outer pod and container (the ones this node runs).
        (format!("{outer_pod}/{CID}/kubelet/kubepods/burstable/pod{UID2}/{CID2}"), s("/kubepods"), Some(outer.clone()), outer_pod.clone(), QosClass::Burstable, CgroupDriver::Cgroupfs, format!("{outer_pod}/{CID}"), None, UID, CID),
        // Sub-cgroups below a container: crun's, crun-exec, deeper.
        (format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope/crun-exec"), s("/kubepods.slice"), None, format!("/kubepods.slice/kubepods-pod{UID_}.slice"), QosClass::Guaranteed, CgroupDriver::Systemd, format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope"), Some(Runtime::Crio), UID, CID),
        (format!("{outer_pod}/{CID}/a/b/c"), s("/kubepods"), Some(outer.clone()), outer_pod.clone(), QosClass::Burstable, CgroupDriver::Cgroupfs, format!("{outer_pod}/{CID}"), None, UID, CID),
        // Static pods: the config hash as UID, both drivers.
        (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope"), s("/kubepods.slice"), Some(s("/kubepods.slice/kubepods-burstable.slice")), format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice"), QosClass::Burstable, CgroupDriver::Systemd, format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{CID}.scope"), Some(Runtime::Containerd), STATIC_UID, CID),
        (format!("/kubepods/pod{STATIC_UID}/{CID}"), s("/kubepods"), None, format!("/kubepods/pod{STATIC_UID}"), QosClass::Guaranteed, CgroupDriver::Cgroupfs, format!("/kubepods/pod{STATIC_UID}/{CID}"), None, STATIC_UID, CID),
    ];
        check_rows(rows);
    }

    #[test]
    fn conmon_is_the_pod_not_a_container() {
        let sd_pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let fs_pod = format!("/kubepods/besteffort/pod{UID}");
        for (path, pod_cg, driver, qos) in [
            (
                format!("{sd_pod}/crio-conmon-{CID}.scope"),
                &sd_pod,
                CgroupDriver::Systemd,
                QosClass::Burstable,
            ),
            (
                format!("{sd_pod}/crio-conmon-{CID}.scope/sub"),
                &sd_pod,
                CgroupDriver::Systemd,
                QosClass::Burstable,
            ),
            (
                format!("{fs_pod}/crio-conmon-{CID}"),
                &fs_pod,
                CgroupDriver::Cgroupfs,
                QosClass::BestEffort,
            ),
        ] {
            let id = parse(&path);
            assert_eq!(id.container, None, "{path}");
            let pod = id.pod.unwrap_or_else(|| panic!("no pod: {path}"));
            assert_eq!(
                (pod.uid.as_str(), &pod.pod_cgroup, pod.driver, pod.qos_class),
                (UID, pod_cg, driver, qos)
            );
            assert_eq!(level(&path), None, "{path}");
            assert_eq!(class(&path), PathClass::OtherKubernetes, "{path}");
        }
    }

    #[test]
    fn static_pod_at_pod_level() {
        let path = format!("/kubepods.slice/kubepods-pod{STATIC_UID}.slice");
        let pod = parse(&path).pod;
        assert_eq!(pod.map(|p| p.uid), Some(STATIC_UID.to_owned()));
        assert_eq!(level(&path), Some(Level::Pod));
    }

    #[test]
    fn class_of_paths() {
        let c = format!("/kubepods/pod{UID}/{CID}");
        assert_eq!(class(&c), PathClass::Level(Level::Container));
        assert_eq!(class(&format!("{c}/container")), PathClass::BelowContainer);
        assert_eq!(
            class(&format!("/kubepods/pod{UID}/nope")),
            PathClass::OtherKubernetes
        );
        assert_eq!(class("/system.slice/foo.service"), PathClass::NotKubernetes);
        assert_eq!(class("/"), PathClass::NotKubernetes);
        assert_eq!(class(""), PathClass::Invalid);
        assert_eq!(class("/kubepods/../x"), PathClass::Invalid);
    }

    /// Unknown and malformed layouts: no pod, no container, no unit, no level.
    #[test]
    fn unknown_layouts_give_nothing() {
        let up = CID.to_uppercase();
        let short = &CID[..63];
        let sd_b = "/kubepods.slice/kubepods-burstable.slice";
        let fs_b = "/kubepods/burstable";
        let long_garbage = "/".to_owned() + &"x".repeat(100_000);
        let deep_garbage = "/kubepods".to_owned() + &"/zz".repeat(10_000);
        let cases: Vec<String> = vec![
        String::new(),
        format!("kubepods/burstable/pod{UID}/{CID}"),
        format!("//kubepods/burstable/pod{UID}/{CID}"),
        format!("/kubepods/burstable/pod{UID}/{CID}/"),
        format!("/kubepods/burstable/pod{UID}/../pod{UID2}/{CID2}"),
        format!("/kubepods/./burstable/pod{UID}/{CID}"),
        format!("{fs_b}/pod{UID}/{short}"),
        format!("{fs_b}/pod{UID}/{CID}0"),
        format!("{fs_b}/pod{UID}/{up}"),
        format!("/kubepods/burstable/pod{}/{CID}", UID.to_uppercase()),
        format!("/kubepods/burstable/pod{UID_}/{CID}"),
        format!("/kubepods/burstable/pod{UID}/docker-{CID}"),
        format!("/kubepods/burstable/pod{UID}/cri-containerd-{CID}.scope"),
        format!("/kubepods/burstable/pod{UID}/crio-{short}"),
        format!("/kubepods/burstable/pod{UID}/crio-conmon-{short}"),
        format!("/kubepods/burstable/pod{UID}/kata_{CID}"),
        format!("/kubepods/guaranteed/pod{UID}/{CID}"),
        format!("/kubepods/burstable/{CID}"),
        format!("/kubepods/burstable/besteffort/pod{UID}/{CID}"),
        format!("/kubepods/burstable/pod/{CID}"),
        format!("/kubepods/burstable/pod{}/{CID}", &UID[..35]),
        format!("/kubepods/burstable/pod{}g/{CID}", &UID[..35]),
        format!("/kubepods/burstable/pod{}/{CID}", UID.replacen('-', "", 1)),
        format!("/kubepods/burstable/pod7c3d8a6e2-f41-4b9a-8e5d-0c1f2a3b4d5e/{CID}"),
        format!("/kubepods/burstable/pod{}/{CID}", &STATIC_UID[..31]),
        format!("/kubepods/burstable/pod{}/{CID}", STATIC_UID.to_uppercase()),
        format!("{sd_b}/kubepods-burstable-pod{UID_}.slice/cri-containerd-{short}.scope"),
        format!("{sd_b}/kubepods-burstable-pod{UID_}.slice/cri-containerd-{up}.scope"),
        format!("{sd_b}/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}"),
        format!("{sd_b}/kubepods-burstable-pod{UID_}.slice/{CID}"),
        format!("{sd_b}/kubepods-burstable-pod{UID_}.slice/containerd-{CID}.scope"),
        format!("{sd_b}/kubepods-burstable-pod{UID}.slice/crio-{CID}.scope"),
        format!("{sd_b}/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope"),
        format!("{sd_b}/kubepods-pod{UID_}.slice/crio-{CID}.scope"),
        format!("{sd_b}/pod{UID}/{CID}"),
        format!("/kubepods.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/kubepods.slice/burstable/pod{UID}/{CID}"),
        format!("/kubepods/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/other.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/system.slice/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/.slice/-kubepods.slice/-kubepods-pod{UID_}.slice/crio-{CID}.scope"),
        format!("/kubepods.slice/kubepods-guaranteed.slice/kubepods-guaranteed-pod{UID_}.slice"),
        format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope.d"),
        format!("/kubepods/burstable/pod{UID}/{CID}\n"),
        format!("/kubepods/bürstable/pod{UID}/{CID}"),
        format!("/kubepods/burstable/pöd{UID}/{CID}"),
        "/kubepods/burstable/pod\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}".to_owned(),
        long_garbage,
        deep_garbage,
        "/kubepods/".to_owned() + &"a".repeat(100_000),
    ];
        for path in &cases {
            let short_path: String = path.chars().take(200).collect();
            assert_eq!(parse(path), Identity::default(), "{short_path}");
            assert_eq!(level(path), None, "{short_path}");
        }
    }

    #[test]
    fn outside_kubernetes() {
        let unit = |u: &str, s: Option<&str>| Identity {
            systemd_unit: Some(u.to_owned()),
            systemd_slice: s.map(str::to_owned),
            ..Identity::default()
        };
        let docker = |cg: String, id: &str, s: Option<&str>| Identity {
            container: Some(Container {
                runtime: Some(Runtime::Docker),
                id: id.to_owned(),
                cgroup: cg,
            }),
            systemd_slice: s.map(str::to_owned),
            ..Identity::default()
        };
        const POD: &str = "6d73ff2a0ca702a46b27f2b4be46ee864d5126288777743fab170f5277256cd0";
        let podman = |cgroup: String, slice: Option<&str>, pod: Option<String>| Identity {
            container: Some(Container {
                runtime: Some(Runtime::Podman),
                id: CID.to_owned(),
                cgroup,
            }),
            systemd_slice: slice.map(str::to_owned),
            podman_pod: pod,
            ..Identity::default()
        };
        let cases: Vec<(String, Identity)> = vec![
        ("/".to_owned(), Identity::default()),
        ("/system.slice/nginx.service".to_owned(), unit("nginx.service", Some("system.slice"))),
        ("/user.slice/user-1000.slice/session-3.scope".to_owned(), unit("session-3.scope", Some("user-1000.slice"))),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1f2e.scope".to_owned(),
            unit("vte-spawn-1f2e.scope", Some("app-org.gnome.Terminal.slice")),
        ),
        ("/init.scope".to_owned(), unit("init.scope", None)),
        ("/system.slice/containerd.service".to_owned(), unit("containerd.service", Some("system.slice"))),
        ("/system.slice/containerd.service/shim".to_owned(), unit("containerd.service", Some("system.slice"))),
        ("/system.slice/systemd-journald.socket".to_owned(), unit("systemd-journald.socket", Some("system.slice"))),
        ("/system.slice".to_owned(), Identity { systemd_slice: Some("system.slice".to_owned()), ..Identity::default() }),
        (format!("/system.slice/crio-conmon-{CID}.scope"), unit(&format!("crio-conmon-{CID}.scope"), Some("system.slice"))),
        (format!("/machine.slice/libpod-{CID}.scope/container"), podman(format!("/machine.slice/libpod-{CID}.scope"), Some("machine.slice"), None)),
        (format!("/libpod_parent/libpod-{CID}"), podman(format!("/libpod_parent/libpod-{CID}"), None, None)),
        (format!("/libpod_parent/{POD}/libpod-{CID}"), podman(format!("/libpod_parent/{POD}/libpod-{CID}"), None, Some(format!("/libpod_parent/{POD}")))),
        (format!("/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{CID}.scope"), podman(format!("/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{CID}.scope"), Some("machine.slice"), Some(format!("/machine.slice/machine-libpod_pod_{POD}.slice")))),
        (format!("/libpod_parent/{POD}"), Identity { podman_pod: Some(format!("/libpod_parent/{POD}")), ..Identity::default() }),
        (format!("/libpod_parent/{POD}/conmon"), Identity { podman_pod: Some(format!("/libpod_parent/{POD}")), ..Identity::default() }),
        (format!("/libpod_parent/libpod-conmon-{CID}"), Identity::default()),
        (format!("/machine.slice/libpod-conmon-{CID}.scope"), unit(&format!("libpod-conmon-{CID}.scope"), Some("machine.slice"))),
        (format!("/my-parent/{CID}"), Identity { container: Some(Container { runtime: None, id: CID.to_owned(), cgroup: format!("/my-parent/{CID}") }), ..Identity::default() }),
        (format!("/system.slice/docker-{CID}.scope"), docker(format!("/system.slice/docker-{CID}.scope"), CID, Some("system.slice"))),
        (format!("/docker/{CID}"), docker(format!("/docker/{CID}"), CID, None)),
        (format!("/docker/{CID}/docker/{CID2}"), docker(format!("/docker/{CID}"), CID, None)),
        (format!("/system.slice/docker-{CID}.scope/docker/{CID2}"), docker(format!("/system.slice/docker-{CID}.scope"), CID, Some("system.slice"))),
        (
            format!("/system.slice/docker-{NODE}.scope/system.slice/nginx.service"),
            Identity {
                systemd_unit: Some("nginx.service".to_owned()),
                ..docker(format!("/system.slice/docker-{NODE}.scope"), NODE, Some("system.slice"))
            },
        ),
        (
            format!("/system.slice/cri-containerd-{CID}.scope"),
            Identity {
                container: Some(Container { runtime: Some(Runtime::Containerd), id: CID.to_owned(), cgroup: format!("/system.slice/cri-containerd-{CID}.scope") }),
                systemd_slice: Some("system.slice".to_owned()),
                ..Identity::default()
            },
        ),
        (format!("/docker/{short}", short = &CID[..12]), Identity::default()),
        ("/docker".to_owned(), Identity::default()),
        ("/foo/bar".to_owned(), Identity::default()),
        ("/.service/.slice".to_owned(), Identity::default()),
        ("/system.slice/bad name.service".to_owned(), Identity { systemd_slice: Some("system.slice".to_owned()), ..Identity::default() }),
    ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
            assert_eq!(level(&path), None, "{path}");
        }
    }

    #[test]
    fn serializes_lowercase() {
        let json = |v: &dyn erased::Ser| v.json();
        assert_eq!(json(&Runtime::Containerd), "\"containerd\"");
        assert_eq!(json(&Runtime::Crio), "\"crio\"");
        assert_eq!(json(&Runtime::Docker), "\"docker\"");
        assert_eq!(json(&QosClass::Guaranteed), "\"guaranteed\"");
        assert_eq!(json(&QosClass::Burstable), "\"burstable\"");
        assert_eq!(json(&QosClass::BestEffort), "\"besteffort\"");
        assert_eq!(json(&CgroupDriver::Systemd), "\"systemd\"");
        assert_eq!(json(&CgroupDriver::Cgroupfs), "\"cgroupfs\"");
        assert_eq!(json(&Level::Kubepods), "\"kubepods\"");
        for r in RUNTIMES {
            assert_eq!(json(&r), format!("\"{}\"", r.as_str()));
        }
        for q in QOS {
            assert_eq!(json(&q), format!("\"{}\"", q.as_str()));
        }
        for d in DRIVERS {
            assert_eq!(json(&d), format!("\"{}\"", d.as_str()));
        }
        let id = parse(&format!("/kubepods/besteffort/pod{UID}/crio-{CID}"));
        let v = serde_json::to_value(&id).unwrap_or_default();
        assert_eq!(v["pod"]["uid"], UID);
        assert_eq!(v["pod"]["qos_class"], "besteffort");
        assert_eq!(v["pod"]["driver"], "cgroupfs");
        assert_eq!(v["container"]["runtime"], "crio");
        assert_eq!(v["systemd_unit"], serde_json::Value::Null);
    }

    mod erased {
        pub trait Ser {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap_or_default()
            }
        }
    }
}
