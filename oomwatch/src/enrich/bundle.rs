//! Kubernetes names without an API server: the OCI runtime bundle files that the container
//! runtime writes on the node.
//!
//! The cgroup path of a victim gives a container id; the runtime's per-container files give the
//! pod name, namespace, pod uid and container name:
//!
//! | runtime | file (under `--host-root`) | keys |
//! |---|---|---|
//! | containerd (CRI) | `<state>/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`, then the v1 shim's `<state>/io.containerd.runtime.v1.linux/k8s.io/<id>/config.json` (state: `/run/containerd`, `/run/k3s/containerd`, `--containerd-state`) | OCI `annotations`: `io.kubernetes.cri.sandbox-namespace`, `…sandbox-name`, `…sandbox-uid`, `…container-name`, `…container-type` |
//! | CRI-O | `<storage>/overlay-containers/<id>/userdata/config.json` (storage: `/var/lib/containers/storage`, then `/run/containers/storage`) | OCI `annotations`: `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, `io.kubernetes.cri-o.ContainerType` |
//! | Docker (also cri-dockerd, dockershim) | `<root>/containers/<id>/config.v2.json` (root: `/var/lib/docker`, `--docker-root`) | `Name`, `Config.Image`; `Config.Labels`: `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, `io.kubernetes.docker.type`, `com.docker.compose.project`, `com.docker.compose.service` |
//! | podman | `<root>/overlay-containers/containers.json` (root: `/var/lib/containers/storage`, `--podman-root`; see [`super::podman`]), and for labels podman 4's BoltDB `<root>/libpod/bolt_state.db` | `names`, `metadata`'s `image-name`; `labels` `com.docker.compose.project`, `com.docker.compose.service` |
//!
//! containerd and CRI-O also give the image (`io.kubernetes.cri.image-name`,
//! `io.kubernetes.cri-o.ImageName`). Only these fields are parsed; the rest (a container's
//! environment above all) is skipped unparsed and never kept.
//!
//! The runtime deletes a bundle when its container goes away, which for an OOM-killed container
//! can be before the agent asks; [`BundleReader::warm`] reads every bundle present into a
//! bounded LRU cache ahead of time so those victims are still named.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::podman;
use crate::record::Runtime;

/// Files larger than this are skipped, never read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Bound on podman's container list (all containers of a storage root in one file).
pub const MAX_LIST_BYTES: u64 = 16 * 1024 * 1024;
/// Bound on podman's BoltDB state (read for labels only; a larger file is skipped).
pub const MAX_PODMAN_DB_BYTES: u64 = 32 * 1024 * 1024;
/// Default bound on cached names.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;
/// How long a miss is remembered (a container may be created after it).
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Bound on remembered misses.
pub const NEGATIVE_CAPACITY: usize = 256;

/// containerd task directories (CRI namespace `k8s.io`) under a state directory: v2 shim, v1.
pub const CONTAINERD_TASK_DIRS: [&str; 2] = [
    "io.containerd.runtime.v2.task/k8s.io",
    "io.containerd.runtime.v1.linux/k8s.io",
];

/// containerd CRI plugin annotation keys.
pub mod containerd_keys {
    pub const NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const POD: &str = "io.kubernetes.cri.sandbox-name";
    pub const POD_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER: &str = "io.kubernetes.cri.container-name";
    /// `sandbox` (the pause container) or `container`.
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
}

/// Kubelet's labels, which CRI-O copies into OCI annotations and Docker keeps as labels.
pub mod kubelet_keys {
    pub const NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD: &str = "io.kubernetes.pod.name";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// `POD` for the sandbox.
    pub const CONTAINER: &str = "io.kubernetes.container.name";
    /// CRI-O: `sandbox` or `container`.
    pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
    /// dockershim / cri-dockerd: `podsandbox` or `container`.
    pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
    /// The container name kubelet gives the sandbox.
    pub const SANDBOX_CONTAINER_NAME: &str = "POD";
    /// CRI-O's image annotation.
    pub const CRIO_IMAGE: &str = "io.kubernetes.cri-o.ImageName";
}

/// containerd CRI's image annotation.
pub const CONTAINERD_IMAGE: &str = "io.kubernetes.cri.image-name";

/// Docker Compose's labels (podman-compose sets them too).
pub mod compose_keys {
    pub const PROJECT: &str = "com.docker.compose.project";
    pub const SERVICE: &str = "com.docker.compose.service";
}

/// Kubernetes names of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    /// `None` for the sandbox (pause) container.
    pub container: Option<String>,
    /// The pod's sandbox (pause / infra) container.
    pub sandbox: bool,
    /// The runtime's own name of the container (Docker's `Name` without its `/`, podman's).
    pub name: Option<String>,
    /// The image, as the runtime names it.
    pub image: Option<String>,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    pub source: BundleSource,
}

/// Which runtime's files named a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum BundleSource {
    #[serde(rename = "containerd")]
    Containerd,
    #[serde(rename = "crio")]
    Crio,
    #[serde(rename = "docker")]
    Docker,
    #[serde(rename = "podman")]
    Podman,
}

impl BundleSource {
    /// The runtime whose files these are.
    pub fn runtime(self) -> Runtime {
        match self {
            Self::Containerd => Runtime::Containerd,
            Self::Crio => Runtime::Crio,
            Self::Docker => Runtime::Docker,
            Self::Podman => Runtime::Podman,
        }
    }

    /// Where the runtime a cgroup path names keeps its files.
    pub fn of(runtime: Runtime) -> Self {
        match runtime {
            Runtime::Containerd => Self::Containerd,
            Runtime::Crio => Self::Crio,
            Runtime::Docker => Self::Docker,
            Runtime::Podman => Self::Podman,
        }
    }
}

const ALL_SOURCES: [BundleSource; 4] = [
    BundleSource::Containerd,
    BundleSource::Crio,
    BundleSource::Docker,
    BundleSource::Podman,
];

/// Where the runtimes keep their files. Every path is taken under `host_root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleConfig {
    /// The host's `/` as this process sees it (`/host` in a pod with the host mounted).
    pub host_root: PathBuf,
    /// containerd state directories (`--state`).
    pub containerd_state: Vec<PathBuf>,
    /// containers/storage roots holding `overlay-containers/<id>/userdata` (graph and run root).
    pub crio_storage: Vec<PathBuf>,
    /// Docker data roots (`--data-root`).
    pub docker_root: Vec<PathBuf>,
    /// podman storage roots (`--root`).
    pub podman_root: Vec<PathBuf>,
    /// Bound on cached names; 0 disables the cache.
    pub cache_capacity: usize,
}

