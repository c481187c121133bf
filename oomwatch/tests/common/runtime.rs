//! Real container runtimes for the tests: a `containerd` + `dockerd` pair and `podman`, each
//! with its own roots, state, sockets and config under a temporary directory (so the agent's
//! `--docker-root`/`--podman-root` flags are exercised), started once per test and stopped when
//! dropped, even after a failure: containers removed, daemons terminated, their leftover
//! processes and mounts undone. Images are built locally from Debian's busybox-static (no
//! registry is reachable). Every OOM stays inside a container's own memory cgroup.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Agent, KernelInvocation, Kmsg};

/// The image every test container runs: busybox-static as `/bin/busybox`, entrypoint busybox.
pub const IMAGE: &str = "oomwatch-test/busybox:1";
/// podman's pod infra image: busybox sleeping.
pub const PAUSE_IMAGE: &str = "oomwatch-test/pause:1";
pub const BUSYBOX: &str = "/bin/busybox";
/// How long a kill may take to show up in the kernel log and as an event.
const WAIT: Duration = Duration::from_secs(15);

/// True when every tool is on PATH; otherwise skips (fails under
/// `OOMWATCH_REQUIRE_REAL_KERNEL=1`) naming what `cargo xtask setup --test` installs.
pub fn tools_or_skip(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() && Path::new(BUSYBOX).is_file() {
        return true;
    }
    oomwatch_testkit::skip(format!(
        "needs {missing:?} and {BUSYBOX} (cargo xtask setup --test installs docker.io, podman, \
         containerd, runc, busybox-static)"
    ));
    false
}

/// The system's directories, searched first: the Debian packages' own binaries, not another
/// copy earlier on PATH (e.g. a docker CLI in /usr/local/bin).
const SYSTEM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// PATH for the daemons (runc, shims, conmon).
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    SYSTEM_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(tool))
        .find(|f| f.is_file())
}

/// A command for `tool` as found by [`which`], with the system PATH.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(which(name).unwrap_or_else(|| PathBuf::from(name)));
    c.env("PATH", SYSTEM_PATH);
    c
}

