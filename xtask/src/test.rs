//! `cargo xtask test [-- ARGS]`: set-up (with test tools), eBPF build and clippy, fmt, clippy,
//! tests.

use std::{
    ffi::OsString,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result};

use crate::{
    ebpf, setup,
    util::{self, run},
};

const STEP: &str = "test";

pub fn test(extra_args: &[OsString]) -> Result<()> {
    let started = Instant::now();
    let mut passed = Steps::new();
    let mut counts = Counts::default();
    let result = run_steps(extra_args, &mut passed, &mut counts);
    let elapsed = started.elapsed().as_secs_f64();
    let done = passed.summary();
    match &result {
        Ok(()) => eprintln!("[{STEP}] SUMMARY: all steps passed ({done}) in {elapsed:.1}s"),
        Err(e) => {
            eprintln!("[{STEP}] SUMMARY: FAILED after {elapsed:.1}s; passed: {done}; failure: {e}")
        }
    }
    if counts.suites > 0 {
        for skip in &counts.skips {
            eprintln!("[{STEP}] skipped at run time: {skip}");
        }
        // The plain closing line CI reads: totals over every test binary of the workspace.
        let (passed, skipped) = counts.totals();
        println!(
            "tests: {passed} passed, {} failed, {skipped} skipped",
            counts.failed
        );
    }
    result
}

/// The steps that passed, each with its wall-clock time (CI's budget is read from these).
struct Steps {
    passed: Vec<(&'static str, f64)>,
    since: Instant,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            passed: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Step `name` passed: it took the time since the previous step ended.
    fn done(&mut self, name: &'static str) {
        let secs = self.since.elapsed().as_secs_f64();
        eprintln!("[{STEP}] step {name} passed in {secs:.1}s");
        self.passed.push((name, secs));
        self.since = Instant::now();
    }

    /// `setup 12.0s, build-ebpf 48.7s, ...`, or `none`.
    fn summary(&self) -> String {
        if self.passed.is_empty() {
            return "none".to_string();
        }
        let steps: Vec<String> = self
            .passed
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1}s"))
            .collect();
        steps.join(", ")
    }
}

/// Seconds each fuzz target runs in `cargo xtask test` (26 targets, two at a time): the
/// 30-minute CI budget's share; `cargo xtask fuzz --secs N` runs them longer.
const FUZZ_SECS: u64 = 3;

/// The file each test that skips at run time appends a line to (`oomwatch_testkit::skip`).
const SKIP_LOG_ENV: &str = "OOMWATCH_SKIP_LOG";
/// Set to 1 to make those tests fail instead of skipping (`.ci/run` sets it; `CI` implies it).
const REQUIRE_ENV: &str = "OOMWATCH_REQUIRE_REAL_KERNEL";

/// Totals of libtest's `test result:` lines, and the tests that skipped at run time.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    suites: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// `<test>\t<reason>` of each test that skipped at run time (libtest counted it passed).
    skips: Vec<String>,
}

impl Counts {
    /// (passed, skipped): a test that skipped at run time counts as skipped, not passed.
    fn totals(&self) -> (u64, u64) {
        let runtime = self.skips.len() as u64;
        (self.passed.saturating_sub(runtime), self.ignored + runtime)
    }

    /// Reads the skip log: one line per skip; a test that skipped twice counts once.
    fn add_skip_log(&mut self, text: &str) {
        let mut tests: Vec<&str> = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let test = line.split('\t').next().unwrap_or(line);
            if !tests.contains(&test) {
                tests.push(test);
                self.skips.push(line.replace('\t', ": "));
            }
        }
    }

    /// Adds one `test result: ok. 45 passed; 0 failed; 0 ignored; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        self.suites += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test` as step `step`, passing its output through while adding up its result
/// lines.
fn run_counting(step: &str, cmd: &mut Command, counts: &mut Counts) -> Result<()> {
    eprintln!("[{step}] $ {}", util::describe(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("[{step}] cannot start cargo test"))?;
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            counts.add_line(&line);
            let _ = writeln!(stdout, "{line}");
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("[{step}] waiting for cargo test"))?;
    if !status.success() {
        anyhow::bail!("[{step}] command failed ({status})");
    }
    Ok(())
}

