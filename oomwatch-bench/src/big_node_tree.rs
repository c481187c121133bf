//! The big node of section 5, built for real: a kubepods-like tree of memory cgroups under a
//! root of the bench's own, real sleeping processes spread over it, and containerd's bundle
//! files for its pods. Everything is removed on drop (processes killed first), also on error.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{
    storm::{memory_mount, remove_cgroup},
    sys,
};

const SIGKILL: i32 = 9;
/// How long a sleeper sleeps at most (they are killed long before; this bounds any orphan).
const SLEEP_SECS: &str = "1800";

/// The name of the tree's root below the memory mount. `Cgroups::create` names its cgroups
/// `oomwatch-bench-<pid>-<tag>-<i>`, so a tag starting `bignode/` puts them inside this tree.
fn root_name() -> String {
    format!("oomwatch-bench-{}-bignode", std::process::id())
}

/// A pod's quality-of-service class: where its cgroup is and which limits it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// One container of a pod (the sandbox too).
struct Container {
    id: String,
    name: String,
    image: &'static str,
    sandbox: bool,
    limit: Option<u64>,
}

/// One pod: its identity, where its cgroup is, its containers (the sandbox first).
struct Pod {
    uid: String,
    name: String,
    namespace: String,
    qos: Qos,
    containers: Vec<Container>,
}

/// The tree: every directory created (parents first) and where processes go.
pub struct Tree {
    mount: PathBuf,
    v2: bool,
    dirs: Vec<PathBuf>,
    /// Leaf cgroups that get processes: (dir, is a pod's sandbox).
    leaves: Vec<(PathBuf, bool)>,
    pods: Vec<Pod>,
}

