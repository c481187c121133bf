//! A state directory someone could plant files in (`--state-dir`, written as root): the real
//! agent never follows a link there, never hangs on a FIFO nor reads a device or a huge file
//! whole, says what it found in one line, and replaces the file with its own. A directory
//! others can write to is refused at start-up (see README, `--state-dir`).
mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, real_kernel_or_skip, Agent, TestCgroup};

const FILE: &str = "kmsg-position.json";

/// The agent's memory while a planted file is read: a file read whole (`/dev/zero`, a huge
/// file) gets it OOM-killed in this test's own cgroup, never the host.
const AGENT_LIMIT: u64 = 256 << 20;

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Runs the agent on `dir` (in a memory-limited cgroup), stops it with SIGTERM (it saves its
/// position then), and returns its log.
fn run_on(dir: &Path) -> String {
    let cg = TestCgroup::new(AGENT_LIMIT);
    let d = dir.to_str().unwrap();
    let agent = Agent::start_in_cgroup(&cg, &["--state-dir", d]);
    let log = agent.log_text();
    assert_eq!(agent.stop(libc::SIGTERM), Some(0), "log:\n{log}");
    log
}

/// The position file is the agent's own regular file again, holding a position.
fn assert_replaced(dir: &Path) {
    let meta = fs::symlink_metadata(dir.join(FILE)).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{FILE} is {:?}",
        meta.file_type()
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    assert_eq!(meta.mode() & 0o077, 0, "mode {:o}", meta.mode());
    let text = fs::read(dir.join(FILE)).unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains("\"boot_id\""),
        "no position saved"
    );
}

/// The warnings the agent logged about `name`.
fn warnings_about<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(name))
        .collect()
}

#[test]
fn planted_links_are_never_followed() {
    if !real_kernel_or_skip() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (a, b) = (elsewhere.path().join("a"), elsewhere.path().join("b"));
    fs::write(&a, "precious a\n").unwrap();
    fs::write(&b, "precious b\n").unwrap();
    symlink(&a, state.path().join(".write-test")).unwrap();
    symlink(&b, state.path().join(FILE)).unwrap();

    let log = run_on(state.path());
    assert_eq!(
        fs::read_to_string(&a).unwrap(),
        "precious a\n",
        "link followed"
    );
    assert_eq!(
        fs::read_to_string(&b).unwrap(),
        "precious b\n",
        "link followed"
    );
    assert_replaced(state.path());
    let w = warnings_about(&log, FILE);
    assert!(
        w.iter().any(|l| l.contains("symbolic link")),
        "no warning about the link: {w:?}\n{log}"
    );
}

/// What is planted, how, and what the warning says about it.
type Case = (&'static str, fn(&Path), &'static str);

#[test]
fn devices_fifos_huge_and_foreign_files_are_ignored_and_replaced() {
    if !real_kernel_or_skip() {
        return;
    }
    let cases: [Case; 4] = [
        (
            "a link to /dev/zero",
            |p| symlink("/dev/zero", p).unwrap(),
            "symbolic link",
        ),
        ("a FIFO", |p| mkfifo(p), "not a regular file"),
        (
            "a 1 GiB file",
            |p| fs::File::create(p).unwrap().set_len(1 << 30).unwrap(),
            "larger than",
        ),
        (
            "a file of another user",
            |p| {
                fs::write(p, "{\"boot_id\":\"x\",\"seq\":1,\"recent\":[]}").unwrap();
                std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
            },
            "owned by uid 65534",
        ),
    ];
    for (what, plant, says) in cases {
        let state = tempfile::tempdir().unwrap();
        plant(&state.path().join(FILE));
        let t = Instant::now();
        let log = run_on(state.path());
        eprintln!("{what}: agent ready and stopped in {:?}", t.elapsed());
        let w = warnings_about(&log, FILE);
        assert!(
            w.len() == 1 && w[0].contains(says),
            "{what}: want one warning saying {says:?}, got {w:?}"
        );
        assert_replaced(state.path());
    }
}

#[test]
fn a_directory_others_can_write_is_refused() {
    if !real_kernel_or_skip() {
        return;
    }
    for mode in [0o777, 0o770, 0o1777] {
        let state = tempfile::tempdir().unwrap();
        fs::set_permissions(state.path(), fs::Permissions::from_mode(mode)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_oomwatch"))
            .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--state-dir")
            .arg(state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "mode {mode:o} accepted: {err}");
        assert!(out.status.code().is_some(), "mode {mode:o}: still running");
        let line = err.lines().last().unwrap_or_default();
        assert!(
            line.contains(state.path().to_str().unwrap()) && line.contains("writable by others"),
            "mode {mode:o}: {err}"
        );
    }
}
