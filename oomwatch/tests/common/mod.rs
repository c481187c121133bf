//! Real-kernel test harness: the real `oomwatch` binary, real memory cgroups, real OOM kills,
//! checked against the kernel's own record (`/dev/kmsg`, `memory.oom_control`/`memory.events`).
//! Only events from cgroups a test created are ever counted.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use oomwatch_testkit::TestCgroup;

pub mod runtime;

/// True when the test may touch the kernel (root). Otherwise it skips, or fails under
/// `OOMWATCH_REQUIRE_REAL_KERNEL=1` (see `oomwatch_testkit::skip`).
pub fn real_kernel_or_skip() -> bool {
    oomwatch_testkit::root_or_skip("to load eBPF programs and create memory cgroups")
}

/// A running agent whose stdout (events) and stderr (log) are collected.
pub struct Agent {
    child: Child,
    pub port: u16,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// A state directory of its own unless the test gave `--state-dir` (so agents of other
    /// tests never replay each other's kills).
    _state: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Agent {
    pub fn start(extra: &[&str]) -> Agent {
        Self::launch(extra, None, true)
    }

    /// Like [`Agent::start`], but returns at once, without waiting for the agent to be ready
    /// (to kill it somewhere in its start-up).
    pub fn spawn(extra: &[&str]) -> Agent {
        Self::launch(extra, None, false)
    }

    /// Like [`Agent::start`], but the agent joins `cg` before it execs (so its whole start-up,
    /// BTF parsing and program loading included, is charged to that cgroup).
    pub fn start_in_cgroup(cg: &TestCgroup, extra: &[&str]) -> Agent {
        Self::launch(extra, Some(cg), true)
    }

    fn launch(extra: &[&str], cgroup: Option<&TestCgroup>, wait_ready: bool) -> Agent {
        let port = free_port();
        let state = (!extra.contains(&"--state-dir")).then(|| tempfile::tempdir().unwrap());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oomwatch"));
        cmd.args(["run", "--listen", &format!("127.0.0.1:{port}")]);
        if let Some(d) = &state {
            cmd.arg("--state-dir").arg(d.path());
        }
        cmd.args(["--log-level", "debug", "--log-format", "json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cg) = cgroup {
            cg.enter_on_exec(&mut cmd);
        }
        let mut child = cmd.spawn().expect("spawn oomwatch");
        let (tx, events) = channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("waiting for OOM kills") {
                    let _ = ready_tx.send(());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let mut agent = Agent {
            child,
            port,
            events,
            seen: Vec::new(),
            log,
            _state: state,
        };
        if wait_ready && ready.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = agent.child.kill();
            panic!("agent did not become ready; log:\n{}", agent.log_text());
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for an event matching `pred`, keeping every event seen in `self.seen`.
    pub fn wait_event(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no matching event within {timeout:?}; events: {:?}\nlog:\n{}",
                    self.seen,
                    self.log_text()
                ),
            }
        }
    }

    /// Collects events for `quiet` after the last one arrived.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(v) = self.events.recv_timeout(quiet) {
            self.seen.push(v);
        }
    }

    pub fn get(&self, path: &str) -> String {
        http_get(self.port, path)
    }

    /// Sends `sig` and returns the exit status code.
    pub fn stop(mut self, sig: i32) -> Option<i32> {
        // SAFETY: kill with a valid pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let status = self.child.wait().unwrap();
        status.code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The kernel's "Killed process" line for one pid, as numbers.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelKill {
    pub pid: i32,
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub uid: u32,
    pub pgtables_kb: u64,
    pub oom_score_adj: i16,
    /// The same line as `oomwatch_testkit` parses it, for its shared assertions
    /// (`oomwatch_testkit::oracle`).
    pub record: oomwatch_testkit::kernel_log::KernelKill,
}

/// `/dev/kmsg`, positioned at its end when opened.
pub struct Kmsg {
    fd: OwnedFd,
}

