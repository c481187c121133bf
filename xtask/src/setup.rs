//! `cargo xtask setup [--test]`: install only what is missing.
//!
//! * Debian packages for the eBPF toolchain: `rustc-web cargo-web rust-web-src llvm-22-dev`
//!   (with `--test` also `prometheus` for promtool and the TLS scrape test, `bpftool` as test
//!   ground truth, `rust-web-clippy` for `clippy-ebpf`, `curl` and `openssl` for the web
//!   configuration tests, and `docker.io`, `podman`, `containerd`, `runc`, `crun`,
//!   `busybox-static` for the real-runtime tests, `protobuf-compiler` for the CRI bindings
//!   those tests use);
//! * with `--test`, the apt sources of `vm-test`'s 5.10 (`bullseye`) and newest (`sid`) kernels,
//!   pinned at priority 1 so that nothing else is installed from them (`vm/sources.rs`);
//! * `bpf-linker` 0.13.0 built against LLVM 22 with Debian's cargo/rustc (no rustup needed).

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::util::{self, run};

const STEP: &str = "setup";

/// Packages the eBPF build needs.
const BUILD_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev"];
/// Extra packages for `cargo xtask test`.
const TEST_PACKAGES: &[&str] = &[
    "prometheus",
    "bpftool",
    "rust-web-clippy",
    "chromium-headless-shell",
    // Real container runtimes for the Docker/podman tests (started by the tests themselves,
    // never as services; images are built from busybox-static, no registry).
    "docker.io",
    "podman",
    "containerd",
    "runc",
    "crun",
    "busybox-static",
    // tests/web_config.rs: a real TLS client and the test certificates.
    "curl",
    "openssl",
    // protoc: the `k8s-cri` dev-dependency compiles the CRI protobufs (containerd CRI tests).
    "protobuf-compiler",
    // The stack tests build their C allocator with frame pointers and strip a copy, and a Go
    // allocator (Go keeps frame pointers; its linker writes no GNU build id).
    "gcc",
    "binutils",
    "golang-go",
    // A JIT runtime writing a perf map (`node --perf-basic-prof`) for the stack tests.
    "nodejs",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

pub fn setup(with_test_deps: bool) -> Result<()> {
    let started = Instant::now();
    if with_test_deps {
        // vm-test's kernels from Debian 11 and sid: apt sources pinned at priority 1.
        crate::vm::sources::ensure()?;
    }
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if with_test_deps {
        packages.extend_from_slice(TEST_PACKAGES);
    }

    let mut missing = Vec::new();
    for pkg in &packages {
        if dpkg_installed(pkg)? {
            eprintln!("[{STEP}] {pkg}: installed");
        } else {
            eprintln!("[{STEP}] {pkg}: missing");
            missing.push(*pkg);
        }
    }
    let linker = find_bpf_linker();
    match &linker {
        Some(path) => eprintln!(
            "[{STEP}] bpf-linker {BPF_LINKER_VERSION}: installed ({})",
            path.display()
        ),
        None => eprintln!("[{STEP}] bpf-linker {BPF_LINKER_VERSION}: missing"),
    }

    if missing.is_empty() && linker.is_some() {
        eprintln!(
            "[{STEP}] nothing to install ({} ms)",
            started.elapsed().as_millis()
        );
        return Ok(());
    }

    if !missing.is_empty() {
        let list = missing.join(" ");
        if !util::is_root() {
            bail!(
                "[{STEP}] missing Debian packages: {list}; as root run: \
                 apt-get update && apt-get install -y {list}  (or: sudo cargo xtask setup{})",
                if with_test_deps { " --test" } else { "" }
            );
        }
        eprintln!("[{STEP}] installing {list}...");
        util::apt_install(STEP, &missing)?;
        for pkg in &missing {
            if !dpkg_installed(pkg)? {
                bail!("[{STEP}] {pkg} is still not installed after apt-get install");
            }
            eprintln!("[{STEP}] {pkg}: installed");
        }
    }

    if linker.is_none() {
        eprintln!("[{STEP}] installing bpf-linker {BPF_LINKER_VERSION} (takes 2-3 minutes)...");
        install_bpf_linker()?;
        match find_bpf_linker() {
            Some(path) => eprintln!(
                "[{STEP}] bpf-linker {BPF_LINKER_VERSION}: installed ({})",
                path.display()
            ),
            None => bail!(
                "[{STEP}] bpf-linker {BPF_LINKER_VERSION} was installed but is not found on PATH \
                 or in {}",
                util::cargo_bin_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.cargo/bin".into())
            ),
        }
    }

    eprintln!("[{STEP}] done ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// `dpkg-query -W -f='${Status}' PKG` says "install ok installed".
fn dpkg_installed(pkg: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .with_context(|| {
            format!("[{STEP}] cannot run dpkg-query (this setup supports Debian/Ubuntu only)")
        })?;
    // Exit status 1 means "no such package known": not installed.
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

/// A `bpf-linker` that reports version 0.13.0: first on PATH, then in `~/.cargo/bin`.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("bpf-linker"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(bin) = util::cargo_bin_dir() {
        candidates.push(bin.join("bpf-linker"));
    }
    candidates.into_iter().filter(|c| c.is_file()).find(|c| {
        util::probe(c, &["--version"]).is_some_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|w| w == BPF_LINKER_VERSION)
        })
    })
}

/// `cargo install bpf-linker@0.13.0` with Debian's cargo and rustc against LLVM 22.
fn install_bpf_linker() -> Result<()> {
    for tool in [DEBIAN_CARGO, DEBIAN_RUSTC] {
        if !std::path::Path::new(tool).exists() {
            bail!("[{STEP}] {tool} not found: install cargo-web and rustc-web first");
        }
    }
    let mut cmd = Command::new(DEBIAN_CARGO);
    util::scrub_cargo_env(&mut cmd);
    cmd.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ])
    .env("LLVM_PREFIX", LLVM_PREFIX)
    .env("RUSTC", DEBIAN_RUSTC);
    if let Some(home) = util::cargo_home() {
        // Install into ~/.cargo/bin, where build-ebpf looks for it.
        cmd.arg("--root").arg(home);
    }
    run(STEP, &mut cmd).context("[setup] installing bpf-linker")
}
