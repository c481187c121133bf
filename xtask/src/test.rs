//! `cargo xtask test [-- ARGS]`: set-up (with test tools), eBPF build and clippy, fmt, clippy,
//! tests.

use std::{ffi::OsString, process::Command, time::Instant};

use anyhow::{Context, Result};

use crate::{
    ebpf, setup,
    util::{self, run},
};

const STEP: &str = "test";

pub fn test(extra_args: &[OsString]) -> Result<()> {
    let started = Instant::now();
    let mut passed: Vec<&str> = Vec::new();
    let result = run_steps(extra_args, &mut passed);
    let elapsed = started.elapsed().as_secs_f64();
    let done = if passed.is_empty() {
        "none".to_string()
    } else {
        passed.join(", ")
    };
    match &result {
        Ok(()) => eprintln!("[{STEP}] SUMMARY: all steps passed ({done}) in {elapsed:.1}s"),
        Err(e) => {
            eprintln!("[{STEP}] SUMMARY: FAILED after {elapsed:.1}s; passed: {done}; failure: {e}")
        }
    }
    result
}

fn run_steps(extra_args: &[OsString], passed: &mut Vec<&'static str>) -> Result<()> {
    let root = util::repo_root();
    let cargo = util::host_cargo();

    setup::setup(true).context("[test] step setup --test")?;
    passed.push("setup");

    ebpf::build_ebpf().context("[test] step build-ebpf")?;
    passed.push("build-ebpf");

    ebpf::clippy_ebpf().context("[test] step clippy-ebpf")?;
    passed.push("clippy-ebpf");

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
    passed.push("fmt");

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
    passed.push("clippy");

    let mut tests = Command::new(&cargo);
    tests
        .args(["test", "--workspace"])
        .args(extra_args)
        .env_remove("RUST_TEST_THREADS")
        .current_dir(&root);
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        // In CI the real-kernel integration tests must run: they fail instead of skipping.
        tests.env("OOMWATCH_REQUIRE_REAL_KERNEL", "1");
    } else if !util::is_root() {
        eprintln!("[{STEP}] note: not root, real-kernel integration tests will be skipped");
    }
    run("cargo-test", &mut tests).context("[test] step cargo test")?;
    passed.push("cargo-test");
    Ok(())
}