impl Kmsg {
    pub fn open() -> Kmsg {
        // SAFETY: valid NUL-terminated path; the returned fd is checked and owned below.
        let fd = unsafe { libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
        assert!(
            fd >= 0,
            "open /dev/kmsg: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: lseek on our own fd.
        unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        Kmsg { fd }
    }

    /// The messages logged since the last read, without waiting.
    pub fn messages_now(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE) {
                continue;
            }
            if n <= 0 {
                return out;
            }
            let rec = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
            let msg = rec.split_once(';').map_or(rec.as_str(), |(_, m)| m);
            out.push(msg.lines().next().unwrap_or("").to_string());
        }
    }

    /// Reads records until the "Killed process <pid>" line shows up.
    pub fn killed(&mut self, pid: i32, timeout: Duration) -> KernelKill {
        self.invocation_of(pid, timeout).1
    }
}

/// Parses "Killed process N (comm) total-vm:XkB, anon-rss:XkB, file-rss:XkB, shmem-rss:XkB,
/// UID:N pgtables:XkB oom_score_adj:N" (with `oomwatch_testkit::kernel_log`, as `vm-test`).
pub fn parse_killed(s: &str) -> Option<KernelKill> {
    let record = oomwatch_testkit::kernel_log::parse_killed(s)?;
    let num = |key: &str| record.numbers.get(key).copied();
    Some(KernelKill {
        pid: i32::try_from(record.pid).ok()?,
        comm: record.comm.clone(),
        total_vm_kb: u64::try_from(num("total-vm")?).ok()?,
        anon_rss_kb: u64::try_from(num("anon-rss")?).ok()?,
        file_rss_kb: u64::try_from(num("file-rss")?).ok()?,
        shmem_rss_kb: u64::try_from(num("shmem-rss")?).ok()?,
        uid: u32::try_from(num("UID")?).ok()?,
        pgtables_kb: u64::try_from(num("pgtables")?).ok()?,
        oom_score_adj: i16::try_from(num("oom_score_adj")?).ok()?,
        record,
    })
}

/// Whether the agent's log says `probe` attached.
pub fn attached(log: &str, probe: &str) -> bool {
    log.lines()
        .any(|l| l.contains("probe attached") && l.contains(&format!("\"probe\":\"{probe}\"")))
}

/// The value of one sample line of `/metrics`, e.g. `oomwatch_oom_kills_total{...}`.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `oomwatch_oom_kills_total` for one (comm, cgroup) pair, summed over its other labels
/// (`constraint`), whatever the label order; `None` when no series matches.
pub fn kills_for(metrics: &str, comm: &str, cgroup: &str) -> Option<f64> {
    let (c, g) = (format!("comm=\"{comm}\""), format!("cgroup=\"{cgroup}\""));
    let values: Vec<f64> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("oomwatch_oom_kills_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            let has = labels.split(',').any(|x| x == c) && labels.split(',').any(|x| x == g);
            has.then(|| value.trim().parse().ok()).flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The kernel's own account of one OOM invocation, from `/dev/kmsg`: the "invoked oom-killer"
/// line and the "oom-kill:" summary line before a given "Killed process" line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelInvocation {
    pub gfp_mask: String,
    pub order: i32,
    pub constraint: String,
    pub oom_memcg: Option<String>,
    pub task_memcg: String,
    /// Every `/dev/kmsg` message read up to the "Killed process" line, for
    /// [`KernelInvocation::report`].
    pub log: Vec<String>,
}

impl KernelInvocation {
    /// The invocation whose "Killed process" lines name `pid`, as `oomwatch_testkit::kernel_log`
    /// parses the kernel's report (header, task dump, summary), for the shared assertions.
    pub fn report(&self, pid: i32) -> Option<oomwatch_testkit::kernel_log::Invocation> {
        oomwatch_testkit::kernel_log::oom_invocations(&self.log)
            .into_iter()
            .find(|i| i.killed.contains(&i64::from(pid)))
    }
}

impl Kmsg {
    /// Reads until the "Killed process <pid>" line, returning the invocation lines before it.
    pub fn invocation_of(&mut self, pid: i32, timeout: Duration) -> (KernelInvocation, KernelKill) {
        self.invocation_of_any(&[pid], timeout)
    }

    /// Reads until a "Killed process" line for any of `pids` (the threads of one process: the
    /// kernel names the thread it chose), returning the invocation lines before it.
    pub fn invocation_of_any(
        &mut self,
        pids: &[i32],
        timeout: Duration,
    ) -> (KernelInvocation, KernelKill) {
        self.invocation_where(timeout, |_, kill| pids.contains(&kill.pid))
            .unwrap_or_else(|| {
                panic!("no 'Killed process' line for {pids:?} in /dev/kmsg within {timeout:?}")
            })
    }

    /// Reads until a kill whose invocation and "Killed process" line match `pred` (e.g. the
    /// victim's `task_memcg`, when its pid is not known beforehand).
    pub fn invocation_where(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&KernelInvocation, &KernelKill) -> bool,
    ) -> Option<(KernelInvocation, KernelKill)> {
        let mut inv = KernelInvocation::default();
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 8192];
        while Instant::now() < end {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let rec = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
            let msg = rec.split_once(';').map_or(rec.as_str(), |(_, m)| m);
            let msg = msg.lines().next().unwrap_or("");
            inv.log.push(msg.to_string());
            if let Some(rest) = msg
                .split_once(" invoked oom-killer: gfp_mask=")
                .map(|x| x.1)
            {
                inv.gfp_mask = rest.split(['(', ',']).next().unwrap_or("").to_string();
                inv.order = rest
                    .split_once("order=")
                    .and_then(|(_, o)| o.split(',').next()?.trim().parse().ok())
                    .unwrap_or(i32::MIN);
            } else if let Some(rest) = msg.strip_prefix("oom-kill:") {
                for kv in rest.split(',') {
                    match kv.split_once('=') {
                        Some(("constraint", v)) => inv.constraint = v.to_string(),
                        Some(("oom_memcg", v)) => inv.oom_memcg = Some(v.to_string()),
                        Some(("task_memcg", v)) => inv.task_memcg = v.to_string(),
                        _ => {}
                    }
                }
            } else if let Some(i) = msg.find("Killed process ") {
                let kill = parse_killed(&msg[i..]).unwrap_or_else(|| panic!("unparsed: {msg}"));
                if pred(&inv, &kill) {
                    return Some((inv, kill));
                }
            }
        }
        None
    }
}