impl Default for BundleConfig {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            containerd_state: vec![
                PathBuf::from("/run/containerd"),
                PathBuf::from("/run/k3s/containerd"),
            ],
            crio_storage: vec![
                PathBuf::from("/var/lib/containers/storage"),
                PathBuf::from("/run/containers/storage"),
            ],
            docker_root: vec![PathBuf::from("/var/lib/docker")],
            podman_root: vec![PathBuf::from("/var/lib/containers/storage")],
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// Reads and caches container names from runtime bundle files.
pub struct BundleReader {
    config: BundleConfig,
    cache: Lru,
    /// Recent misses, oldest first.
    misses: VecDeque<(String, Instant)>,
    negative_ttl: Duration,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    /// Causes of missing names already logged (one line each).
    logged: HashSet<String>,
    /// Logs no miss (a second reader of the same directories, whose causes the first logs).
    quiet: bool,
}

impl fmt::Debug for BundleReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleReader")
            .field("config", &self.config)
            .field("cached", &self.cache.map.len())
            .field("evicted", &self.cache.evicted)
            .field("misses", &self.misses.len())
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl BundleReader {
    pub fn new(config: BundleConfig) -> Self {
        let cache = Lru::new(config.cache_capacity);
        Self {
            config,
            cache,
            misses: VecDeque::new(),
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            clock: Box::new(Instant::now),
            logged: HashSet::new(),
            quiet: false,
        }
    }

    /// Logs nothing about missing names: another reader of the same directories (the events')
    /// does, once per cause.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// How long a miss suppresses another read of the same id (default
    /// [`DEFAULT_NEGATIVE_TTL`]; zero disables the negative cache).
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The clock the negative cache uses (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// `hint` names the runtime the cgroup path suggested (try it first); None tries all.
    pub fn lookup(&mut self, container_id: &str, hint: Option<BundleSource>) -> Option<Arc<Names>> {
        if !valid_id(container_id) {
            return None;
        }
        if let Some(hit) = self.cache.get(container_id) {
            return Some(hit);
        }
        let now = (self.clock)();
        self.expire_misses(now);
        if self.misses.iter().any(|(id, _)| id == container_id) {
            return None;
        }
        for source in order(hint) {
            for dir in self.dirs(source) {
                if let Some(names) = read_names(source, &dir, container_id) {
                    let names = Arc::new(names);
                    self.cache
                        .insert(container_id.to_owned(), Arc::clone(&names));
                    return Some(names);
                }
            }
        }
        if let Some(source) = hint {
            self.log_miss(source, container_id);
        }
        if !self.negative_ttl.is_zero() {
            if self.misses.len() >= NEGATIVE_CAPACITY {
                self.misses.pop_front();
            }
            self.misses.push_back((container_id.to_owned(), now));
        }
        None
    }

    /// Reads every bundle present now into the cache (bounded by capacity), so that containers
    /// that exit right after an OOM kill (and whose bundle the runtime deletes) are still named.
    /// Returns how many were cached: the containers this pass found named (newly read, or
    /// already cached and marked recently used), at most the cache capacity.
    pub fn warm(&mut self) -> usize {
        let capacity = self.config.cache_capacity;
        let mut named: HashSet<String> = HashSet::new();
        for source in ALL_SOURCES {
            for dir in self.dirs(source) {
                if source == BundleSource::Podman {
                    self.warm_podman(&dir, &mut named);
                    continue;
                }
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if named.len() >= capacity {
                        return named.len();
                    }
                    let file_name = entry.file_name();
                    let Some(id) = file_name.to_str() else {
                        continue;
                    };
                    if !valid_id(id) || named.contains(id) {
                        continue;
                    }
                    if !self.cache.touch(id) {
                        let Some(names) = read_names(source, &dir, id) else {
                            continue;
                        };
                        self.cache.insert(id.to_owned(), Arc::new(names));
                    }
                    named.insert(id.to_owned());
                }
            }
        }
        if !named.is_empty() {
            self.misses.retain(|(id, _)| !named.contains(id));
        }
        named.len()
    }

    /// podman's list holds every container of a storage root: read it once.
    fn warm_podman(&mut self, dir: &Path, named: &mut HashSet<String>) {
        let capacity = self.config.cache_capacity;
        for (id, names) in read_podman_list(dir, None) {
            if named.len() >= capacity {
                return;
            }
            if !valid_id(&id) || named.contains(&id) {
                continue;
            }
            if !self.cache.touch(&id) {
                self.cache.insert(id.clone(), Arc::new(names));
            }
            named.insert(id);
        }
    }

    /// One log line per cause: the runtime's state directories are all missing (a wrong or
    /// missing flag, another runtime on this node), or the container's state file is gone
    /// (removed with the container before the lookup, and not read ahead).
    fn log_miss(&mut self, source: BundleSource, container_id: &str) {
        if self.quiet {
            return;
        }
        let dirs = self.dirs(source);
        let runtime = source.runtime().as_str();
        let shown = dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if dirs.iter().all(|d| !d.is_dir()) {
            let hint = match source {
                BundleSource::Docker => " (set --docker-root for a non-default data root)",
                BundleSource::Podman => " (set --podman-root for a non-default storage root)",
                BundleSource::Containerd => " (set --containerd-state for a non-default state dir)",
                BundleSource::Crio => "",
            };
            if self.logged.insert(format!("{runtime} dirs")) {
                tracing::warn!(runtime, dirs = %shown, container = container_id,
                    "container runtime state directory missing: its containers get no \
                     names{hint}; logged once");
            }
        } else if self.logged.insert(format!("{runtime} gone")) {
            tracing::warn!(runtime, dirs = %shown, container = container_id,
                "container state file not found (removed before the lookup): the event has \
                 the container id and runtime, not its names; logged once");
        }
    }

    /// Names currently cached.
    pub fn cached(&self) -> usize {
        self.cache.map.len()
    }

    /// Entries removed to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.cache.evicted
    }

    fn expire_misses(&mut self, now: Instant) {
        while let Some((_, at)) = self.misses.front() {
            if now.saturating_duration_since(*at) < self.negative_ttl {
                break;
            }
            self.misses.pop_front();
        }
    }

