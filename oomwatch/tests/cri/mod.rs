//! A real `containerd` with its CRI plugin, driven through the CRI (gRPC over its unix socket)
//! the way kubelet drives it. Its own config, root, state directory (non-default: the agent's
//! `--containerd-state` is exercised), socket; cgroupfs driver, host network (no CNI),
//! `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE). Images are OCI archives built
//! locally from Debian's busybox-static and imported with `ctr` into the `k8s.io` namespace.
//! Pods go below a private kubelet `--cgroup-root` (`/oomwatch-cri-<pid>`), so
//! `…/kubepods/{burstable,besteffort,}/pod<uid>` is ours alone. Dropped: pods stopped and
//! removed, containerd stopped, leftovers killed, mounts and cgroups undone.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::common::runtime::{
    kill_leftovers, output, stop_child, tool, unmount_under, wait_for, BUSYBOX,
};

/// The image test containers run (busybox-static as `/bin/busybox`, entrypoint busybox).
pub const IMAGE: &str = "docker.io/oomwatch-test/busybox:1";
/// The pod sandbox ("pause") image: busybox sleeping.
pub const PAUSE: &str = "docker.io/oomwatch-test/pause:1";

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    /// The kubelet `--cgroup-root` of our pods.
    pub cgroup_root: String,
    pods: Vec<String>,
    /// The CNI bridge of pods not on the host network (deleted on drop).
    bridge: String,
}

/// `oomw-<tempdir suffix>`: an interface name (at most 15 bytes) of our own.
fn bridge_name(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy();
    let suffix: String = name.chars().rev().take(6).collect();
    format!("oomw-{}", suffix.to_lowercase())
}

/// A bridge + host-local network of our own (no masquerade, no port maps, no firewall).
fn cni(r: &Path, bridge: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{bridge}","plugins":[{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{r}/cni-ipam","ranges":[[{{"subnet":"10.254.77.0/24"}}]]}}}}]}}"#,
        r = r.display()
    )
}