/// Compares `got` with the golden file `path`, or rewrites it when `UPDATE_GOLDEN=1`; `test` is
/// the test binary's name for the message that says how to regenerate it.
pub fn check_golden(path: &std::path::Path, got: &str, test: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, got).unwrap();
        println!("wrote {}", path.display());
        return;
    }
    let want = fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test {test}",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "output differs from {}; if the change is intended, regenerate with \
         UPDATE_GOLDEN=1 cargo test --test {test}",
        path.display()
    );
}

/// `promtool check metrics` on `text`: `None` if it reported nothing, the report otherwise;
/// skips (returns `None`) when promtool is missing, or fails under
/// `OOMWATCH_REQUIRE_REAL_KERNEL=1` (see `oomwatch_testkit::skip`).
pub fn promtool_report(text: &str) -> Option<String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = oomwatch_testkit::host_or_skip(
        "promtool not runnable (Debian: apt-get install prometheus)",
        child,
    )?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !report.trim().is_empty())
        .then(|| format!("{}\n{report}", out.status))
}

/// The victim of an OOM kill record; `None` for other records on stdout (such as the
/// `"type":"oom_kill_lifecycle"` follow-ups, which name the same pid).
pub fn kill_pid(v: &Value) -> Option<i32> {
    let kill = v.get("type").is_none_or(|t| t == "oom_kill");
    kill.then(|| v["pid"].as_i64().map(|p| p as i32)).flatten()
}

/// A metrics sink as the agent builds one, for in-process tests: `cap` label sets, version
/// `0.1.0`, commit `commit`.
pub fn metrics_sink(cap: usize, commit: &'static str) -> oomwatch::sink::metrics::Metrics {
    oomwatch::sink::metrics::Metrics::new(
        cap,
        oomwatch::sink::metrics::BuildInfo {
            version: "0.1.0",
            git_commit: commit,
        },
    )
}

/// `promtool test rules` of one test file's text (its `rule_files` name the deployed rules);
/// fails the test with promtool's report unless every case passes.
pub fn promtool_test_rules(test: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.test.yaml");
    std::fs::write(&file, test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output();
    let Some(out) = oomwatch_testkit::host_or_skip("promtool not runnable", out) else {
        return;
    };
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