    /// The directories holding one subdirectory per container id, for `source`.
    fn dirs(&self, source: BundleSource) -> Vec<PathBuf> {
        let root = &self.config.host_root;
        match source {
            BundleSource::Containerd => self
                .config
                .containerd_state
                .iter()
                .flat_map(|state| {
                    let state = under(root, state);
                    CONTAINERD_TASK_DIRS.map(|tasks| state.join(tasks))
                })
                .collect(),
            BundleSource::Crio => self
                .config
                .crio_storage
                .iter()
                .map(|storage| under(root, storage).join("overlay-containers"))
                .collect(),
            BundleSource::Docker => self
                .config
                .docker_root
                .iter()
                .map(|docker| under(root, docker).join("containers"))
                .collect(),
            BundleSource::Podman => self
                .config
                .podman_root
                .iter()
                .flat_map(|storage| {
                    let storage = under(root, storage);
                    podman::CONTAINER_DIRS.map(|d| storage.join(d))
                })
                .collect(),
        }
    }
}

/// 1..=64 lowercase hex digits: nothing else may reach a path.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `hint` first, then the others in the default order.
fn order(hint: Option<BundleSource>) -> Vec<BundleSource> {
    let mut sources = Vec::with_capacity(ALL_SOURCES.len());
    sources.extend(hint);
    sources.extend(ALL_SOURCES.into_iter().filter(|s| Some(*s) != hint));
    sources
}

/// `path` under `root`: an absolute path loses its leading `/`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn bundle_file(source: BundleSource, dir: &Path, id: &str) -> PathBuf {
    match source {
        BundleSource::Containerd => dir.join(id).join("config.json"),
        BundleSource::Crio => dir.join(id).join("userdata").join("config.json"),
        BundleSource::Docker => dir.join(id).join("config.v2.json"),
        BundleSource::Podman => dir.join(podman::LIST_FILE),
    }
}

/// A regular file of at most [`MAX_FILE_BYTES`], or None.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    read_bounded_to(path, MAX_FILE_BYTES)
}

/// A regular file of at most `max` bytes, or None.
fn read_bounded_to(path: &Path, max: u64) -> Option<Vec<u8>> {
    // Checked before opening: opening a FIFO would block, a huge file is never read.
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > max {
        tracing::debug!(path = %path.display(), bytes = meta.len(), "bundle file too large, skipped");
        return None;
    }
    let file = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
    // The file may have grown since the check: never read more than the bound (+1 to see it).
    file.take(max + 1).read_to_end(&mut buf).ok()?;
    if buf.len() as u64 > max {
        tracing::debug!(path = %path.display(), "bundle file grew too large, skipped");
        return None;
    }
    Some(buf)
}

/// An OCI runtime spec; only `annotations` matters (other fields are skipped unparsed).
#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: Value,
}

/// Docker's `config.v2.json`: `Name`, `Config.Image`, `Config.Labels` (`Config.Env` and
/// everything else skipped unparsed).
#[derive(Deserialize)]
struct DockerContainer {
    #[serde(default, rename = "Name")]
    name: Option<String>,
    #[serde(default, rename = "Config")]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default, rename = "Image")]
    image: Option<String>,
    #[serde(default, rename = "Labels")]
    labels: Option<Map<String, Value>>,
}

/// The names of container `id` from its runtime's file in `dir`.
fn read_names(source: BundleSource, dir: &Path, id: &str) -> Option<Names> {
    if source == BundleSource::Podman {
        return read_podman_list(dir, Some(id))
            .pop()
            .map(|(_, names)| names);
    }
    let path = bundle_file(source, dir, id);
    let bytes = read_bounded(&path)?;
    parse_names(source, &bytes).unwrap_or_else(|err| {
        tracing::debug!(path = %path.display(), %err, "unreadable bundle file");
        None
    })
}

/// The containers of podman's list in `dir` (all, or `only` the one with that id); none when
/// the list is missing, too large or not a list.
fn read_podman_list(dir: &Path, only: Option<&str>) -> Vec<(String, Names)> {
    let path = dir.join(podman::LIST_FILE);
    let Some(bytes) = read_bounded_to(&path, MAX_LIST_BYTES) else {
        return Vec::new();
    };
    // The labels are in podman's database, next to the storage driver's directory.
    let db = dir
        .parent()
        .and_then(|root| read_bounded_to(&root.join(podman::BOLT_DB), MAX_PODMAN_DB_BYTES));
    match podman::parse(&bytes) {
        Ok(list) => list
            .into_iter()
            .filter(|c| only.is_none_or(|id| c.id == id))
            .map(|c| {
                let labels = db.as_deref().and_then(|db| podman::labels(db, &c.id));
                let label = |k: &str| labels.as_ref()?.get(k).filter(|v| !v.is_empty()).cloned();
                let names = Names {
                    name: c.name,
                    image: c.image,
                    compose_project: label(compose_keys::PROJECT),
                    compose_service: label(compose_keys::SERVICE),
                    ..Names::empty(BundleSource::Podman)
                };
                (c.id, names)
            })
            .collect(),
        Err(err) => {
            tracing::debug!(path = %path.display(), %err, "unreadable podman container list");
            Vec::new()
        }
    }
}

impl Names {
    /// Nothing known yet.
    pub fn empty(source: BundleSource) -> Self {
        Self {
            namespace: None,
            pod: None,
            pod_uid: None,
            container: None,
            sandbox: false,
            name: None,
            image: None,
            compose_project: None,
            compose_service: None,
            source,
        }
    }

    fn is_empty(&self) -> bool {
        [
            &self.namespace,
            &self.pod,
            &self.pod_uid,
            &self.container,
            &self.name,
            &self.image,
            &self.compose_project,
            &self.compose_service,
        ]
        .iter()
        .all(|v| v.is_none())
    }
}

/// The names in the contents of a bundle file (an OCI runtime spec's `config.json`, or
/// Docker's `config.v2.json`); `Ok(None)` when it names nothing, an error when it is not JSON.
pub fn parse_names(source: BundleSource, bytes: &[u8]) -> Result<Option<Names>, serde_json::Error> {
    let names = match source {
        BundleSource::Containerd | BundleSource::Crio | BundleSource::Podman => {
            match serde_json::from_slice::<OciSpec>(bytes)?.annotations {
                Value::Object(map) => names_from(source, &map),
                _ => Names::empty(source),
            }
        }
        BundleSource::Docker => {
            let c = serde_json::from_slice::<DockerContainer>(bytes)?;
            let (image, labels) = c.config.map_or((None, None), |k| (k.image, k.labels));
            let mut names = labels.map_or(Names::empty(source), |l| names_from(source, &l));
            names.name = c
                .name
                .map(|n| n.trim_start_matches('/').to_owned())
                .filter(|n| !n.is_empty());
            names.image = image.filter(|i| !i.is_empty());
            names
        }
    };
    Ok((!names.is_empty()).then_some(names))
}

