//! The memory cgroup hierarchy: where it is mounted (v1 or v2), and cgroup id → path.
//!
//! The kernel identifies a cgroup by its kernfs id, which is also the inode number of its
//! directory. Paths are given relative to the hierarchy's root, as `/proc/<pid>/cgroup` and the
//! kernel's OOM report print them (`/kubepods/...`, `/system.slice/...`).
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which cgroup version holds the memory controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The mounted hierarchy that holds the memory controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryHierarchy {
    pub version: Version,
    pub mount: PathBuf,
}

impl MemoryHierarchy {
    /// Finds it from `/proc/self/mountinfo`: a v1 `cgroup` mount with the `memory` option, else
    /// a `cgroup2` mount whose root `cgroup.controllers` lists `memory`.
    pub fn find() -> Option<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&text, |p| {
            fs::read_to_string(p.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().any(|w| w == "memory"))
                .unwrap_or(false)
        })
    }

    /// As [`find`](Self::find) for the host whose root filesystem is at `root` (`/host` in a
    /// pod with the host's `/sys` mounted at `/host/sys`): there the mount table is the
    /// container's, so the standard places are checked instead: `<root>/sys/fs/cgroup/memory`
    /// (v1), then `<root>/sys/fs/cgroup` with `memory` in its `cgroup.controllers` (v2).
    pub fn find_under(root: &Path) -> Option<Self> {
        if root == Path::new("/") {
            return Self::find();
        }
        let base = root.join("sys/fs/cgroup");
        let v1 = base.join("memory");
        if v1.join("memory.usage_in_bytes").exists() {
            return Some(Self {
                version: Version::V1,
                mount: v1,
            });
        }
        let has_memory = fs::read_to_string(base.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|w| w == "memory"))
            .unwrap_or(false);
        has_memory.then_some(Self {
            version: Version::V2,
            mount: base,
        })
    }

    /// As [`find`](Self::find), with the v2 controller check injected (for tests).
    pub fn from_mountinfo(text: &str, v2_has_memory: impl Fn(&Path) -> bool) -> Option<Self> {
        let mut v2 = None;
        for line in text.lines() {
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split(' ').nth(4);
            let mut r = right.split(' ');
            let (fstype, _source, super_opts) = (r.next(), r.next(), r.next().unwrap_or(""));
            let Some(mount) = mount.map(unescape) else {
                continue;
            };
            match fstype {
                Some("cgroup") if super_opts.split(',').any(|o| o == "memory") => {
                    return Some(Self {
                        version: Version::V1,
                        mount: PathBuf::from(mount),
                    });
                }
                Some("cgroup2") if v2.is_none() && v2_has_memory(Path::new(&mount)) => {
                    v2 = Some(Self {
                        version: Version::V2,
                        mount: PathBuf::from(mount),
                    });
                }
                _ => {}
            }
        }
        v2
    }

    /// The absolute directory of a cgroup path such as `/kubepods/x`.
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        self.mount.join(cgroup.trim_start_matches('/'))
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(n as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves cgroup ids to paths by walking the hierarchy, remembering what it saw.
///
/// A walk reads every directory of the hierarchy (2,000 cgroups on a big node took 60 ms, on
/// the event loop), so it is the last resort: a remembered id is checked by its inode; then a
/// path the caller believes near (the task's own cgroup from `/proc/<pid>/cgroup`) with its
/// ancestors; then the children of the parents of the cgroups resolved last (a restarted
/// container's new cgroup in its pod); and an id a walk did not find is not walked for again
/// for [`MISS_TTL`]. Clones share what was learnt: the correlator, the kill-outcome tracker
/// and the SIGKILL tracker hold one resolver.
#[derive(Clone, Debug)]
pub struct IdResolver {
    hierarchy: MemoryHierarchy,
    state: Arc<Mutex<Learnt>>,
}

/// What the resolver knows of the hierarchy.
#[derive(Debug, Default)]
struct Learnt {
    cache: HashMap<u64, String>,
    /// Ids the last walks did not find, oldest first, with when.
    misses: VecDeque<(u64, Instant)>,
    /// Parents of the cgroups resolved last, newest last: a new cgroup is most often made
    /// beside them (a restarted container in its pod, the next of a job's cgroups).
    parents: VecDeque<String>,
    /// Walks of the whole hierarchy so far.
    walks: u64,
}

/// Bound on remembered ids: a walk stops remembering there, and a lookup that would exceed it
/// empties the cache first (stale entries go with it).
const MAX_CACHED: usize = 16_384;
/// How long an id no walk found is not looked for again: a cgroup made since has a new id,
/// but where ids are inode numbers, a removed cgroup's may come back.
pub const MISS_TTL: Duration = Duration::from_secs(10);
/// Bound on remembered misses.
const MAX_MISSES: usize = 1024;
/// Parents of recently resolved cgroups whose children are read before a walk.
const PARENTS: usize = 8;

impl IdResolver {
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        Self {
            hierarchy,
            state: Arc::new(Mutex::new(Learnt::default())),
        }
    }

    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    /// The path of the cgroup whose directory inode is `id`, or `None` if no such cgroup exists
    /// (any more).
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        self.resolve_near(id, || None)
    }

    /// [`Self::resolve`], trying first `near` (asked only when `id` is not remembered: a cgroup
    /// path that is likely the cgroup or one of its descendants) and its ancestors, by inode,
    /// before a walk.
    pub fn resolve_near(
        &mut self,
        id: u64,
        near: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        let h = &self.hierarchy;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.resolve_at(h, id, near, Instant::now())
    }

    /// The cgroup `id` of task `pid` (its `/proc/<pid>/cgroup` under `proc_root` tried first).
    pub fn resolve_for_task(&mut self, id: u64, proc_root: &Path, pid: i32) -> Option<String> {
        self.resolve_near(id, || super::procfs::cgroup_hint(proc_root, pid))
    }
}

