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
//! /machine.slice/libpod-<id>.scope               unit libpod-<id>.scope (Podman has no Runtime)
//! /                                              nothing
//! ```
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
    /// No kubepods level in the path (includes `/`).
    NotKubernetes,
    /// Not a well-formed cgroup path (empty, relative, `..`).
    Invalid,
}

pub(crate) fn class(cgroup: &str) -> PathClass {
    let Some(comps) = components(cgroup) else {
        return PathClass::Invalid;
    };
    match scan(&comps) {
        Scan::NotKubernetes => PathClass::NotKubernetes,
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

/// A path without a kubepods level.
fn outside(comps: &[&str]) -> Identity {
    let mut id = Identity::default();
    for (i, &c) in comps.iter().enumerate() {
        let scope = scope_container(c);
        if id.container.is_none() {
            let found = scope.or_else(|| {
                let next = comps.get(i + 1).copied()?;
                (c == "docker" && is_container_id(next)).then_some((Runtime::Docker, next))
            });
            if let Some((runtime, cid)) = found {
                let end = if scope.is_some() { i } else { i + 1 };
                id.container = Some(Container {
                    runtime: Some(runtime),
                    id: cid.to_owned(),
                    cgroup: join(&comps[..=end]),
                });
            }
        }
        if scope.is_none() && is_unit(c) {
            id.systemd_unit = Some(c.to_owned());
        }
        if is_slice(c) {
            id.systemd_slice = Some(c.to_owned());
        }
    }
    id
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