/// Runs `cmd`, returning its trimmed stdout; panics with its stderr when it fails.
pub fn output(cmd: &mut Command) -> String {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A build context and a rootfs tarball holding busybox-static as `/bin/busybox`.
fn image_files(dir: &Path) -> (PathBuf, PathBuf) {
    let ctx = dir.join("image");
    fs::create_dir_all(ctx.join("bin")).unwrap();
    fs::copy(BUSYBOX, ctx.join("bin/busybox")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY bin /bin\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .unwrap();
    let tar = dir.join("rootfs.tar");
    output(
        tool("tar")
            .arg("-C")
            .arg(&ctx)
            .arg("-cf")
            .arg(&tar)
            .arg("bin"),
    );
    (ctx, tar)
}

/// SIGTERM, then SIGKILL after `grace`; always reaped.
pub fn stop_child(child: &mut Child, grace: Duration) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Processes the runtimes left behind (shims, conmon) whose command line names `dir`: ours.
pub fn kill_leftovers(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if pid != me && String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: kill(2) on a process our daemons started for this directory.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Unmounts everything the runtimes mounted below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let c = std::ffi::CString::new(p).unwrap();
        // SAFETY: a valid NUL-terminated path; a failure only leaves the mount.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Waits until `ok`; else fails with the daemon's own log (`log`: its file).
pub fn wait_for(what: &str, log: &Path, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if ok() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{what} not ready within {timeout:?}; its log:\n{}",
        tail.join("\n")
    );
}

/// `containerd` and `dockerd` of our own (cgroupfs driver, no iptables, no bridge, live
/// restore so that containers outlive a stopped dockerd).
pub struct Docker {
    dir: tempfile::TempDir,
    containerd: Option<Child>,
    dockerd: Option<Child>,
}

impl Docker {
    pub fn start() -> Docker {
        let dir = tempfile::Builder::new()
            .prefix("oomwatch-docker-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let config = root.join("containerd.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{r}/containerd-root\"\nstate = \"{r}/containerd-state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{r}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{r}/containerd.sock.ttrpc\"\n",
                r = root.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(root.join("containerd.log")).unwrap();
        let containerd = tool("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut d = Docker {
            dir,
            containerd: Some(containerd),
            dockerd: None,
        };
        let sock = d.dir.path().join("containerd.sock");
        let log = d.dir.path().join("containerd.log");
        wait_for("containerd", &log, Duration::from_secs(20), || {
            sock.exists()
        });
        d.start_dockerd();
        let (ctx, _) = image_files(d.dir.path());
        output(
            d.cli()
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "-t", IMAGE])
                .arg(&ctx),
        );
        d
    }

    /// Starts (or restarts) dockerd and waits until it answers.
    pub fn start_dockerd(&mut self) {
        let r = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(r.join("dockerd.log"))
            .unwrap();
        let child = tool("dockerd")
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(r.join("exec"))
            .arg("--pidfile")
            .arg(r.join("dockerd.pid"))
            .arg("-H")
            .arg(self.host())
            .arg(format!(
                "--containerd={}",
                r.join("containerd.sock").display()
            ))
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none"])
            .args([
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--live-restore",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.dockerd = Some(child);
        let log = r.join("dockerd.log");
        wait_for("dockerd", &log, Duration::from_secs(30), || {
            self.cli()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// Stops dockerd (its containers keep running: live restore).
    pub fn stop_dockerd(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Docker's data root (`--data-root`), as the agent's `--docker-root` takes it.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cli(&self) -> Command {
        let mut c = tool("docker");
        c.args(["-H", &self.host()]);
        c
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.dockerd.is_none() {
            self.start_dockerd();
        }
        if let Ok(o) = self.cli().args(["ps", "-aq"]).output() {
            let ids = String::from_utf8_lossy(&o.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.cli().args(["rm", "-f"]).args(&ids).output();
            }
        }
        self.stop_dockerd();
        if let Some(mut c) = self.containerd.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
        kill_leftovers(self.dir.path());
        // Containers Docker no longer knew (a test removed their state): their cgroups.
        if let Ok(entries) = fs::read_dir(self.data_root().join("containers")) {
            for e in entries.flatten() {
                remove_cgroup(&format!("/docker/{}", e.file_name().to_string_lossy()));
            }
        }
        unmount_under(self.dir.path());
    }
}

/// Kills what is left in a container's memory cgroup (ours: a test's container) and removes it.
pub fn remove_cgroup(cgroup: &str) {
    let dir = oomwatch_testkit::TestCgroup::mount().join(cgroup.trim_start_matches('/'));
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) on a process in a test container's cgroup.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let end = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(&dir).is_err() && Instant::now() < end {
        thread::sleep(Duration::from_millis(50));
    }
}

/// podman with its own `--root`, `--runroot`, `--tmpdir` and `containers.conf` (cgroupfs
/// manager, runc, file events, rlimits below this host's hard limits: root here lacks
/// CAP_SYS_RESOURCE).
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("oomwatch-podman-")
            .tempdir()
            .unwrap();
        fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             runtime = \"runc\"\n",
        )
        .unwrap();
        let p = Podman { dir };
        let (_, tar) = image_files(p.dir.path());
        let tar = tar.to_str().unwrap().to_owned();
        let entry = |e: &str| format!("ENTRYPOINT {e}");
        p.run(&[
            "import",
            "-q",
            "--change",
            &entry(r#"["/bin/busybox"]"#),
            &tar,
            IMAGE,
        ]);
        let pause = entry(r#"["/bin/busybox","sleep","2147483647"]"#);
        p.run(&["import", "-q", "--change", &pause, &tar, PAUSE_IMAGE]);
        p
    }

    /// podman's storage root (`--root`), as the agent's `--podman-root` takes it.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn cli(&self) -> Command {
        let d = self.dir.path();
        let mut c = tool("podman");
        // conmon writes an `oom` marker file into its working directory.
        c.current_dir(d)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cli()
            .args(["pod", "rm", "-f", "-a", "-t", "0"])
            .output();
        let _ = self.cli().args(["rm", "-f", "-a", "-t", "0"]).output();
        kill_leftovers(self.dir.path());
        unmount_under(self.dir.path());
    }
}

/// Runs a host process inside the memory cgroup `cgroup` (a running container's) that
/// allocates until the kernel kills it there; returns its pid. Used when the runtime is down
/// or its files are gone: the container itself keeps running.
pub fn oom_in_cgroup(cgroup: &str) -> i32 {
    let procs = oomwatch_testkit::TestCgroup::mount()
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec {BUSYBOX} tail /dev/zero",
        procs.display()
    );
    let mut child = Command::new(BUSYBOX)
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the allocation in {cgroup} was not killed"
    );
    pid
}

/// The kernel's own count of OOM kills in a memory cgroup (v1 `memory.oom_control`
/// `oom_kill`, v2 `memory.events` `oom_kill`).
pub fn kernel_oom_kills(cgroup: &str) -> u64 {
    let dir = oomwatch_testkit::TestCgroup::mount().join(cgroup.trim_start_matches('/'));
    let text = fs::read_to_string(dir.join("memory.oom_control"))
        .or_else(|_| fs::read_to_string(dir.join("memory.events")))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `attempt(1..=4)` until it returns Some: None means the kernel rate-limited its OOM
/// report header (10 per 5 s, host-wide, shared with every other test on the machine), so the
/// kill's context cannot be checked; the next attempt comes after the window.
pub fn retry_rate_limited<T>(mut attempt: impl FnMut(u32) -> Option<T>) -> T {
    for n in 1..=4 {
        if let Some(v) = attempt(n) {
            return v;
        }
        eprintln!("kernel OOM report header rate-limited (attempt {n}); retrying in 5.5 s");
        thread::sleep(Duration::from_millis(5500));
    }
    panic!("the kernel printed no OOM report header in 4 tries");
}

/// The agent's event for the kill in memory cgroup `cg`, and the kernel's record of it; None
/// when the kernel rate-limited the report's header.
pub fn kill_in(agent: &mut Agent, kmsg: &mut Kmsg, cg: &str) -> Option<(Value, KernelInvocation)> {
    // A new event: earlier kills in the same cgroup are already in `seen`.
    let old: Vec<Value> = agent.seen.iter().map(|v| v["pid"].clone()).collect();
    let ev = agent.wait_event(WAIT, |v| v["cgroup"] == cg && !old.contains(&v["pid"]));
    let pid = i32::try_from(ev["pid"].as_i64().unwrap()).unwrap();
    let (inv, _) = kmsg.invocation_of(pid, WAIT);
    // No header, or the last header before the victim's line is another kill's (ours was
    // suppressed while another test's got through): the context cannot be checked.
    if inv.constraint.is_empty() || inv.task_memcg != cg {
        return None;
    }
    Some((ev, inv))
}

/// The event's fields against what they must be, printed as one line of the report table
/// (`TABLE | runtime | case | fields | what the runtime says | PASS/FAIL`); a mismatch is added
/// to `failures`.
pub fn check_fields(
    runtime: &str,
    case: &str,
    ev: &serde_json::Value,
    want: &[(&str, serde_json::Value)],
    says: &str,
    failures: &mut Vec<String>,
) {
    let bad: Vec<String> = want
        .iter()
        .filter(|(k, v)| &ev[*k] != v)
        .map(|(k, v)| format!("{k}: got {} want {v}", ev[*k]))
        .collect();
    let got: Vec<String> = want
        .iter()
        .map(|(k, _)| format!("{k}={}", ev[*k]))
        .collect();
    let verdict = if bad.is_empty() { "PASS" } else { "FAIL" };
    eprintln!(
        "TABLE | {runtime} | {case} | {} | {says} | {verdict}",
        got.join(" ")
    );
    if !bad.is_empty() {
        failures.push(format!("{case}: {}", bad.join("; ")));
    }
}

/// A runtime's command line (`docker -H ...`, `podman --root ...`): running it and
/// `inspect`ing one container work the same for both.
pub trait RuntimeCli {
    fn cli(&self) -> Command;

    fn run(&self, args: &[&str]) -> String {
        output(self.cli().args(args))
    }

    /// `<runtime> inspect` of one container.
    fn inspect(&self, id: &str) -> Value {
        let text = self.run(&["inspect", id]);
        let v: Value = serde_json::from_str(&text).unwrap();
        v[0].clone()
    }
}

impl RuntimeCli for Docker {
    fn cli(&self) -> Command {
        Docker::cli(self)
    }
}

impl RuntimeCli for Podman {
    fn cli(&self) -> Command {
        Podman::cli(self)
    }
}
