//! The memory cgroup hierarchy: where it is mounted (v1 or v2), and cgroup id → path.
//!
//! The kernel identifies a cgroup by its kernfs id, which is also the inode number of its
//! directory. Paths are given relative to the hierarchy's root, as `/proc/<pid>/cgroup` and the
//! kernel's OOM report print them (`/kubepods/...`, `/system.slice/...`).
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
#[derive(Debug)]
pub struct IdResolver {
    hierarchy: MemoryHierarchy,
    cache: HashMap<u64, String>,
}

/// Bound on remembered ids; the cache is rebuilt from a fresh walk when it would exceed it.
const MAX_CACHED: usize = 16_384;

impl IdResolver {
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        Self {
            hierarchy,
            cache: HashMap::new(),
        }
    }

    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    /// The path of the cgroup whose directory inode is `id`, or `None` if no such cgroup exists
    /// (any more).
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cache.get(&id) {
            // A cached path can be stale if the cgroup was removed and the id reused: check.
            if inode(&self.hierarchy.dir(p)) == Some(id) {
                return Some(p.clone());
            }
        }
        self.cache.clear();
        let mut stack = vec![(self.hierarchy.mount.clone(), String::from("/"))];
        let mut found = None;
        while let Some((dir, rel)) = stack.pop() {
            let Some(ino) = inode(&dir) else { continue };
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
                    let child = if rel == "/" {
                        format!("/{name}")
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), child));
                }
            }
        }
        found
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
}
