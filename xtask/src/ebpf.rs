//! `cargo xtask build-ebpf` / `clippy-ebpf`: build (or lint) `oomwatch-ebpf/` for
//! `bpfel-unknown-none` with `-Z build-std=core`.
//!
//! `build-std` needs a rustc paired with its own library source. Two toolchains qualify:
//! * `debian`: Debian's `rustc-web`/`cargo-web` (`/usr/bin/rustc`, `/usr/bin/cargo`) with the
//!   library source from `rust-web-src` and `RUSTC_BOOTSTRAP=1`;
//! * `nightly`: a rustup `nightly` that has the `rust-src` component.
//!
//! `OOMWATCH_EBPF_TOOLCHAIN=debian|nightly` forces one; otherwise Debian's is preferred.

use std::{
    env, fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::{self, run};

pub const TARGET: &str = "bpfel-unknown-none";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Debian's clippy for rustc-web (package `rust-web-clippy`).
const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const DEBIAN_CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";
const TOOLCHAIN_ENV: &str = "OOMWATCH_EBPF_TOOLCHAIN";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Toolchain {
    Debian,
    Nightly,
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Toolchain::Debian => "debian",
            Toolchain::Nightly => "nightly",
        })
    }
}

pub fn ebpf_dir() -> PathBuf {
    util::repo_root().join("oomwatch-ebpf")
}

/// Where the built eBPF object lands (what `oomwatch/build.rs` embeds by default).
pub fn object_path() -> PathBuf {
    ebpf_dir()
        .join("target")
        .join(TARGET)
        .join("release")
        .join("oomwatch")
}

/// Where the object for the kernels of `arch` (`x86_64`, `aarch64`) lands: the default one for
/// the host's architecture, `oomwatch-ebpf/target/<arch>/` for another one
/// ([`build_ebpf_for_arch`]).
pub fn object_path_for(arch: &str) -> PathBuf {
    if arch == env::consts::ARCH {
        return object_path();
    }
    ebpf_dir()
        .join("target")
        .join(arch)
        .join(TARGET)
        .join("release")
        .join("oomwatch")
}

fn debian_available() -> bool {
    Path::new(DEBIAN_RUSTC).is_file()
        && Path::new(DEBIAN_CARGO).is_file()
        && Path::new(DEBIAN_CORE_SRC).is_dir()
}