impl Learnt {
    /// [`IdResolver::resolve_near`] at `now`.
    fn resolve_at(
        &mut self,
        h: &MemoryHierarchy,
        id: u64,
        near: impl FnOnce() -> Option<String>,
        now: Instant,
    ) -> Option<String> {
        if let Some(p) = self.cache.get(&id) {
            // A cached path can be stale if the cgroup was removed and the id reused: check.
            if inode(&h.dir(p)) == Some(id) {
                return Some(p.clone());
            }
            self.cache.remove(&id);
        }
        let found = near().and_then(|n| among_ancestors(h, id, &n)).or_else(|| {
            // An id a walk missed lately is looked for neither among the parents' children
            // nor by another walk.
            if self.missed_lately(id, now) {
                return None;
            }
            self.among_parents_children(h, id)
                .or_else(|| self.walk_or_miss(h, id, now))
        });
        if let Some(p) = &found {
            self.resolved(id, p);
        }
        found
    }

    /// Remembers `ino` at `path`; a full cache is emptied first (stale entries go with it: a
    /// walk, now rare, is what used to rebuild it).
    fn remember(&mut self, ino: u64, path: String) {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&ino) {
            self.cache.clear();
        }
        self.cache.insert(ino, path);
    }

    /// Remembers `id` at `path`, and its parent among those whose children are read first.
    fn resolved(&mut self, id: u64, path: &str) {
        self.remember(id, path.to_string());
        let parent = match path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &path[..i],
        };
        if let Some(i) = self.parents.iter().position(|p| p == parent) {
            self.parents.remove(i);
        } else if self.parents.len() == PARENTS {
            self.parents.pop_front();
        }
        self.parents.push_back(parent.to_string());
    }

    /// A child of one of the recent parents whose inode is `id` (each child seen is remembered).
    fn among_parents_children(&mut self, h: &MemoryHierarchy, id: u64) -> Option<String> {
        let mut found = None;
        let parents: Vec<String> = self.parents.iter().rev().cloned().collect();
        for parent in &parents {
            let Ok(entries) = fs::read_dir(h.dir(parent)) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(ino) = e.metadata().ok().map(|m| m.ino()) else {
                    continue;
                };
                let path = child_path(parent, &e.file_name().to_string_lossy());
                if ino == id {
                    found = Some(path.clone());
                }
                self.remember(ino, path);
            }
            if found.is_some() {
                break;
            }
        }
        found
    }

    /// A walk of the whole hierarchy for `id`; a miss is remembered (at `now`).
    fn walk_or_miss(&mut self, h: &MemoryHierarchy, id: u64, now: Instant) -> Option<String> {
        let found = self.walk(h, id);
        if found.is_none() {
            if self.misses.len() == MAX_MISSES {
                self.misses.pop_front();
            }
            self.misses.push_back((id, now));
        }
        found
    }

    /// Whether a walk missed `id` less than [`MISS_TTL`] before `now` (older misses forgotten).
    fn missed_lately(&mut self, id: u64, now: Instant) -> bool {
        while self
            .misses
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= MISS_TTL)
        {
            self.misses.pop_front();
        }
        self.misses.iter().any(|(m, _)| *m == id)
    }

    /// Walks the whole hierarchy, remembering every cgroup it sees; the path of `id`.
    fn walk(&mut self, h: &MemoryHierarchy, id: u64) -> Option<String> {
        let started = Instant::now();
        self.walks += 1;
        self.cache.clear();
        let mut stack = vec![(h.mount.clone(), String::from("/"))];
        let mut found = None;
        let mut dirs = 0usize;
        while let Some((dir, rel)) = stack.pop() {
            let Some(ino) = inode(&dir) else { continue };
            dirs += 1;
            if self.cache.len() < MAX_CACHED {
                self.cache.insert(ino, rel.clone());
            }
            if ino == id {
                found = Some(rel.clone());
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    stack.push((e.path(), child_path(&rel, &name)));
                }
            }
        }
        tracing::debug!(
            id,
            found = found.is_some(),
            dirs,
            took_us = started.elapsed().as_micros() as u64,
            "memory cgroup hierarchy walked to resolve a cgroup id"
        );
        found
    }
}