fn run_steps(extra_args: &[OsString], passed: &mut Steps, counts: &mut Counts) -> Result<()> {
    build_and_lint(passed)?;

    crate::deploy::check().context("[test] step deploy")?;
    passed.done("deploy");

    crate::dashboards::check().context("[test] step dashboards")?;
    passed.done("dashboards");

    // The Debian kernels' BTF (target/vm/<release>/vmlinux.btf, cached) must exist before the
    // offset tests (tests/btf_debian.rs) run: download and extract them now, boot them later.
    // `OOMWATCH_REQUIRE_REAL_KERNEL=1` (set by .ci/run) or a runner's `CI`: nothing may skip.
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var(REQUIRE_ENV).as_deref() == Ok("1");
    if util::is_root() || ci {
        crate::vm::vm_test("all", 0, false, true).context("[test] step vm-prepare")?;
        passed.done("vm-prepare");
    } else {
        eprintln!(
            "[{STEP}] note: not root, Debian kernel BTF not fetched (run `cargo xtask vm-test \
             --prepare-only` as root); the tests on it will be skipped"
        );
    }

    // The agent's OCI image, which tests/containerd_agent.rs runs under the DaemonSet's
    // security context through containerd's CRI.
    crate::image::image(None).context("[test] step image")?;
    passed.done("image");

    cargo_test(extra_args, ci, counts)?;
    passed.done("cargo-test");

    // The bench's short version: a few kills, correctness only (records = kernel kills, none
    // dropped), never timings, so the bench does not rot.
    crate::bench::bench(true).context("[test] step bench-smoke")?;
    passed.done("bench-smoke");

    // The fuzz targets (their own package, left out of the cargo-test step): optimised, each
    // bounded in time; their results count with the others.
    run_counting("fuzz", &mut crate::fuzz::command(FUZZ_SECS), counts)
        .context("[test] step fuzz (a fuzz target failed: its minimal input and seed are above)")?;
    passed.done("fuzz");

    // The agent on other real kernels (Debian 6.1 and 6.12 under qemu): cgroup v2, group
    // kills, fentry and kprobe. Needs root for apt on first use; CI always runs it.
    if util::is_root() || ci {
        crate::vm::vm_test("all", 0, false, false).context("[test] step vm-test")?;
        passed.done("vm-test");
    } else {
        eprintln!("[{STEP}] note: not root, vm-test skipped (run `cargo xtask vm-test` as root)");
    }
    Ok(())
}

/// Steps setup, build-ebpf, clippy-ebpf, fmt (both workspaces) and clippy.
fn build_and_lint(passed: &mut Steps) -> Result<()> {
    let root = util::repo_root();
    let cargo = util::host_cargo();

    setup::setup(true).context("[test] step setup --test")?;
    passed.done("setup");

    ebpf::build_ebpf().context("[test] step build-ebpf")?;
    passed.done("build-ebpf");

    ebpf::clippy_ebpf().context("[test] step clippy-ebpf")?;
    passed.done("clippy-ebpf");

    let mut fmt = Command::new(&cargo);
    fmt.args(["fmt", "--all", "--", "--check"])
        .current_dir(&root);
    run("fmt", &mut fmt).context("[test] step fmt (run `cargo fmt --all` to fix)")?;
    // The eBPF crate is its own workspace: check its formatting too (rustfmt needs no build).
    let mut fmt_ebpf = Command::new(&cargo);
    fmt_ebpf
        .args(["fmt", "--all", "--manifest-path"])
        .arg(ebpf::ebpf_dir().join("Cargo.toml"))
        .args(["--", "--check"])
        .current_dir(&root);
    run("fmt", &mut fmt_ebpf)
        .context("[test] step fmt of oomwatch-ebpf (run `cargo fmt --all` in oomwatch-ebpf/)")?;
    passed.done("fmt");

    let mut clippy = Command::new(&cargo);
    clippy
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(&root);
    run("clippy", &mut clippy).context("[test] step clippy")?;
    passed.done("clippy");
    Ok(())
}