fn config(r: &Path) -> String {
    format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
[grpc]
  address = "{r}/containerd.sock"
[ttrpc]
  address = "{r}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{r}/cni"
"#,
        r = r.display()
    )
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("oomwatch-cri-")
            .tempdir()
            .unwrap();
        let r = dir.path();
        fs::write(r.join("containerd.toml"), config(r)).unwrap();
        let bridge = bridge_name(r);
        fs::create_dir_all(r.join("cni")).unwrap();
        fs::write(r.join("cni/10-oomwatch.conflist"), cni(r, &bridge)).unwrap();
        let child = spawn(r);
        let sock = r.join("containerd.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = sock.clone();
        wait_for(
            "containerd",
            &r.join("containerd.log"),
            Duration::from_secs(30),
            || path.exists(),
        );
        let channel = rt
            .block_on(
                Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = sock.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(p).await?,
                            ))
                        }
                    })),
            )
            .expect("connect to containerd's CRI");
        let mut c = Containerd {
            cgroup_root: format!("/{bridge}"),
            bridge,
            dir,
            child: Some(child),
            rt,
            client: RuntimeServiceClient::new(channel),
            pods: Vec::new(),
        };
        let log = c.dir.path().join("containerd.log");
        wait_for("the CRI", &log, Duration::from_secs(30), || {
            let req = cri::VersionRequest::default();
            c.rt.block_on(c.client.version(req)).is_ok()
        });
        c.import(IMAGE, r#"["/bin/busybox"]"#);
        c.import(PAUSE, r#"["/bin/busybox","sleep","2147483647"]"#);
        c
    }

    /// Stops containerd (its shims and containers keep running, their bundles stay).
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }

    /// Starts containerd again after [`Containerd::stop_daemon`] and waits for its CRI.
    pub fn start_daemon(&mut self) {
        self.child = Some(spawn(self.dir.path()));
        let log = self.dir.path().join("containerd.log");
        wait_for("the CRI", &log, Duration::from_secs(30), || {
            let req = cri::VersionRequest::default();
            self.rt.block_on(self.client.version(req)).is_ok()
        });
    }

    /// The state directory (`containerd --state`), as the agent's `--containerd-state` takes it.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ctr(&self) -> Command {
        let mut c = tool("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "k8s.io"]);
        c
    }

    /// Builds an OCI archive of busybox-static with `entrypoint` and imports it as `name`.
    fn import(&self, name: &str, entrypoint: &str) {
        let tar = oci_archive(
            &self.dir.path().join(name.replace(['/', ':'], "_")),
            name,
            entrypoint,
        );
        output(self.ctr().args(["images", "import"]).arg(&tar));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Imports an OCI archive into the CRI's `k8s.io` namespace.
    pub fn import_archive(&self, tar: &Path) {
        output(self.ctr().args(["images", "import"]).arg(tar));
    }

    /// RunPodSandbox with a config of the caller's.
    pub fn run_pod_config(&mut self, config: cri::PodSandboxConfig) -> String {
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let id = self
            .call(|mut c| async move { c.run_pod_sandbox(req).await })
            .pod_sandbox_id;
        self.pods.push(id.clone());
        id
    }

    /// CreateContainer + StartContainer with a config of the caller's.
    pub fn run_container_config(
        &mut self,
        sandbox: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> String {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let id = self
            .call(|mut c| async move { c.create_container(req).await })
            .container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.call(|mut c| async move { c.start_container(start).await });
        id
    }

    /// StopContainer with a grace period, as kubelet stops a pod's container.
    pub fn stop_container_grace(&mut self, id: &str, timeout: i64) {
        let req = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        };
        self.call(|mut c| async move { c.stop_container(req).await });
    }

    /// RunPodSandbox as kubelet (cgroupfs driver) does it; `qos` is "burstable",
    /// "besteffort" or "" (guaranteed). Returns the sandbox id.
    pub fn run_pod(&mut self, pod: &Pod) -> String {
        let req = cri::RunPodSandboxRequest {
            config: Some(pod.config(&self.cgroup_root, self.dir.path())),
            runtime_handler: String::new(),
        };
        let id = self
            .call(|mut c| async move { c.run_pod_sandbox(req).await })
            .pod_sandbox_id;
        self.pods.push(id.clone());
        id
    }

    /// CreateContainer + StartContainer of busybox `sh -c script` with kubelet's labels and
    /// annotations; `limit`: the container's memory limit. Returns the container id.
    pub fn run_container(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        name: &str,
        attempt: u32,
        limit: Option<i64>,
        script: &str,
    ) -> String {
        let config = container_config(pod, name, attempt, limit, script);
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_owned(),
            config: Some(config),
            sandbox_config: Some(pod.config(&self.cgroup_root, self.dir.path())),
        };
        let id = self
            .call(|mut c| async move { c.create_container(req).await })
            .container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.call(|mut c| async move { c.start_container(start).await });
        id
    }

    pub fn stop_container(&mut self, id: &str) {
        let req = cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: 0,
        };
        self.call(|mut c| async move { c.stop_container(req).await });
    }

    pub fn remove_container(&mut self, id: &str) {
        let req = cri::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(|mut c| async move { c.remove_container(req).await });
    }

    pub fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        let req = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.call(|mut c| async move { c.container_status(req).await })
            .status
            .unwrap()
    }

    pub fn sandbox_status(&mut self, id: &str) -> cri::PodSandboxStatus {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        self.call(|mut c| async move { c.pod_sandbox_status(req).await })
            .status
            .unwrap()
    }

    /// One CRI call; panics with the runtime's own error and log tail.
    fn call<T, F, Fut>(&mut self, f: F) -> T
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.client.clone());
        match self.rt.block_on(fut) {
            Ok(r) => r.into_inner(),
            Err(e) => {
                let text =
                    fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!("CRI call failed: {e}\ncontainerd log:\n{}", tail.join("\n"))
            }
        }
    }

    fn remove_pods(&mut self) {
        for id in std::mem::take(&mut self.pods) {
            let stop = cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            };
            let _ = self.rt.block_on(self.client.stop_pod_sandbox(stop));
            let rm = cri::RemovePodSandboxRequest { pod_sandbox_id: id };
            let _ = self.rt.block_on(self.client.remove_pod_sandbox(rm));
        }
    }
}

