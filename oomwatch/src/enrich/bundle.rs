//! Kubernetes names without an API server: the OCI runtime bundle files that the container
//! runtime writes on the node.
//!
//! The cgroup path of a victim gives a container id; the runtime's per-container files give the
//! pod name, namespace, pod uid and container name:
//!
//! | runtime | file (under `--host-root`) | keys |
//! |---|---|---|
//! | containerd (CRI) | `<state>/io.containerd.runtime.v2.task/k8s.io/<id>/config.json`, then the v1 shim's `<state>/io.containerd.runtime.v1.linux/k8s.io/<id>/config.json` (state: `/run/containerd`) | OCI `annotations`: `io.kubernetes.cri.sandbox-namespace`, `…sandbox-name`, `…sandbox-uid`, `…container-name`, `…container-type` |
//! | CRI-O | `<storage>/overlay-containers/<id>/userdata/config.json` (storage: `/var/lib/containers/storage`, then `/run/containers/storage`) | OCI `annotations`: `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, `io.kubernetes.cri-o.ContainerType` |
//! | Docker (cri-dockerd, dockershim) | `<root>/containers/<id>/config.v2.json` (root: `/var/lib/docker`) | `Config.Labels`: `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`, `io.kubernetes.docker.type` |
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

/// Files larger than this are skipped, never read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
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
}

const ALL_SOURCES: [BundleSource; 3] = [
    BundleSource::Containerd,
    BundleSource::Crio,
    BundleSource::Docker,
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
    /// Bound on cached names; 0 disables the cache.
    pub cache_capacity: usize,
}

impl Default for BundleConfig {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            containerd_state: vec![PathBuf::from("/run/containerd")],
            crio_storage: vec![
                PathBuf::from("/var/lib/containers/storage"),
                PathBuf::from("/run/containers/storage"),
            ],
            docker_root: vec![PathBuf::from("/var/lib/docker")],
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
        }
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
                if let Some(names) = read_names(source, &bundle_file(source, &dir, container_id)) {
                    let names = Arc::new(names);
                    self.cache
                        .insert(container_id.to_owned(), Arc::clone(&names));
                    return Some(names);
                }
            }
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
                        let Some(names) = read_names(source, &bundle_file(source, &dir, id)) else {
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
    }
}

/// A regular file of at most [`MAX_FILE_BYTES`], or None.
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    // Checked before opening: opening a FIFO would block, a huge file is never read.
    let meta = fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > MAX_FILE_BYTES {
        tracing::debug!(path = %path.display(), bytes = meta.len(), "bundle file too large, skipped");
        return None;
    }
    let file = fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).ok()?);
    // The file may have grown since the check: never read more than the bound (+1 to see it).
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf).ok()?;
    if buf.len() as u64 > MAX_FILE_BYTES {
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

/// Docker's `config.v2.json`; only `Config.Labels` matters.
#[derive(Deserialize)]
struct DockerContainer {
    #[serde(default, rename = "Config")]
    config: Value,
}

fn read_names(source: BundleSource, path: &Path) -> Option<Names> {
    let bytes = read_bounded(path)?;
    parse_names(source, &bytes).unwrap_or_else(|err| {
        tracing::debug!(path = %path.display(), %err, "unreadable bundle file");
        None
    })
}

/// The names in the contents of a bundle file (an OCI runtime spec's `config.json`, or
/// Docker's `config.v2.json`); `Ok(None)` when it names nothing, an error when it is not JSON.
pub fn parse_names(source: BundleSource, bytes: &[u8]) -> Result<Option<Names>, serde_json::Error> {
    let parsed = match source {
        BundleSource::Containerd | BundleSource::Crio => {
            serde_json::from_slice::<OciSpec>(bytes).map(|spec| spec.annotations)
        }
        BundleSource::Docker => serde_json::from_slice::<DockerContainer>(bytes)
            .map(|c| c.config.get("Labels").cloned().unwrap_or(Value::Null)),
    };
    match parsed? {
        Value::Object(map) => Ok(names_from(source, &map)),
        _ => Ok(None),
    }
}

/// A non-empty string value.
fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn names_from(source: BundleSource, map: &Map<String, Value>) -> Option<Names> {
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
        BundleSource::Crio | BundleSource::Docker => {
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
    if namespace.is_none() && pod.is_none() && pod_uid.is_none() && container.is_none() {
        return None;
    }
    Some(Names {
        namespace,
        pod,
        pod_uid,
        container,
        sandbox,
        source,
    })
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
#[path = "bundle_tests.rs"]
mod tests;