fn nightly_with_rust_src() -> bool {
    util::probe(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .is_some_and(|out| {
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
    })
}

/// Pick the toolchain and print which one and why.
pub fn select_toolchain(step: &str) -> Result<Toolchain> {
    let forced = env::var(TOOLCHAIN_ENV).ok().filter(|v| !v.is_empty());
    let (toolchain, why) = match forced.as_deref() {
        Some("debian") => {
            if !debian_available() {
                bail!(
                    "[{step}] {TOOLCHAIN_ENV}=debian but {DEBIAN_RUSTC}, {DEBIAN_CARGO} or \
                     {DEBIAN_CORE_SRC} is missing; run `cargo xtask setup`"
                );
            }
            (
                Toolchain::Debian,
                format!("forced by {TOOLCHAIN_ENV}=debian"),
            )
        }
        Some("nightly") => {
            if !nightly_with_rust_src() {
                bail!(
                    "[{step}] {TOOLCHAIN_ENV}=nightly but rustup's nightly has no rust-src; \
                     run `rustup component add rust-src --toolchain nightly`"
                );
            }
            (
                Toolchain::Nightly,
                format!("forced by {TOOLCHAIN_ENV}=nightly"),
            )
        }
        Some(other) => {
            bail!("[{step}] {TOOLCHAIN_ENV}={other:?} is not valid: use `debian` or `nightly`")
        }
        None if debian_available() => (
            Toolchain::Debian,
            format!("{DEBIAN_RUSTC} with library source at {DEBIAN_CORE_SRC}"),
        ),
        None if nightly_with_rust_src() => (
            Toolchain::Nightly,
            "rustup nightly with rust-src (no Debian rustc-web found)".to_string(),
        ),
        None => bail!(
            "[{step}] no eBPF toolchain (Debian rustc-web + rust-web-src, or rustup nightly with \
             rust-src); run `cargo xtask setup`"
        ),
    };
    let version = match toolchain {
        Toolchain::Debian => util::probe(DEBIAN_RUSTC, &["--version"]),
        Toolchain::Nightly => util::probe("rustup", &["run", "nightly", "rustc", "--version"]),
    }
    .filter(|o| o.status.success())
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .unwrap_or_else(|| "unknown version".into());
    eprintln!("[{step}] eBPF toolchain: {toolchain} ({version}; {why})");
    Ok(toolchain)
}

/// A cargo command for the eBPF crate: clean environment, `~/.cargo/bin` on PATH (bpf-linker).
/// `subcommand` is `build` or `clippy`; `-Z build-std=core` and the target are appended.
fn ebpf_cargo(toolchain: Toolchain, subcommand: &str) -> Result<Command> {
    let mut cmd = match (toolchain, subcommand) {
        (Toolchain::Debian, "clippy") => {
            if !Path::new(DEBIAN_CARGO_CLIPPY).is_file() {
                bail!(
                    "[clippy-ebpf] {DEBIAN_CARGO_CLIPPY} not found; as root run: \
                     apt-get install -y rust-web-clippy"
                );
            }
            // cargo-clippy runs `$CARGO` with clippy-driver from its own directory.
            let mut c = Command::new(DEBIAN_CARGO_CLIPPY);
            util::scrub_cargo_env(&mut c);
            c.env("CARGO", DEBIAN_CARGO).arg("clippy");
            c
        }
        (Toolchain::Debian, sub) => {
            let mut c = Command::new(DEBIAN_CARGO);
            util::scrub_cargo_env(&mut c);
            c.arg(sub);
            c
        }
        (Toolchain::Nightly, sub) => {
            let mut c = Command::new("rustup");
            util::scrub_cargo_env(&mut c);
            c.args(["run", "nightly", "cargo", sub]);
            c
        }
    };
    if toolchain == Toolchain::Debian {
        cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.args(["--target", TARGET, "-Z", "build-std=core"])
        .env("PATH", util::path_with_cargo_bin())
        .current_dir(ebpf_dir());
    Ok(cmd)
}

pub fn build_ebpf() -> Result<()> {
    build_ebpf_in(None).map(|_| ())
}

/// The eBPF object for the kernel of another architecture (`aarch64`), in
/// `oomwatch-ebpf/target/<arch>/`: aya-ebpf fixes at build time which `pt_regs` layout a
/// kprobe's `ProbeContext::arg`/`ret` read (`AYA_BPF_TARGET_ARCH`, else the host's), so the
/// host's object reads the wrong registers on an arm64 kernel.
pub fn build_ebpf_for_arch(arch: &str) -> Result<PathBuf> {
    build_ebpf_in(Some(arch))
}

fn build_ebpf_in(arch: Option<&str>) -> Result<PathBuf> {
    const STEP: &str = "build-ebpf";
    let toolchain = select_toolchain(STEP)?;
    if crate::setup::find_bpf_linker().is_none() {
        bail!("[{STEP}] bpf-linker 0.13.0 not found on PATH or in ~/.cargo/bin; run `cargo xtask setup`");
    }
    let mut cmd = ebpf_cargo(toolchain, "build")?;
    cmd.arg("--release");
    let object = match arch {
        Some(arch) => {
            cmd.env("AYA_BPF_TARGET_ARCH", arch)
                .env("CARGO_TARGET_DIR", ebpf_dir().join("target").join(arch));
            object_path_for(arch)
        }
        None => object_path(),
    };
    run(STEP, &mut cmd)
        .with_context(|| format!("[{STEP}] building oomwatch-ebpf with {toolchain}"))?;
    if !object.is_file() {
        bail!(
            "[{STEP}] build succeeded but {} is missing",
            object.display()
        );
    }
    eprintln!("[{STEP}] eBPF object: {}", object.display());
    Ok(object)
}

pub fn clippy_ebpf() -> Result<()> {
    const STEP: &str = "clippy-ebpf";
    let toolchain = select_toolchain(STEP)?;
    let mut cmd = ebpf_cargo(toolchain, "clippy")?;
    cmd.args(["--", "-D", "warnings"]);
    run(STEP, &mut cmd).with_context(|| format!("[{STEP}] linting oomwatch-ebpf with {toolchain}"))
}