/// `path` or one of its ancestors, if its directory's inode is `id`.
fn among_ancestors(h: &MemoryHierarchy, id: u64, path: &str) -> Option<String> {
    let canonical = format!("/{}", path.trim_matches('/'));
    let mut p = canonical.as_str();
    loop {
        if inode(&h.dir(p)) == Some(id) {
            return Some(if p.is_empty() { "/".into() } else { p.into() });
        }
        match p.rfind('/') {
            Some(0) if p.len() > 1 => p = "/",
            Some(i) if i > 0 => p = &p[..i],
            _ => return None,
        }
    }
}

/// `name` under the cgroup path `parent`.
fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

fn inode(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str =
        "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n\
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory\n\
40 25 0:36 / /sys/fs/cgroup/unified rw,relatime shared:19 - cgroup2 cgroup2 rw\n";

    #[test]
    fn v1_memory_mount_is_found_before_v2() {
        let h = MemoryHierarchy::from_mountinfo(V1, |_| true).unwrap();
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(h.dir("/a/b"), PathBuf::from("/sys/fs/cgroup/memory/a/b"));
    }

    #[test]
    fn v2_needs_the_memory_controller() {
        let t = "40 25 0:36 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(MemoryHierarchy::from_mountinfo(t, |_| false), None);
        let h = MemoryHierarchy::from_mountinfo(t, |_| true).unwrap();
        assert_eq!(
            (h.version, h.mount),
            (Version::V2, PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/x\\"), "/x\\");
    }

    #[test]
    fn resolves_ids_in_a_directory_tree() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("kubepods/pod1/c1")).unwrap();
        let mut r = IdResolver::new(MemoryHierarchy {
            version: Version::V2,
            mount: root.path().to_path_buf(),
        });
        let id = inode(&root.path().join("kubepods/pod1/c1")).unwrap();
        assert_eq!(r.resolve(id).as_deref(), Some("/kubepods/pod1/c1"));
        assert_eq!(r.resolve(inode(root.path()).unwrap()).as_deref(), Some("/"));
        assert_eq!(r.resolve(1), None);
    }

    /// Cached ids and walks so far.
    fn learnt(r: &IdResolver) -> (usize, u64) {
        let st = r.state.lock().unwrap();
        (st.cache.len(), st.walks)
    }

    #[test]
    fn a_path_near_the_cgroup_resolves_it_without_a_walk_and_misses_are_remembered() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("kubepods/pod1/c1")).unwrap();
        let mut r = IdResolver::new(MemoryHierarchy {
            version: Version::V2,
            mount: root.path().to_path_buf(),
        });
        let pod = inode(&root.path().join("kubepods/pod1")).unwrap();
        // The cgroup itself, an ancestor, the root: no walk (the cache stays as it was).
        assert_eq!(
            r.resolve_near(pod, || Some("/kubepods/pod1/c1".into()))
                .as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(learnt(&r), (1, 0), "remembered, nothing walked");
        let top = inode(root.path()).unwrap();
        let near = || Some("/kubepods".into());
        assert_eq!(r.resolve_near(top, near).as_deref(), Some("/"));
        // A near path that is not it: the walk finds it.
        let c1 = inode(&root.path().join("kubepods/pod1/c1")).unwrap();
        assert_eq!(
            r.resolve_near(c1, || Some("/elsewhere".into())).as_deref(),
            Some("/kubepods/pod1/c1")
        );
        assert_eq!(learnt(&r).1, 1, "walked");
        // An id no walk finds is not walked for again...
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(learnt(&r).1, 2, "no second walk for it");
        // ...until MISS_TTL has passed.
        let later = Instant::now() + MISS_TTL;
        let h = r.hierarchy.clone();
        assert_eq!(
            r.state
                .lock()
                .unwrap()
                .resolve_at(&h, u64::MAX, || None, later),
            None
        );
        assert_eq!(learnt(&r).1, 3, "walked again");
        // Paths as given: without a leading slash, with a trailing one.
        assert_eq!(
            among_ancestors(&h, pod, "kubepods/pod1/c1/").as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(among_ancestors(&h, top, "").as_deref(), Some("/"));
    }

    #[test]
    fn a_new_cgroup_beside_a_resolved_one_is_found_without_a_walk() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("kubepods/pod1/c1")).unwrap();
        fs::create_dir_all(root.path().join("system.slice/a.service")).unwrap();
        let mut r = IdResolver::new(MemoryHierarchy {
            version: Version::V2,
            mount: root.path().to_path_buf(),
        });
        let c1 = inode(&root.path().join("kubepods/pod1/c1")).unwrap();
        assert_eq!(r.resolve(c1).as_deref(), Some("/kubepods/pod1/c1"));
        // The container restarts: a new cgroup in the same pod, made after the walk.
        fs::create_dir(root.path().join("kubepods/pod1/c2")).unwrap();
        let c2 = inode(&root.path().join("kubepods/pod1/c2")).unwrap();
        let (before, _) = learnt(&r);
        // A clone shares what was learnt: no walk of its own.
        let mut other = r.clone();
        assert_eq!(other.resolve(c2).as_deref(), Some("/kubepods/pod1/c2"));
        assert_eq!(learnt(&r), (before + 1, 1), "only the pod's children read");
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }
}