/// A deterministic 64-hex container id.
fn hex_id(pod: usize, container: usize) -> String {
    let seed = (std::process::id() as u64) << 32 | (pod as u64) << 8 | container as u64;
    (0..4)
        .map(|i| {
            let x = seed.wrapping_add(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!("{:016x}", x ^ (x >> 29))
        })
        .collect()
}

/// A pod UID shaped like the API server's (a v4 UUID).
fn pod_uid(pod: usize) -> String {
    let h = hex_id(pod, 255);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Pod `i` of the node: 3 in 10 guaranteed, 5 burstable, 2 best-effort; 1 to 3 containers
/// (and the sandbox); limits as the kubelet sets them for each class.
fn pod(i: usize) -> Pod {
    let qos = match i % 10 {
        0..=2 => Qos::Guaranteed,
        3..=7 => Qos::Burstable,
        _ => Qos::BestEffort,
    };
    let apps = 1 + i % 3;
    let mut containers = vec![Container {
        id: hex_id(i, 0),
        name: "POD".into(),
        image: "registry.k8s.io/pause:3.9",
        sandbox: true,
        limit: None,
    }];
    for j in 0..apps {
        let limit = match qos {
            Qos::Guaranteed => Some((256 << 20) * (j as u64 + 1)),
            Qos::Burstable if j % 2 == 0 => Some(512 << 20),
            _ => None,
        };
        containers.push(Container {
            id: hex_id(i, j + 1),
            name: ["app", "sidecar", "log-shipper"][j].into(),
            image: [
                "docker.io/library/nginx:1.25",
                "quay.io/envoy:v1.29",
                "fluent-bit:3.0",
            ][j],
            sandbox: false,
            limit,
        });
    }
    Pod {
        uid: pod_uid(i),
        name: format!("web-{i:03}-7d4b9c-x{:04}", i * 37 % 10_000),
        namespace: ["default", "shop", "monitoring", "kube-system"][i % 4].into(),
        qos,
        containers,
    }
}

impl Pod {
    /// The pod's cgroup below the tree's root (cgroupfs driver layout).
    fn rel(&self) -> String {
        match self.qos {
            Qos::Guaranteed => format!("kubepods/pod{}", self.uid),
            Qos::Burstable => format!("kubepods/burstable/pod{}", self.uid),
            Qos::BestEffort => format!("kubepods/besteffort/pod{}", self.uid),
        }
    }

    /// The pod's own limit: the sum of its containers' when every one has a limit.
    fn limit(&self) -> Option<u64> {
        let apps: Vec<_> = self.containers.iter().filter(|c| !c.sandbox).collect();
        apps.iter()
            .map(|c| c.limit)
            .sum::<Option<u64>>()
            .filter(|_| self.qos != Qos::BestEffort)
    }

    /// Cgroups of the pod: itself, its sandbox and containers.
    fn cgroups(&self) -> usize {
        1 + self.containers.len()
    }
}

impl Tree {
    /// `cgroups` memory cgroups in all (the root included): `pods` pods under
    /// `kubepods/{burstable,besteffort}` (guaranteed ones directly under `kubepods`), the
    /// rest `system.slice/*.service` and `user.slice` sessions.
    pub fn create(cgroups: usize, pods: usize) -> Result<Tree> {
        let (mount, v2) = memory_mount()?;
        let mut t = Tree {
            mount,
            v2,
            dirs: Vec::new(),
            leaves: Vec::new(),
            pods: (0..pods).map(pod).collect(),
        };
        let fixed = 6 + t.pods.iter().map(Pod::cgroups).sum::<usize>();
        let Some(system) = cgroups.checked_sub(fixed) else {
            bail!("{cgroups} cgroups are too few for {pods} pods ({fixed} needed)");
        };
        t.mkdir("", None)?;
        t.mkdir("kubepods", Some(20 << 30))?;
        t.mkdir("kubepods/burstable", None)?;
        t.mkdir("kubepods/besteffort", None)?;
        t.create_pods()?;
        t.mkdir("system.slice", None)?;
        t.mkdir("user.slice", None)?;
        t.create_system(system)?;
        Ok(t)
    }

    fn create_pods(&mut self) -> Result<()> {
        for i in 0..self.pods.len() {
            let (rel, limit) = (self.pods[i].rel(), self.pods[i].limit());
            self.mkdir(&rel, limit)?;
            let cs: Vec<_> = self.pods[i]
                .containers
                .iter()
                .map(|c| (format!("{rel}/{}", c.id), c.limit, c.sandbox))
                .collect();
            for (dir, limit, sandbox) in cs {
                self.mkdir(&dir, limit)?;
                self.leaves.push((self.path(&dir), sandbox));
            }
        }
        Ok(())
    }

    /// `n` system cgroups: services (every 7th with a limit), one in 10 a user session.
    fn create_system(&mut self, n: usize) -> Result<()> {
        let names = [
            "nginx",
            "postgresql",
            "kubelet",
            "containerd",
            "sshd",
            "cron",
            "rsyslog",
        ];
        let mut made = 0;
        for i in 0.. {
            if made == n {
                break;
            }
            let rel = if i % 10 == 9 && made + 2 <= n {
                let user = format!("user.slice/user-{}.slice", 1000 + i);
                self.mkdir(&user, None)?;
                made += 1;
                format!("{user}/session-{i}.scope")
            } else {
                format!("system.slice/{}-{i}.service", names[i % names.len()])
            };
            let limit = (i % 7 == 0).then_some(512 << 20);
            self.mkdir(&rel, limit)?;
            self.leaves.push((self.path(&rel), false));
            made += 1;
        }
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        let root = self.mount.join(root_name());
        if rel.is_empty() {
            root
        } else {
            root.join(rel)
        }
    }

    /// Creates one cgroup (`rel` below the root) with a limit of its own or none.
    fn mkdir(&mut self, rel: &str, limit: Option<u64>) -> Result<()> {
        let dir = self.path(rel);
        if self.v2 {
            if let Some(parent) = dir.parent().filter(|_| !rel.is_empty()) {
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
            }
        }
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        self.dirs.push(dir.clone());
        if let Some(bytes) = limit {
            let file = if self.v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            fs::write(dir.join(file), bytes.to_string())
                .with_context(|| format!("set {}/{file}", dir.display()))?;
        }
        Ok(())
    }

    /// Cgroups created.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// The `Cgroups::create` tag that puts storm cgroups `<what>-<i>` in the first best-effort
    /// pod of the tree (or its first pod).
    pub fn storm_tag(&self, what: &str) -> String {
        let pod = self
            .pods
            .iter()
            .find(|p| p.qos == Qos::BestEffort)
            .or(self.pods.first());
        let rel = pod.map_or("kubepods/besteffort".into(), Pod::rel);
        format!("bignode/{rel}/{what}")
    }

    /// Writes containerd's bundle (`config.json` with the CRI plugin's annotations) of every
    /// container of every pod under `state`; returns how many.
    pub fn write_bundles(&self, state: &Path) -> Result<usize> {
        let tasks = state.join("io.containerd.runtime.v2.task/k8s.io");
        let mut n = 0;
        for p in &self.pods {
            let sandbox_id = &p.containers[0].id;
            for c in &p.containers {
                let dir = tasks.join(&c.id);
                fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                let spec = oci_spec(p, c, sandbox_id);
                let file = dir.join("config.json");
                fs::write(&file, serde_json::to_vec(&spec)?)
                    .with_context(|| format!("write {}", file.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// An OCI runtime spec the size and shape of one containerd writes for a CRI container.
fn oci_spec(p: &Pod, c: &Container, sandbox_id: &str) -> Value {
    let mut a = json!({
        "io.kubernetes.cri.container-type": if c.sandbox { "sandbox" } else { "container" },
        "io.kubernetes.cri.sandbox-id": sandbox_id,
        "io.kubernetes.cri.sandbox-name": p.name,
        "io.kubernetes.cri.sandbox-namespace": p.namespace,
        "io.kubernetes.cri.sandbox-uid": p.uid,
        "io.kubernetes.cri.image-name": c.image,
    });
    if !c.sandbox {
        a["io.kubernetes.cri.container-name"] = json!(c.name);
    }
    let env: Vec<String> = (0..20)
        .map(|i| format!("SERVICE_{i}_PORT=tcp://10.96.{i}.1:{}", 8000 + i))
        .collect();
    json!({
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 65535, "gid": 65535},
            "args": if c.sandbox { vec!["/pause"] } else { vec!["/app", "--port=8080"] },
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]},
            "oomScoreAdj": if p.qos == Qos::Guaranteed { -997 } else { 999 },
        },
        "root": {"path": "rootfs", "readonly": c.sandbox},
        "hostname": p.name,
        "mounts": (0..8).map(|i| json!({
            "destination": format!("/var/run/secrets/{i}"), "type": "bind",
            "source": format!("/var/lib/kubelet/pods/{}/volumes/{i}", p.uid),
            "options": ["rbind", "ro"]})).collect::<Vec<_>>(),
        "annotations": a,
        "linux": {
            "resources": {"memory": {"limit": c.limit}},
            "cgroupsPath": format!("/kubepods/pod{}/{}", p.uid, c.id),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        },
    })
}

impl Drop for Tree {
    /// Kills whatever still runs in the tree, then removes it, deepest first.
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
                sys::signal(pid, SIGKILL);
            }
        }
        for dir in self.dirs.iter().rev() {
            remove_cgroup(dir);
        }
    }
}

/// Real processes parked in the tree's leaves (`sleep`), killed and reaped on drop.
pub struct Sleepers {
    children: Vec<Child>,
    pub spawn_secs: f64,
}

impl Sleepers {
    /// `n` sleepers: one in each pod's sandbox (its pause process), the rest round-robin over
    /// the other leaves. Fails early when the pid space cannot take them.
    pub fn start(tree: &Tree, n: usize) -> Result<Sleepers> {
        check_pid_room(n)?;
        let t0 = Instant::now();
        let sandboxes = tree.leaves.iter().filter(|(_, s)| *s).map(|(d, _)| d);
        let others: Vec<&PathBuf> = tree
            .leaves
            .iter()
            .filter(|(_, s)| !*s)
            .map(|(d, _)| d)
            .collect();
        let targets = sandboxes.chain(others.iter().copied().cycle()).take(n);
        let mut s = Sleepers {
            children: Vec::with_capacity(n),
            spawn_secs: 0.0,
        };
        for dir in targets {
            let child = Command::new("sleep")
                .arg(SLEEP_SECS)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawn sleep")?;
            let pid = child.id();
            s.children.push(child);
            fs::write(dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("move {pid} to {}", dir.display()))?;
        }
        s.spawn_secs = t0.elapsed().as_secs_f64();
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &self.children {
            sys::signal(c.id(), SIGKILL);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// Fails when `n` more processes would not fit under `kernel.pid_max` with room to spare.
fn check_pid_room(n: usize) -> Result<()> {
    let max: usize = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32_768);
    let now = fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    if now + n + 2_000 > max {
        bail!(
            "{n} sleepers do not fit: {now} processes running, kernel.pid_max {max} \
             (raise it: sysctl kernel.pid_max=4194304)"
        );
    }
    Ok(())
}