/// Step cargo-test: `cargo test --workspace`, counting its results and the runtime skips.
fn cargo_test(extra_args: &[OsString], ci: bool, counts: &mut Counts) -> Result<()> {
    // Each test that skips at run time appends a line here (a fresh file per run).
    let skip_log =
        std::env::temp_dir().join(format!("oomwatch-test-skips-{}.log", std::process::id()));
    std::fs::write(&skip_log, "")
        .with_context(|| format!("[test] creating {}", skip_log.display()))?;
    let mut tests = Command::new(util::host_cargo());
    tests
        .args(["test", "--workspace", "--exclude", crate::fuzz::PACKAGE])
        .args(extra_args)
        .env_remove("RUST_TEST_THREADS")
        .env(SKIP_LOG_ENV, &skip_log)
        .current_dir(util::repo_root());
    if ci {
        // In CI the real-kernel tests must run: they fail instead of skipping.
        tests.env(REQUIRE_ENV, "1");
    } else if !util::is_root() {
        eprintln!("[{STEP}] note: not root, real-kernel tests will be skipped");
    }
    // Every agent the tests start runs under its seccomp filter, which makes the kernel log
    // each call it refuses: the whole suite must cause none.
    let mut kmsg = KernelLog::at_end();
    let result = run_counting("cargo-test", &mut tests, counts);
    counts.add_skip_log(&std::fs::read_to_string(&skip_log).unwrap_or_default());
    let _ = std::fs::remove_file(&skip_log);
    result.context("[test] step cargo test")?;
    let refused = seccomp_refusals(&kmsg.messages());
    if !refused.is_empty() {
        anyhow::bail!(
            "[test] the agent's seccomp filter refused system calls during the tests \
             (add them to oomwatch/src/sys/seccomp.rs if the agent needs them):\n{}",
            refused.join("\n")
        );
    }
    if kmsg.0.is_some() {
        eprintln!("[{STEP}] seccomp: no system call of the agent refused during the tests");
    }
    Ok(())
}

/// `O_NONBLOCK` (the same on x86-64 and arm64).
const O_NONBLOCK: i32 = 0o4000;

/// The kernel log from when it was opened (`None` when it cannot be read: not root).
struct KernelLog(Option<std::fs::File>);

impl KernelLog {
    fn at_end() -> Self {
        use std::io::Seek;
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()
            .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)).ok().map(|_| f));
        KernelLog(f)
    }

    /// Every message logged since, without waiting.
    fn messages(&mut self) -> Vec<String> {
        use std::io::Read;
        let Some(f) = self.0.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    out.push(
                        rec.split_once(';')
                            .map_or("", |x| x.1)
                            .trim_end()
                            .to_owned(),
                    );
                }
                // EPIPE: records were overwritten; reading goes on from the oldest.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => continue,
                Err(_) => return out,
            }
        }
    }
}

/// The kernel's seccomp lines (`audit: type=1326`) for an `oomwatch` executable.
fn seccomp_refusals(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.contains("type=1326") && m.contains("/oomwatch\""))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::seccomp_refusals;

    #[test]
    fn only_the_agents_seccomp_lines_count() {
        let m = [
            r#"audit: type=1326 audit(1.2:3): pid=9 comm="oomwatch" exe="/work/target/debug/oomwatch" sig=0 arch=c000003e syscall=59 compat=0 ip=0x1 code=0x50000"#,
            r#"audit: type=1326 audit(1.2:4): pid=8 comm="python3" exe="/usr/bin/python3.11" sig=0 syscall=110"#,
            "Memory cgroup out of memory: Killed process 1 (tail)",
        ]
        .map(String::from);
        assert_eq!(seccomp_refusals(&m).len(), 1);
    }

    use super::*;

    #[test]
    fn result_lines_are_summed() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 45 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.23s");
        c.add_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 4 tests");
        assert_eq!(
            c,
            Counts {
                suites: 2,
                passed: 48,
                failed: 1,
                ignored: 2,
                skips: Vec::new(),
            }
        );
    }

    #[test]
    fn runtime_skips_move_from_passed_to_skipped_once_per_test() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 10 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out");
        c.add_skip_log("a\tno BTF\nb\tnot root\na\tno tracefs\n\n");
        assert_eq!(c.skips, ["a: no BTF", "b: not root"]);
        assert_eq!(c.totals(), (8, 3));
    }
}