/// A non-empty string value.
fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn names_from(source: BundleSource, map: &Map<String, Value>) -> Names {
    use containerd_keys as cd;
    use kubelet_keys as kl;
    let (namespace, pod, pod_uid, container, sandbox) = match source {
        BundleSource::Containerd => (
            string(map, cd::NAMESPACE),
            string(map, cd::POD),
            string(map, cd::POD_UID),
            string(map, cd::CONTAINER),
            string(map, cd::CONTAINER_TYPE).as_deref() == Some("sandbox"),
        ),
        BundleSource::Crio | BundleSource::Docker | BundleSource::Podman => {
            let container = string(map, kl::CONTAINER);
            let (type_key, sandbox_type) = match source {
                BundleSource::Crio => (kl::CRIO_CONTAINER_TYPE, "sandbox"),
                _ => (kl::DOCKER_TYPE, "podsandbox"),
            };
            let sandbox = string(map, type_key).as_deref() == Some(sandbox_type)
                || container.as_deref() == Some(kl::SANDBOX_CONTAINER_NAME);
            (
                string(map, kl::NAMESPACE),
                string(map, kl::POD),
                string(map, kl::POD_UID),
                container,
                sandbox,
            )
        }
    };
    let container = if sandbox { None } else { container };
    let image = match source {
        BundleSource::Containerd => string(map, CONTAINERD_IMAGE),
        BundleSource::Crio => string(map, kl::CRIO_IMAGE),
        BundleSource::Docker | BundleSource::Podman => None,
    };
    Names {
        namespace,
        pod,
        pod_uid,
        container,
        sandbox,
        image,
        compose_project: string(map, compose_keys::PROJECT),
        compose_service: string(map, compose_keys::SERVICE),
        ..Names::empty(source)
    }
}

