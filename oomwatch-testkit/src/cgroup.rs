//! A memory cgroup of a test's own: created under the memory controller's hierarchy (cgroup v1
//! `memory` mount, else a cgroup2 mount with the memory controller), removed on drop. Real OOM
//! kills in tests happen only inside these.
use std::ffi::CString;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

/// A memory cgroup of our own, removed on drop (its remaining processes are killed first).
pub struct TestCgroup {
    pub dir: PathBuf,
    /// The path as the kernel and /proc name it, e.g. `/oomwatch-test-1234-0`.
    pub path: String,
    pub v2: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestCgroup {
    /// A new cgroup `/oomwatch-test-<pid>-<n>` with `limit_bytes` and no swap.
    pub fn new(limit_bytes: u64) -> TestCgroup {
        let name = format!(
            "oomwatch-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        TestCgroup::create(&format!("/{name}"), Some(limit_bytes), false)
    }

    /// A cgroup at `path` below the memory hierarchy's root (its parent must exist), with an
    /// optional limit (and then no swap); removed on drop (drop children first).
    /// On cgroup v2 it delegates the memory controller to its children.
    pub fn at(path: &str, limit_bytes: Option<u64>) -> TestCgroup {
        TestCgroup::create(path, limit_bytes, true)
    }

    fn create(path: &str, limit_bytes: Option<u64>, parent: bool) -> TestCgroup {
        let (mount, v2) = memory_mount();
        let dir = mount.join(path.trim_start_matches('/'));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = TestCgroup {
            dir,
            path: path.to_string(),
            v2,
        };
        if v2 && parent {
            let _ = fs::write(cg.dir.join("cgroup.subtree_control"), "+memory");
        }
        if let Some(limit) = limit_bytes {
            let (file, swap, no_swap) = if v2 {
                ("memory.max", "memory.swap.max", "0")
            } else {
                ("memory.limit_in_bytes", "memory.swappiness", "0")
            };
            fs::write(cg.dir.join(file), limit.to_string())
                .unwrap_or_else(|e| panic!("{file} of {}: {e}", cg.path));
            let _ = fs::write(cg.dir.join(swap), no_swap);
        }
        cg
    }

    /// The memory hierarchy's mount point.
    pub fn mount() -> PathBuf {
        memory_mount().0
    }

    /// The kernel's count of OOM kills in this cgroup (v1 `memory.oom_control`, v2
    /// `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.dir.join(file))
            .unwrap_or_else(|e| panic!("{file} of {}: {e}", self.path));
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill in {file} of {}: {text}", self.path))
    }

    /// A kernel file of the cgroup as a number: the v1 name, else the v2 one.
    pub fn read_u64(&self, v1: &str, v2: &str) -> u64 {
        let name = if self.v2 { v2 } else { v1 };
        let text = fs::read_to_string(self.dir.join(name))
            .unwrap_or_else(|e| panic!("{name} of {}: {e}", self.path));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name} of {}: {text:?}: {e}", self.path))
    }

    /// Moves a running process into this cgroup.
    pub fn add(&self, pid: i32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path));
    }

    /// Makes `cmd`'s process join this cgroup before it execs.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let procs = self.procs_path();
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (open, write, close) on a buffer prepared before the fork.
        unsafe { cmd.pre_exec(move || write_path(procs.as_ptr(), b"0")) };
    }

    /// `tail /dev/zero` (which allocates without bound) started inside the cgroup with the
    /// given `oom_score_adj`, already there when it execs (so its pid is the victim's).
    pub fn command_hog(&self, oom_score_adj: i16) -> Command {
        let procs = self.procs_path();
        let adj = oom_score_adj.to_string();
        let mut cmd = Command::new("tail");
        cmd.arg("/dev/zero")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (open, write, close) on buffers prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                write_path(procs.as_ptr(), b"0")?;
                write_path(c"/proc/self/oom_score_adj".as_ptr(), adj.as_bytes())?;
                Ok(())
            });
        }
        cmd
    }

    /// Runs the hog of [`TestCgroup::command_hog`], waits for it to die, and returns its pid.
    /// Panics unless it was SIGKILLed.
    pub fn oom_kill(&self, oom_score_adj: i16) -> i32 {
        let mut child = self.command_hog(oom_score_adj).spawn().expect("spawn tail");
        let pid = i32::try_from(child.id()).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "victim {pid} was not OOM-killed: {status:?}"
        );
        pid
    }

    fn procs_path(&self) -> CString {
        CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap()
    }
}

fn write_path(path: *const libc::c_char, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: path is a NUL-terminated string; data is a valid buffer.
    unsafe {
        let fd = libc::open(path, libc::O_WRONLY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let me = std::process::id().to_string();
        for _ in 0..50 {
            if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in procs.lines().filter(|p| *p != me) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill takes plain integers; the pids are in our own cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            match fs::remove_dir(&self.dir) {
                // Gone already: a test removed it itself.
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// The memory controller's hierarchy: cgroup v1 `memory` mount, else a v2 mount with memory.
fn memory_mount() -> (PathBuf, bool) {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = PathBuf::from(left.split(' ').nth(4).unwrap());
        let mut r = right.split(' ');
        match (r.next(), r.nth(1)) {
            (Some("cgroup"), Some(opts)) if opts.split(',').any(|o| o == "memory") => {
                return (mount, false)
            }
            (Some("cgroup2"), _) => {
                let c = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
                if c.split_whitespace().any(|w| w == "memory") {
                    let _ = fs::write(mount.join("cgroup.subtree_control"), "+memory");
                    return (mount, true);
                }
            }
            _ => {}
        }
    }
    panic!("no memory cgroup hierarchy mounted");
}
