//! Containers as the runtimes lay them out, without a runtime: a kubelet-style memory cgroup
//! (`<base>/kubepods/burstable/pod<uid>/<64-hex id>`, the cgroupfs driver) and a process tree
//! whose init is pid 1 of its own pid namespace (`unshare --pid --fork --mount-proc`), as runc
//! starts a container's process. The `unshare` parent stays outside the container's cgroup, as
//! the runtime's shim does.
use std::fs;
use std::io::Write;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestCgroup;

/// The memory cgroups of one container, outermost first; removed innermost first on drop.
pub struct ContainerCgroup {
    levels: Vec<TestCgroup>,
    /// The pod uid and container id in the path.
    pub pod_uid: String,
    pub id: String,
}

impl ContainerCgroup {
    /// `<base>/kubepods/burstable/pod<uid>/<id>` with `limit_bytes` on the container's level;
    /// `base` must not exist. `n` makes the uid and id unique within the test process.
    pub fn kubelet(base: &str, n: u32, limit_bytes: u64) -> ContainerCgroup {
        let p = std::process::id();
        let pod_uid = format!("{p:08x}-{n:04x}-4a5b-8c9d-0e1f2a3b4c5d");
        let id = format!("{p:08x}{n:056x}");
        let paths = [
            base.to_string(),
            format!("{base}/kubepods"),
            format!("{base}/kubepods/burstable"),
            format!("{base}/kubepods/burstable/pod{pod_uid}"),
            format!("{base}/kubepods/burstable/pod{pod_uid}/{id}"),
        ];
        let last = paths.len() - 1;
        let levels = paths
            .iter()
            .enumerate()
            .map(|(i, p)| TestCgroup::at(p, (i == last).then_some(limit_bytes)))
            .collect();
        ContainerCgroup {
            levels,
            pod_uid,
            id,
        }
    }

    /// The container's own cgroup.
    pub fn container(&self) -> &TestCgroup {
        self.levels.last().expect("levels")
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        while let Some(cg) = self.levels.pop() {
            drop(cg);
        }
    }
}

/// `sh` as pid 1 of a new pid namespace, inside a container cgroup, waiting for [`go`] before
/// it runs its script. Killed (with its namespace) on drop.
///
/// [`go`]: NsInit::go
pub struct NsInit {
    unshare: Child,
    stdin: Option<ChildStdin>,
    /// The init's pid as the host sees it.
    pub pid: i32,
}

impl NsInit {
    /// Starts `sh -c '<join cg>; read go; <script>'` as the init of a new pid namespace. The
    /// script's stdin stays open until drop, so a later `read` in it blocks.
    pub fn start(cg: &TestCgroup, script: &str) -> NsInit {
        let procs = cg.dir.join("cgroup.procs");
        let sh = format!(
            "echo 0 > '{}' || exit 99; read go; {script}",
            procs.display()
        );
        let mut unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
            ])
            .arg(sh)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let stdin = unshare.stdin.take();
        let end = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let text = fs::read_to_string(&procs).unwrap_or_default();
            if let Some(pid) = text.lines().find_map(|l| l.trim().parse::<i32>().ok()) {
                break pid;
            }
            if let Ok(Some(status)) = unshare.try_wait() {
                panic!(
                    "unshare exited before its init joined {}: {status}",
                    cg.path
                );
            }
            assert!(Instant::now() < end, "no init joined {} in 10 s", cg.path);
            thread::sleep(Duration::from_millis(10));
        };
        let init = NsInit {
            unshare,
            stdin,
            pid,
        };
        let nspid = init.nspid().expect("the init's NSpid");
        assert!(
            nspid.len() > 1 && nspid.last() == Some(&1),
            "pid {pid} is not pid 1 of a pid namespace: NSpid {nspid:?}"
        );
        init
    }

    /// Lets the init run its script.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to the init");
    }

    /// The init's `NSpid` (pid in each namespace, the host's first), while it exists.
    pub fn nspid(&self) -> Option<Vec<i32>> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        line.split_whitespace().map(|n| n.parse().ok()).collect()
    }

    /// Whether the init still runs (not exited, not a zombie).
    pub fn alive(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
            .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
    }

    /// Waits (at most `timeout`) for `unshare` to end, which it does once its init has ended
    /// (util-linux 2.38 then exits 1 whatever killed the init: the kernel's record tells).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Some(status);
            }
            if Instant::now() > end {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NsInit {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        self.stdin = None;
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}