/// containerd with the configuration under `r`, its log appended to `r/containerd.log`.
fn spawn(r: &Path) -> std::process::Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(r.join("containerd.log"))
        .unwrap();
    tool("containerd")
        .arg("--config")
        .arg(r.join("containerd.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start containerd")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_none() {
            self.start_daemon();
        }
        self.remove_pods();
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
        kill_leftovers(self.dir.path());
        unmount_under(self.dir.path());
        remove_cgroup_trees(&self.cgroup_root);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills what is left below `root` in every cgroup v1 controller and removes the directories,
/// deepest first (runc made them in each controller for the pods' `cgroup_parent`).
fn remove_cgroup_trees(root: &str) {
    let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        let top = c.path().join(root.trim_start_matches('/'));
        if top.is_dir() {
            remove_tree(&top);
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..100 {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process in one of our test pods' cgroups.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod as kubelet sees it.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// "burstable", "besteffort", or "" (guaranteed).
    pub qos: &'static str,
}

impl Pod {
    /// The pod's cgroup (kubelet's cgroupfs naming) below `cgroup_root`.
    pub fn cgroup(&self, cgroup_root: &str) -> String {
        let qos = if self.qos.is_empty() {
            String::new()
        } else {
            format!("/{}", self.qos)
        };
        format!("{cgroup_root}/kubepods{qos}/pod{}", self.uid)
    }

    pub fn config(&self, cgroup_root: &str, dir: &Path) -> cri::PodSandboxConfig {
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), self.name.clone()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                self.namespace.clone(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), self.uid.clone()),
            ("app".to_owned(), self.name.clone()),
        ]);
        let annotations = HashMap::from([
            ("kubernetes.io/config.source".to_owned(), "api".to_owned()),
            (
                "kubernetes.io/config.seen".to_owned(),
                "2026-12-05T12:00:00Z".to_owned(),
            ),
        ]);
        let logs = dir
            .join("pods")
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid));
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // kubelet leaves it empty for a host-network pod (no UTS namespace of its own).
            hostname: String::new(),
            log_directory: logs.to_string_lossy().into_owned(),
            labels,
            annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup(cgroup_root),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn container_config(
    pod: &Pod,
    name: &str,
    attempt: u32,
    limit: Option<i64>,
    script: &str,
) -> cri::ContainerConfig {
    let labels = HashMap::from([
        ("io.kubernetes.container.name".to_owned(), name.to_owned()),
        ("io.kubernetes.pod.name".to_owned(), pod.name.clone()),
        (
            "io.kubernetes.pod.namespace".to_owned(),
            pod.namespace.clone(),
        ),
        ("io.kubernetes.pod.uid".to_owned(), pod.uid.clone()),
    ]);
    let annotations = HashMap::from([
        (
            "io.kubernetes.container.hash".to_owned(),
            "5a9a8f1e".to_owned(),
        ),
        (
            "io.kubernetes.container.restartCount".to_owned(),
            attempt.to_string(),
        ),
        (
            "io.kubernetes.container.terminationMessagePath".to_owned(),
            "/dev/termination-log".to_owned(),
        ),
        (
            "io.kubernetes.container.terminationMessagePolicy".to_owned(),
            "File".to_owned(),
        ),
        (
            "io.kubernetes.pod.terminationGracePeriod".to_owned(),
            "30".to_owned(),
        ),
    ]);
    let resources = cri::LinuxContainerResources {
        cpu_shares: 2,
        memory_limit_in_bytes: limit.unwrap_or(0),
        oom_score_adj: if limit.is_some() { -997 } else { 1000 },
        ..Default::default()
    };
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.to_owned(),
            ..Default::default()
        }),
        args: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/{attempt}.log"),
        labels,
        annotations,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// An OCI image archive (`oci-layout`, `index.json`, blobs) of busybox-static at
/// `/bin/busybox` with `entrypoint`, named `name` (containerd's `io.containerd.image.name`).
pub fn oci_archive(dir: &Path, name: &str, entrypoint: &str) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    fs::create_dir_all(&blobs).unwrap();
    fs::copy(BUSYBOX, dir.join("rootfs/bin/busybox")).unwrap();
    let layer = dir.join("layer.tar");
    output(
        tool("tar")
            .arg("-C")
            .arg(dir.join("rootfs"))
            .arg("-cf")
            .arg(&layer)
            .arg("bin"),
    );
    let layer = blob(&blobs, &fs::read(&layer).unwrap());
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":{entrypoint},"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        layer.0
    );
    let config = blob(&blobs, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{}","size":{}}}]}}"#,
        config.0, config.1, layer.0, layer.1
    );
    let manifest = blob(&blobs, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"io.containerd.image.name":"{name}","org.opencontainers.image.ref.name":"{name}"}}}}]}}"#,
        manifest.0, manifest.1
    );
    fs::write(dir.join("index.json"), index).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let tar = dir.with_extension("tar");
    output(tool("tar").arg("-C").arg(dir).arg("-cf").arg(&tar).args([
        "oci-layout",
        "index.json",
        "blobs",
    ]));
    tar
}

/// Stores `data` as a blob; its sha256 (hex) and size.
fn blob(blobs: &Path, data: &[u8]) -> (String, usize) {
    let tmp = blobs.join("tmp");
    fs::write(&tmp, data).unwrap();
    let sum = output(tool("sha256sum").arg(&tmp));
    let hex = sum.split_whitespace().next().unwrap().to_owned();
    fs::rename(&tmp, blobs.join(&hex)).unwrap();
    (hex, data.len())
}