/// Least-recently-used map from container id to names.
struct Lru {
    capacity: usize,
    /// id → (names, last-use stamp).
    map: HashMap<String, (Arc<Names>, u64)>,
    /// last-use stamp → id, oldest first.
    order: BTreeMap<u64, String>,
    next: u64,
    evicted: u64,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            evicted: 0,
        }
    }

    fn stamp(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Marks `id` used; false if it is not cached.
    fn touch(&mut self, id: &str) -> bool {
        let stamp = self.stamp();
        let Some((_, used)) = self.map.get_mut(id) else {
            return false;
        };
        let old = std::mem::replace(used, stamp);
        if let Some(key) = self.order.remove(&old) {
            self.order.insert(stamp, key);
        }
        true
    }

    fn get(&mut self, id: &str) -> Option<Arc<Names>> {
        if !self.touch(id) {
            return None;
        }
        self.map.get(id).map(|(names, _)| Arc::clone(names))
    }

    fn insert(&mut self, id: String, names: Arc<Names>) {
        if self.capacity == 0 {
            return;
        }
        let stamp = self.stamp();
        if let Some((_, old)) = self.map.insert(id.clone(), (names, stamp)) {
            self.order.remove(&old);
        } else {
            while self.map.len() > self.capacity {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.order.insert(stamp, id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;
    use tempfile::TempDir;

    use super::*;
    use BundleSource::{Containerd, Crio, Docker, Podman};

    const POD_UID: &str = "6f1c2a8e-3b4d-4e5f-9a0b-1c2d3e4f5a6b";
    const SANDBOX_ID: &str = "2c9f1e0d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";
    const CTR_ID: &str = "8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f";

    /// A fake host: every runtime path lives under a temporary root.
    fn host() -> (TempDir, BundleConfig) {
        let dir = TempDir::new().expect("tempdir");
        let config = BundleConfig {
            host_root: dir.path().to_path_buf(),
            ..BundleConfig::default()
        };
        (dir, config)
    }

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, bytes).expect("write");
    }

    fn id(n: u32) -> String {
        format!("{n:064x}")
    }

    /// An OCI runtime spec shaped like the ones runc-based runtimes write, with `annotations`.
    fn oci_spec(id: &str, args: &[&str], annotations: Value) -> Value {
        json!({
            "ociVersion": "1.1.0",
            "process": {
                "user": {"uid": 65535, "gid": 65535, "additionalGids": [65535]},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "noNewPrivileges": true,
                "oomScoreAdj": 999
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "web-7d4b9c",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/dev/shm", "type": "bind",
                 "source": format!("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{SANDBOX_ID}/shm"),
                 "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}
            ],
            "annotations": annotations,
            "linux": {
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "memory": {"limit": 134217728, "swap": 134217728},
                    "cpu": {"shares": 102, "quota": 10000, "period": 100000}
                },
                "cgroupsPath": format!("kubepods-burstable-pod{}.slice:cri-containerd:{id}",
                    POD_UID.replace('-', "_")),
                "namespaces": [
                    {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                    {"type": "network", "path": "/var/run/netns/cni-4e1b2f3a-5c6d-7e8f-9a0b-1c2d3e4f5a6b"}
                ],
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]
            }
        })
    }

    fn containerd_container(id: &str) -> Value {
        oci_spec(
            id,
            &["nginx", "-g", "daemon off;"],
            json!({
                "io.kubernetes.cri.container-name": "web",
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.27",
                "io.kubernetes.cri.sandbox-id": SANDBOX_ID,
                "io.kubernetes.cri.sandbox-name": "web-7d4b9c-x2x9k",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-uid": POD_UID
            }),
        )
    }

    fn containerd_sandbox(id: &str) -> Value {
        oci_spec(
            id,
            &["/pause"],
            json!({
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-cpu-period": "100000",
                "io.kubernetes.cri.sandbox-cpu-quota": "0",
                "io.kubernetes.cri.sandbox-cpu-shares": "2",
                "io.kubernetes.cri.sandbox-id": id,
                "io.kubernetes.cri.sandbox-log-directory":
                    format!("/var/log/pods/shop_web-7d4b9c-x2x9k_{POD_UID}"),
                "io.kubernetes.cri.sandbox-memory": "0",
                "io.kubernetes.cri.sandbox-name": "web-7d4b9c-x2x9k",
                "io.kubernetes.cri.sandbox-namespace": "shop",
                "io.kubernetes.cri.sandbox-uid": POD_UID
            }),
        )
    }

    fn crio_annotations(id: &str, sandbox: bool) -> Value {
        let (name, kind) = if sandbox {
            ("POD", "sandbox")
        } else {
            ("api", "container")
        };
        json!({
            "io.container.manager": "cri-o",
            "io.kubernetes.container.name": name,
            "io.kubernetes.cri-o.ContainerID": id,
            "io.kubernetes.cri-o.ContainerName": format!("k8s_{name}_api-5f6d7c-q8w7e_billing_{POD_UID}_0"),
            "io.kubernetes.cri-o.ContainerType": kind,
            "io.kubernetes.cri-o.Created": "2024-05-02T10:11:12.131415161Z",
            "io.kubernetes.cri-o.Labels": format!(
                "{{\"io.kubernetes.container.name\":\"{name}\",\"io.kubernetes.pod.name\":\"api-5f6d7c-q8w7e\",\"io.kubernetes.pod.namespace\":\"billing\",\"io.kubernetes.pod.uid\":\"{POD_UID}\"}}"
            ),
            "io.kubernetes.cri-o.LogPath":
                format!("/var/log/pods/billing_api-5f6d7c-q8w7e_{POD_UID}/{name}/0.log"),
            "io.kubernetes.cri-o.SandboxID": SANDBOX_ID,
            "io.kubernetes.cri-o.TTY": "false",
            "io.kubernetes.pod.name": "api-5f6d7c-q8w7e",
            "io.kubernetes.pod.namespace": "billing",
            "io.kubernetes.pod.uid": POD_UID,
            "kubernetes.io/config.source": "api"
        })
    }

    fn docker_config(id: &str, sandbox: bool) -> Value {
        let (name, kind) = if sandbox {
            ("POD", "podsandbox")
        } else {
            ("worker", "container")
        };
        json!({
            "StreamConfig": {},
            "State": {"Running": true, "Paused": false, "Restarting": false, "OOMKilled": false,
                      "Dead": false, "Pid": 48213, "ExitCode": 0, "Error": "",
                      "StartedAt": "2024-05-02T10:11:12.5Z", "FinishedAt": "0001-01-01T00:00:00Z"},
            "ID": id,
            "Created": "2024-05-02T10:11:12.1Z",
            "Managed": false,
            "Path": "/usr/bin/worker",
            "Args": ["--queue", "jobs"],
            "Config": {
                "Hostname": "worker-6b8c9d-zz4lp",
                "User": "1000",
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": null,
                "Image": "sha256:4a7c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
                "Volumes": null,
                "WorkingDir": "",
                "Entrypoint": ["/usr/bin/worker", "--queue", "jobs"],
                "OnBuild": null,
                "Labels": {
                    "annotation.io.kubernetes.container.hash": "9c1d2e3f",
                    "annotation.io.kubernetes.container.restartCount": "0",
                    "io.kubernetes.container.logpath":
                        format!("/var/log/pods/batch_worker-6b8c9d-zz4lp_{POD_UID}/{name}/0.log"),
                    "io.kubernetes.container.name": name,
                    "io.kubernetes.docker.type": kind,
                    "io.kubernetes.pod.name": "worker-6b8c9d-zz4lp",
                    "io.kubernetes.pod.namespace": "batch",
                    "io.kubernetes.pod.uid": POD_UID,
                    "io.kubernetes.sandbox.id": SANDBOX_ID
                }
            },
            "Image": "sha256:4a7c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
            "NetworkSettings": {"Bridge": "", "SandboxID": "", "Networks": null},
            "LogPath": format!("/var/lib/docker/containers/{id}/{id}-json.log"),
            "Name": format!("/k8s_{name}_worker-6b8c9d-zz4lp_batch_{POD_UID}_0"),
            "Driver": "overlay2",
            "OS": "linux",
            "RestartCount": 0,
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "HostnamePath": format!("/var/lib/docker/containers/{SANDBOX_ID}/hostname"),
            "HostsPath": format!("/var/lib/docker/containers/{SANDBOX_ID}/hosts")
        })
    }

    const VAR_CRIO: &str = "var/lib/containers/storage";
    const RUN_CRIO: &str = "run/containers/storage";

    fn containerd_path(root: &Path, id: &str) -> PathBuf {
        root.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"
        ))
    }

    fn crio_path(root: &Path, storage: &str, id: &str) -> PathBuf {
        root.join(format!(
            "{storage}/overlay-containers/{id}/userdata/config.json"
        ))
    }

    fn docker_path(root: &Path, id: &str) -> PathBuf {
        root.join(format!("var/lib/docker/containers/{id}/config.v2.json"))
    }

    fn put(path: &Path, value: &Value) {
        write(path, &serde_json::to_vec_pretty(value).expect("json"));
    }

    fn put_containerd(root: &Path, id: &str) {
        put(&containerd_path(root, id), &containerd_container(id));
    }

    fn put_crio(root: &Path, storage: &str, id: &str, sandbox: bool) {
        let args: &[&str] = if sandbox { &["/pause"] } else { &["/app"] };
        let spec = oci_spec(id, args, crio_annotations(id, sandbox));
        put(&crio_path(root, storage, id), &spec);
    }

    fn put_docker(root: &Path, id: &str, sandbox: bool) {
        put(&docker_path(root, id), &docker_config(id, sandbox));
    }

    /// Fully named; `container: None` means the sandbox.
    fn names(namespace: &str, pod: &str, container: Option<&str>, source: BundleSource) -> Names {
        Names {
            namespace: Some(namespace.into()),
            pod: Some(pod.into()),
            pod_uid: Some(POD_UID.into()),
            container: container.map(Into::into),
            sandbox: container.is_none(),
            ..Names::empty(source)
        }
    }

    /// The Kubernetes names only (the runtime's own name, image and labels are checked by
    /// the tests of those).
    fn named(reader: &mut BundleReader, id: &str, hint: Option<BundleSource>) -> Names {
        let names = reader.lookup(id, hint).expect("named");
        Names {
            name: None,
            image: None,
            compose_project: None,
            compose_service: None,
            ..(*names).clone()
        }
    }

    #[test]
    fn defaults() {
        let config = BundleConfig::default();
        assert_eq!(config.host_root, PathBuf::from("/"));
        assert_eq!(
            config.containerd_state,
            [
                PathBuf::from("/run/containerd"),
                PathBuf::from("/run/k3s/containerd")
            ]
        );
        assert_eq!(
            config.crio_storage,
            [
                Path::new("/var/lib/containers/storage"),
                Path::new("/run/containers/storage")
            ]
        );
        assert_eq!(config.docker_root, [PathBuf::from("/var/lib/docker")]);
        assert_eq!(config.cache_capacity, 4096);
        let host = under(Path::new("/host"), Path::new("/run/containerd"));
        assert_eq!(host, PathBuf::from("/host/run/containerd"));
        let json = serde_json::to_string(&[Containerd, Crio, Docker]).expect("json");
        assert_eq!(json, r#"["containerd","crio","docker"]"#);
    }

    #[test]
    fn containerd_container_and_sandbox() {
        let (dir, config) = host();
        put_containerd(dir.path(), CTR_ID);
        put(
            &containerd_path(dir.path(), SANDBOX_ID),
            &containerd_sandbox(SANDBOX_ID),
        );
        let mut reader = BundleReader::new(config);
        let want = names("shop", "web-7d4b9c-x2x9k", Some("web"), Containerd);
        assert_eq!(named(&mut reader, CTR_ID, Some(Containerd)), want);
        let pause = names("shop", "web-7d4b9c-x2x9k", None, Containerd);
        assert_eq!(named(&mut reader, SANDBOX_ID, None), pause);
        assert_eq!(reader.cached(), 2);
    }

    #[test]
    fn containerd_v1_shim_location() {
        let (dir, config) = host();
        let path = dir.path().join(format!(
            "run/containerd/io.containerd.runtime.v1.linux/k8s.io/{CTR_ID}/config.json"
        ));
        put(&path, &containerd_container(CTR_ID));
        let want = names("shop", "web-7d4b9c-x2x9k", Some("web"), Containerd);
        assert_eq!(named(&mut BundleReader::new(config), CTR_ID, None), want);
    }

    #[test]
    fn crio_container_and_sandbox_in_both_storage_locations() {
        let (dir, config) = host();
        put_crio(dir.path(), VAR_CRIO, CTR_ID, false);
        put_crio(dir.path(), RUN_CRIO, SANDBOX_ID, true);
        let mut reader = BundleReader::new(config);
        let want = names("billing", "api-5f6d7c-q8w7e", Some("api"), Crio);
        assert_eq!(named(&mut reader, CTR_ID, Some(Crio)), want);
        let infra = names("billing", "api-5f6d7c-q8w7e", None, Crio);
        assert_eq!(named(&mut reader, SANDBOX_ID, None), infra);
    }

    #[test]
    fn docker_container_and_sandbox() {
        let (dir, config) = host();
        put_docker(dir.path(), CTR_ID, false);
        put_docker(dir.path(), SANDBOX_ID, true);
        // A plain Docker container (no kubelet labels) has no Kubernetes names.
        let plain = id(7);
        let mut bare = docker_config(&plain, false);
        bare["Config"]["Labels"] = json!({"maintainer": "someone"});
        put(&docker_path(dir.path(), &plain), &bare);
        // Nothing at all: no names.
        let empty = id(8);
        put(
            &docker_path(dir.path(), &empty),
            &json!({"Config": {"Labels": {}}}),
        );
        let mut reader = BundleReader::new(config);
        let want = names("batch", "worker-6b8c9d-zz4lp", Some("worker"), Docker);
        assert_eq!(named(&mut reader, CTR_ID, Some(Docker)), want);
        let pod = names("batch", "worker-6b8c9d-zz4lp", None, Docker);
        assert_eq!(named(&mut reader, SANDBOX_ID, None), pod);
        assert_eq!(named(&mut reader, &plain, None), Names::empty(Docker));
        assert_eq!(reader.lookup(&empty, None), None);
    }

    #[test]
    fn hint_is_tried_first() {
        let (dir, config) = host();
        put_containerd(dir.path(), CTR_ID);
        put_crio(dir.path(), VAR_CRIO, CTR_ID, false);
        put_docker(dir.path(), CTR_ID, false);
        let source = |hint| named(&mut BundleReader::new(config.clone()), CTR_ID, hint).source;
        assert_eq!(source(None), Containerd);
        assert_eq!(source(Some(Crio)), Crio);
        assert_eq!(source(Some(Docker)), Docker);
        // A wrong hint still finds the container through the other runtimes.
        fs::remove_file(docker_path(dir.path(), CTR_ID)).expect("rm");
        assert_eq!(source(Some(Docker)), Containerd);
        assert_eq!(order(Some(Crio)), [Crio, Containerd, Docker, Podman]);
        assert_eq!(order(None), [Containerd, Crio, Docker, Podman]);
    }

    #[test]
    fn missing_id() {
        let (_dir, config) = host();
        let mut reader = BundleReader::new(config);
        assert_eq!(reader.lookup(CTR_ID, None), None);
        assert_eq!(reader.cached(), 0);
    }

    #[test]
    fn invalid_ids_never_reach_the_filesystem() {
        let (dir, config) = host();
        // Files these ids would reach if they were joined into a path.
        let escaped = dir.path().join("run/containerd/etc/config.json");
        put(&escaped, &containerd_container(CTR_ID));
        let upper = CTR_ID.to_uppercase();
        put(
            &containerd_path(dir.path(), &upper),
            &containerd_container(CTR_ID),
        );
        let long = format!("{CTR_ID}a");
        put(
            &containerd_path(dir.path(), &long),
            &containerd_container(CTR_ID),
        );
        let mut reader = BundleReader::new(config);
        for bad in ["../../etc", &upper, &long, "", "abc/def", "12 34", "0x1f"] {
            assert_eq!(reader.lookup(bad, None), None, "{bad:?}");
        }
        assert!(valid_id("a") && valid_id(CTR_ID));
        assert_eq!(reader.warm(), 0, "invalid directory names are not warmed");
    }

    #[test]
    fn malformed_and_partial_files() {
        let (dir, config) = host();
        let root = dir.path();
        let truncated = id(1);
        let text = serde_json::to_string(&containerd_container(&truncated)).expect("json");
        write(
            &containerd_path(root, &truncated),
            &text.as_bytes()[..text.len() / 2],
        );

        // Wrong value types and empty strings: the readable names are kept.
        let partial = id(2);
        let mut spec = containerd_container(&partial);
        spec["annotations"]["io.kubernetes.cri.sandbox-name"] = json!(42);
        spec["annotations"]["io.kubernetes.cri.container-name"] = json!(["web"]);
        spec["annotations"]["io.kubernetes.cri.sandbox-uid"] = json!("");
        put(&containerd_path(root, &partial), &spec);

        let no_annotations = id(3);
        let mut spec = containerd_container(&no_annotations);
        spec.as_object_mut().expect("object").remove("annotations");
        put(&containerd_path(root, &no_annotations), &spec);

        let wrong_shape = id(4);
        let mut spec = containerd_container(&wrong_shape);
        spec["annotations"] = json!(["io.kubernetes.cri.sandbox-name"]);
        put(&containerd_path(root, &wrong_shape), &spec);

        let not_json = id(5);
        write(&containerd_path(root, &not_json), b"\xff\xfe\x00garbage");

        let no_labels = id(6);
        let mut cfg = docker_config(&no_labels, false);
        cfg["Config"]["Labels"] = Value::Null;
        put(&docker_path(root, &no_labels), &cfg);

        // A directory where the file should be.
        let not_a_file = id(8);
        fs::create_dir_all(containerd_path(root, &not_a_file)).expect("mkdir");

        let mut reader = BundleReader::new(config);
        assert_eq!(reader.lookup(&truncated, None), None);
        let got = named(&mut reader, &partial, None);
        assert_eq!(got.namespace.as_deref(), Some("shop"));
        assert_eq!(
            (got.pod, got.pod_uid, got.container, got.sandbox),
            (None, None, None, false)
        );
        for missing in [&no_annotations, &wrong_shape, &not_json, &not_a_file] {
            assert_eq!(reader.lookup(missing, None), None, "{missing}");
        }
        // Without labels, a Docker container still has its own name and image.
        let got = reader.lookup(&no_labels, None).expect("named");
        assert_eq!((got.pod.as_deref(), got.name.is_some()), (None, true));
    }

    #[test]
    fn plain_docker_container_name_image_and_compose_labels() {
        let (dir, config) = host();
        let plain = id(9);
        let mut cfg = docker_config(&plain, false);
        cfg["Name"] = json!("/shop-cart-1");
        cfg["Config"]["Image"] = json!("shop/cart:2.1");
        cfg["Config"]["Env"] = json!(["SECRET=hunter2"]);
        cfg["Config"]["Labels"] = json!({
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": "cart",
            "com.docker.compose.container-number": "1"
        });
        put(&docker_path(dir.path(), &plain), &cfg);
        let mut reader = BundleReader::new(config);
        let got = reader.lookup(&plain, Some(Docker)).expect("named");
        let want = Names {
            name: Some("shop-cart-1".into()),
            image: Some("shop/cart:2.1".into()),
            compose_project: Some("shop".into()),
            compose_service: Some("cart".into()),
            ..Names::empty(Docker)
        };
        assert_eq!(*got, want);
        // Wrong types are an unreadable file, never a panic.
        let bad = id(10);
        put(
            &docker_path(dir.path(), &bad),
            &json!({"Name": 7, "Config": {"Image": []}}),
        );
        assert_eq!(reader.lookup(&bad, None), None);
    }

    fn podman_list(root: &Path, storage: &str, entries: &[(&str, &str, &str)]) {
        let list: Vec<Value> = entries
            .iter()
            .map(|(id, name, image)| {
                json!({"id": id, "names": [name], "image": "0b88dc99", "layer": "93952a7c",
                    "metadata": json!({"image-name": image, "name": name}).to_string(),
                    "created": "2026-12-05T11:45:21.694367071Z"})
            })
            .collect();
        let storage = storage.trim_start_matches('/');
        put(
            &root
                .join(storage)
                .join("overlay-containers/containers.json"),
            &json!(list),
        );
    }

    #[test]
    fn podman_names_from_its_storage_list_default_and_flag_roots() {
        let (dir, mut config) = host();
        let (a, b) = (id(11), id(12));
        podman_list(
            dir.path(),
            "/var/lib/containers/storage",
            &[(&a, "web", "localhost/web:1")],
        );
        podman_list(dir.path(), "/srv/podman", &[(&b, "db", "localhost/db:2")]);
        let mut reader = BundleReader::new(config.clone());
        let got = reader.lookup(&a, Some(Podman)).expect("named");
        assert_eq!(
            (got.name.as_deref(), got.image.as_deref()),
            (Some("web"), Some("localhost/web:1"))
        );
        assert_eq!(got.source, Podman);
        assert_eq!(
            reader.lookup(&b, Some(Podman)),
            None,
            "not under the default root"
        );
        config.podman_root = vec![PathBuf::from("/srv/podman")];
        let mut reader = BundleReader::new(config);
        assert_eq!(reader.warm(), 1);
        // Read ahead: still named after podman removed it.
        fs::remove_file(
            dir.path()
                .join("srv/podman/overlay-containers/containers.json"),
        )
        .unwrap();
        let got = reader.lookup(&b, None).expect("cached");
        assert_eq!(got.name.as_deref(), Some("db"));
    }

    #[test]
    fn oversize_file_is_skipped() {
        let (dir, config) = host();
        let mut spec = containerd_container(CTR_ID);
        // Valid JSON, names present, padded past the bound.
        spec["process"]["env"] = json!(["X=".to_owned() + &"y".repeat(MAX_FILE_BYTES as usize)]);
        put(&containerd_path(dir.path(), CTR_ID), &spec);
        let len = fs::metadata(containerd_path(dir.path(), CTR_ID))
            .expect("stat")
            .len();
        assert!(len > MAX_FILE_BYTES);
        let mut reader = BundleReader::new(config);
        assert_eq!(reader.lookup(CTR_ID, None), None);
        assert_eq!(reader.warm(), 0);
    }

    #[test]
    fn warmed_names_survive_bundle_deletion() {
        let (dir, config) = host();
        put_containerd(dir.path(), CTR_ID);
        // CRI-O keeps the userdata config.json in both roots: counted once.
        put_crio(dir.path(), RUN_CRIO, &id(1), false);
        put_crio(dir.path(), VAR_CRIO, &id(1), false);
        put_docker(dir.path(), &id(2), false);
        let mut reader = BundleReader::new(config);
        assert_eq!(reader.warm(), 3);
        assert_eq!(reader.cached(), 3);
        fs::remove_dir_all(dir.path().join("run")).expect("rm");
        fs::remove_dir_all(dir.path().join("var")).expect("rm");

        let want = names("shop", "web-7d4b9c-x2x9k", Some("web"), Containerd);
        assert_eq!(named(&mut reader, CTR_ID, None), want);
        assert_eq!(named(&mut reader, &id(1), None).source, Crio);
        assert_eq!(named(&mut reader, &id(2), Some(Containerd)).source, Docker);
        // Warming again (nothing on disk) keeps what was cached.
        assert_eq!(reader.warm(), 0);
        assert_eq!(reader.cached(), 3);
    }

    #[test]
    fn capacity_bounds_the_cache_least_recently_used_first() {
        let (dir, mut config) = host();
        config.cache_capacity = 2;
        for n in 1..=3 {
            put_containerd(dir.path(), &id(n));
        }
        let mut reader = BundleReader::new(config);
        assert!(reader.lookup(&id(1), None).is_some());
        assert!(reader.lookup(&id(2), None).is_some());
        assert!(reader.lookup(&id(1), None).is_some()); // 1 is now the most recently used
        assert!(reader.lookup(&id(3), None).is_some()); // evicts 2
        assert_eq!((reader.cached(), reader.evicted()), (2, 1));

        fs::remove_dir_all(dir.path().join("run")).expect("rm");
        assert!(reader.lookup(&id(1), None).is_some());
        assert!(reader.lookup(&id(3), None).is_some());
        assert_eq!(reader.lookup(&id(2), None), None);
        assert_eq!(reader.evicted(), 1);
    }

    #[test]
    fn warm_stops_at_capacity() {
        let (dir, mut config) = host();
        config.cache_capacity = 3;
        for n in 1..=5 {
            put_containerd(dir.path(), &id(n));
        }
        let mut reader = BundleReader::new(config);
        assert_eq!(reader.warm(), 3);
        assert_eq!((reader.cached(), reader.evicted()), (3, 0));
        // Looking up one left out reads it and evicts the least recently used.
        let left_out = (1..=5).map(id).find(|i| !reader.cache.map.contains_key(i));
        assert!(reader
            .lookup(&left_out.expect("one left out"), None)
            .is_some());
        assert_eq!((reader.cached(), reader.evicted()), (3, 1));
    }

    #[test]
    fn zero_capacity_reads_but_never_caches() {
        let (dir, mut config) = host();
        config.cache_capacity = 0;
        put_containerd(dir.path(), CTR_ID);
        let mut reader = BundleReader::new(config);
        assert!(reader.lookup(CTR_ID, None).is_some());
        assert_eq!(reader.warm(), 0);
        assert_eq!((reader.cached(), reader.evicted()), (0, 0));
    }

    #[test]
    fn a_miss_is_forgotten_after_the_negative_ttl() {
        let (dir, config) = host();
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = Arc::clone(&now);
        let mut reader = BundleReader::new(config)
            .with_negative_ttl(Duration::from_secs(10))
            .with_clock(move || *clock.lock().expect("clock"));
        let advance = |by: Duration| *now.lock().expect("clock") += by;

        assert_eq!(reader.lookup(CTR_ID, None), None);
        put_containerd(dir.path(), CTR_ID);
        advance(Duration::from_secs(5));
        assert_eq!(
            reader.lookup(CTR_ID, None),
            None,
            "miss remembered within the TTL"
        );
        advance(Duration::from_secs(5));
        assert_eq!(
            named(&mut reader, CTR_ID, None).pod.as_deref(),
            Some("web-7d4b9c-x2x9k")
        );
        assert!(reader.misses.is_empty());
    }

    #[test]
    fn negative_cache_is_bounded_and_can_be_disabled() {
        let (dir, config) = host();
        let mut reader = BundleReader::new(config.clone());
        for n in 0..(NEGATIVE_CAPACITY as u32 + 10) {
            assert_eq!(reader.lookup(&id(n), None), None);
        }
        assert_eq!(reader.misses.len(), NEGATIVE_CAPACITY);
        // The oldest misses were dropped: id(0) is read again (and now found).
        put_containerd(dir.path(), &id(0));
        assert!(reader.lookup(&id(0), None).is_some());
        // A still-remembered miss is named once warm() reads it.
        put_containerd(dir.path(), &id(200));
        assert_eq!(reader.lookup(&id(200), None), None);
        reader.warm();
        assert!(reader.lookup(&id(200), None).is_some());

        let mut no_negatives = BundleReader::new(config).with_negative_ttl(Duration::ZERO);
        assert_eq!(no_negatives.lookup(CTR_ID, None), None);
        put_containerd(dir.path(), CTR_ID);
        assert!(no_negatives.lookup(CTR_ID, None).is_some());
        assert!(no_negatives.misses.is_empty());
    }

    #[test]
    fn configured_paths_are_taken_under_the_host_root() {
        let (dir, mut config) = host();
        config.containerd_state = vec![PathBuf::from("/run/k3s/containerd")];
        config.crio_storage = vec![PathBuf::from("/data/crio")];
        config.docker_root = vec![PathBuf::from("/srv/docker")];
        let k3s = format!(
            "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{}/config.json",
            id(1)
        );
        put(&dir.path().join(k3s), &containerd_container(&id(1)));
        put_crio(dir.path(), "data/crio", &id(2), false);
        let docker = format!("srv/docker/containers/{}/config.v2.json", id(3));
        put(&dir.path().join(docker), &docker_config(&id(3), false));
        let mut reader = BundleReader::new(config);
        assert_eq!(named(&mut reader, &id(1), None).source, Containerd);
        assert_eq!(named(&mut reader, &id(2), None).source, Crio);
        assert_eq!(named(&mut reader, &id(3), None).source, Docker);
    }

    #[test]
    fn k3s_containerd_state_is_a_default_layout() {
        let (dir, config) = host();
        let k3s = format!(
            "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{}/config.json",
            id(7)
        );
        put(&dir.path().join(k3s), &containerd_container(&id(7)));
        let mut reader = BundleReader::new(config);
        assert_eq!(named(&mut reader, &id(7), None).source, Containerd);
    }
}
