//! OOM kills on demand: memory cgroups of the bench's own, each running `tail /dev/zero`
//! (which allocates without bound) until the kernel's OOM killer SIGKILLs it, again and again.

use std::{
    collections::HashSet,
    fs,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Memory cgroups created for one phase, removed on drop.
pub struct Cgroups {
    dirs: Vec<PathBuf>,
    /// The paths as the kernel (and the agent's `cgroup` field) name them.
    pub paths: HashSet<String>,
    v2: bool,
}

impl Cgroups {
    /// `n` cgroups `/oomwatch-bench-<pid>-<tag>-<i>` limited to `limit` bytes, no swap.
    pub fn create(tag: &str, n: usize, limit: u64) -> Result<Cgroups> {
        let (mount, v2) = memory_mount()?;
        let mut cgs = Cgroups {
            dirs: Vec::new(),
            paths: HashSet::new(),
            v2,
        };
        for i in 0..n {
            let name = format!("oomwatch-bench-{}-{tag}-{i}", std::process::id());
            let dir = mount.join(&name);
            fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            cgs.dirs.push(dir.clone());
            cgs.paths.insert(format!("/{name}"));
            let (limit_file, swap_file, swap_value) = if v2 {
                ("memory.max", "memory.swap.max", "0")
            } else {
                ("memory.limit_in_bytes", "memory.swappiness", "0")
            };
            fs::write(dir.join(limit_file), limit.to_string())
                .with_context(|| format!("set {}/{limit_file}", dir.display()))?;
            let _ = fs::write(dir.join(swap_file), swap_value);
        }
        Ok(cgs)
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The kernel's count of OOM kills in these cgroups (`oom_kill` of `memory.oom_control`
    /// on cgroup v1, of `memory.events` on v2).
    pub fn kernel_kills(&self) -> Result<u64> {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let mut total = 0;
        for dir in &self.dirs {
            let text = fs::read_to_string(dir.join(file))
                .with_context(|| format!("read {}/{file}", dir.display()))?;
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove_cgroup(dir);
        }
    }
}

/// Removes the (emptied) cgroup `dir`, retrying for up to 5 s while its last tasks exit.
pub(super) fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The memory controller's hierarchy: the cgroup v1 `memory` mount, else a v2 mount that has
/// the memory controller.
pub(super) fn memory_mount() -> Result<(PathBuf, bool)> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split(' ').nth(4).map(PathBuf::from) else {
            continue;
        };
        let mut r = right.split(' ');
        match (r.next(), r.nth(1)) {
            (Some("cgroup"), Some(opts)) if opts.split(',').any(|o| o == "memory") => {
                return Ok((mount, false))
            }
            (Some("cgroup2"), _) => {
                let c = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
                if c.split_whitespace().any(|w| w == "memory") {
                    let _ = fs::write(mount.join("cgroup.subtree_control"), "+memory");
                    return Ok((mount, true));
                }
            }
            _ => {}
        }
    }
    bail!("no memory cgroup hierarchy is mounted")
}

/// Starts `tail /dev/zero` inside the cgroup `dir` (a shell moves itself there, then execs it,
/// so the victim's pid is the shell's) and waits for it to die. Returns its pid and whether
/// it was SIGKILLed.
pub fn kill_one(dir: &Path) -> Result<(u32, bool)> {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && exec tail /dev/zero",
            "sh",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn sh -c '... exec tail /dev/zero'")?;
    let pid = child.id();
    let status = child.wait()?;
    Ok((pid, status.signal() == Some(9)))
}

/// What a storm did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Children that died of SIGKILL.
    pub sigkilled: u64,
    /// Children that ended otherwise (should be 0).
    pub other_exits: u64,
    pub elapsed: Duration,
}

/// One thread per cgroup, each killing `per_cgroup` times in a row (fewer if `stop` is set,
/// or `max_time` passes).
pub fn storm(
    cgs: &Cgroups,
    per_cgroup: u64,
    stop: Option<Arc<AtomicBool>>,
    max_time: Duration,
) -> Result<Outcome> {
    let started = Instant::now();
    let killed = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let stop = stop.unwrap_or_default();
    let handles: Vec<_> = cgs
        .dirs()
        .iter()
        .cloned()
        .map(|dir| {
            let (killed, other, stop) = (killed.clone(), other.clone(), stop.clone());
            thread::spawn(move || -> Result<()> {
                for _ in 0..per_cgroup {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > max_time {
                        break;
                    }
                    let (_, sigkilled) = kill_one(&dir)?;
                    if sigkilled {
                        killed.fetch_add(1, Ordering::Relaxed);
                    } else if other.fetch_add(1, Ordering::Relaxed) > 10 {
                        bail!("victims in {} keep exiting without SIGKILL", dir.display());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => bail!("a storm thread panicked"),
        }
    }
    Ok(Outcome {
        sigkilled: killed.load(Ordering::Relaxed),
        other_exits: other.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}
