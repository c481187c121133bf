//! Developer tasks for oomwatch: `cargo xtask <setup|build-ebpf|clippy-ebpf|build|image|run|test>`.

mod bench;
mod cross;
mod dashboards;
mod deploy;
mod ebpf;
mod fuzz;
mod image;
mod setup;
mod test;
mod util;
mod vm;

use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::{cross::Arch, util::run};

#[derive(Parser)]
#[command(name = "xtask", about = "oomwatch developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian rustc-web/cargo-web/rust-web-src/llvm-22-dev, bpf-linker.
    Setup {
        /// Also install the test tools (Debian prometheus for promtool, bpftool, rust-web-clippy).
        #[arg(long)]
        test: bool,
    },
    /// Build oomwatch-ebpf for bpfel-unknown-none (toolchain: OOMWATCH_EBPF_TOOLCHAIN=debian|nightly).
    BuildEbpf,
    /// Run clippy on oomwatch-ebpf with the eBPF toolchain (-D warnings).
    ClippyEbpf,
    /// setup + build-ebpf + cargo build -p oomwatch (release unless --debug).
    Build {
        /// Build the user-space binary in the dev profile (target/debug).
        #[arg(long)]
        debug: bool,
        /// Build the release agent for this target instead of the host's:
        /// aarch64-unknown-linux-gnu (or arm64) is cross-built into target/cross/, around an
        /// eBPF object built for arm64.
        #[arg(long, value_name = "TARGET", value_parser = Arch::parse)]
        target: Option<Arch>,
    },
    /// Build the release agent and its OCI image without network (the binary and the libraries
    /// it links): target/image/oomwatch-oci.tar, for `ctr -n k8s.io images import`.
    Image {
        /// The image's architecture, if not the host's: aarch64-unknown-linux-gnu (or arm64)
        /// writes target/image/oomwatch-oci-arm64.tar.
        #[arg(long, value_name = "TARGET", value_parser = Arch::parse)]
        target: Option<Arch>,
    },
    /// Build, then run `oomwatch run ARGS...` (needs root).
    Run {
        /// Run the dev-profile binary.
        #[arg(long)]
        debug: bool,
        /// Arguments passed to `oomwatch run`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// setup --test, build-ebpf, clippy-ebpf, fmt, clippy, deploy, cargo test --workspace
    /// [-- ARGS], fuzz (3 s per target), vm-test.
    Test {
        /// Arguments passed to `cargo test --workspace`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Benchmark the release agent: OOM storm, idle, /metrics under load, next to Debian's
    /// prometheus-node-exporter; writes target/bench/bench-<time>.json and docs/benchmarks.md.
    Bench {
        /// Short correctness-only version (a few kills, no timing targets), as `test` runs it.
        #[arg(long)]
        smoke: bool,
    },
    /// Property tests of every parser of outside input (oomwatch/tests/fuzz.rs), optimised,
    /// each target for up to SECS seconds with a random seed.
    Fuzz {
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Check deploy/: render and validate the Kubernetes manifests, test the alerting rules,
    /// check the Containerfile.
    Deploy,
    /// Type-check the Grafana dashboards against @grafana/schema and lint their queries.
    Dashboards,
    /// Boot Debian's cloud kernels in QEMU (TCG), x86-64 and arm64, with the agent in an
    /// initramfs, cause OOM kills on cgroup v2 (single, memory.oom.group, multi-threaded, global,
    /// earlyoom) and check the events.
    VmTest {
        /// Which kernel series to boot.
        #[arg(long, default_value = "all", value_parser = vm::kernel_labels())]
        kernel: String,
        /// Guests booted at once (each keeps one CPU busy); 0: one per CPU.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// Keep the initramfs staging tree and the kernel packages' modules under target/vm/.
        #[arg(long)]
        keep: bool,
        /// Only download and extract the kernels and dump their BTF to
        /// target/vm/<release>/vmlinux.btf (for the offset tests): build nothing, boot nothing.
        #[arg(long)]
        prepare_only: bool,
        /// Only rewrite docs/kernels.md from the last console of each kernel under target/vm/
        /// (every run does it at its end): boot nothing.
        #[arg(long)]
        doc_only: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup { test } => setup::setup(test),
        Cmd::BuildEbpf => ebpf::build_ebpf(),
        Cmd::ClippyEbpf => ebpf::clippy_ebpf(),
        Cmd::Build { debug, target } => build_target(debug, target).map(|_| ()),
        Cmd::Image { target } => image::image(target).map(|_| ()),
        Cmd::Run { debug, args } => run_agent(debug, &args),
        Cmd::Test { args } => test::test(&args),
        Cmd::Bench { smoke } => bench::bench(smoke),
        Cmd::Fuzz { secs } => fuzz::fuzz(secs),
        Cmd::Deploy => deploy::check(),
        Cmd::Dashboards => dashboards::check(),
        Cmd::VmTest { doc_only: true, .. } => vm::kernels_doc(),
        Cmd::VmTest {
            kernel,
            jobs,
            keep,
            prepare_only,
            doc_only: false,
        } => vm::vm_test(&kernel, jobs, keep, prepare_only),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The main workspace's target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    let root = util::repo_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// setup, build-ebpf, then `cargo build -p oomwatch`; returns the binary's path.
fn build(debug: bool) -> Result<PathBuf> {
    build_with(debug, &[])
}

/// `cargo xtask build [--debug] [--target TARGET]`: [`build`] for the host's architecture (and
/// a check that the binary is for it), else the release agent cross-built for `target`
/// (`cross::build_agent`); returns the binary's path.
fn build_target(debug: bool, target: Option<Arch>) -> Result<PathBuf> {
    let Some(arch) = target.filter(|a| !a.is_host()) else {
        let binary = build(debug)?;
        if let Some(arch) = target {
            cross::require_elf(&binary, arch)?;
        }
        return Ok(binary);
    };
    if debug {
        bail!(
            "[build] --debug builds for the host only; the cross build for {} is a release build",
            arch.rust_target()
        );
    }
    let agent =
        cross::build_agent(arch, cross::Profile::Release).context("[build] step cross-build")?;
    eprintln!(
        "[build] agent binary for {} (ELF {arch}, embedding {}): {}",
        arch.rust_target(),
        agent.ebpf_object.display(),
        agent.binary.display()
    );
    Ok(agent.binary)
}

/// [`build`] with cargo features of `oomwatch` (e.g. `test-knobs` for the benchmarks).
fn build_with(debug: bool, features: &[&str]) -> Result<PathBuf> {
    setup::setup(false).context("[build] step setup")?;
    ebpf::build_ebpf().context("[build] step build-ebpf")?;
    let mut cmd = Command::new(util::host_cargo());
    cmd.args(["build", "-p", "oomwatch"])
        .current_dir(util::repo_root());
    if !debug {
        cmd.arg("--release");
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    run("build", &mut cmd).context("[build] step cargo build -p oomwatch")?;
    let binary = target_dir()
        .join(if debug { "debug" } else { "release" })
        .join("oomwatch");
    if !binary.is_file() {
        bail!(
            "[build] cargo build succeeded but {} is missing",
            binary.display()
        );
    }
    if features.is_empty() {
        no_test_knobs(&binary)?;
    }
    eprintln!("[build] agent binary: {}", binary.display());
    Ok(binary)
}

/// Build, then replace this process with `oomwatch run ARGS...`.
fn run_agent(debug: bool, args: &[OsString]) -> Result<()> {
    let binary = build(debug)?;
    if !util::is_root() {
        bail!(
            "[run] oomwatch loads eBPF programs and needs root: run it as root via sudo, e.g. \
             `sudo {} run`",
            binary.display()
        );
    }
    let mut cmd = Command::new(&binary);
    cmd.arg("run").args(args);
    eprintln!("[run] $ {}", util::describe(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("[run] failed to exec {}", binary.display()))
}

/// The product build has no test knobs (`oomwatch/Cargo.toml`, feature `test-knobs`): the agent
/// refuses `--force-pid-only` as an unknown flag.
fn no_test_knobs(binary: &std::path::Path) -> Result<()> {
    let out = Command::new(binary)
        .args(["run", "--force-pid-only"])
        .output()
        .with_context(|| format!("[build] running {}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !stderr.contains("unexpected argument '--force-pid-only'") {
        bail!(
            "[build] the product binary accepts the test knob --force-pid-only (status {:?}): {stderr}",
            out.status.code()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn build_and_image_take_a_target() {
        Cli::command().debug_assert();
        assert!(matches!(
            parse(&["build", "--target", "aarch64-unknown-linux-gnu"]),
            Ok(Cmd::Build {
                debug: false,
                target: Some(Arch::Arm64)
            })
        ));
        assert!(matches!(
            parse(&["build", "--debug"]),
            Ok(Cmd::Build {
                debug: true,
                target: None
            })
        ));
        assert!(matches!(
            parse(&["image", "--target", "arm64"]),
            Ok(Cmd::Image {
                target: Some(Arch::Arm64)
            })
        ));
        assert!(matches!(
            parse(&["image", "--target", "x86_64-unknown-linux-gnu"]),
            Ok(Cmd::Image {
                target: Some(Arch::X86_64)
            })
        ));
        assert!(matches!(parse(&["image"]), Ok(Cmd::Image { target: None })));
        let err = parse(&["image", "--target", "riscv64gc-unknown-linux-gnu"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown target"), "{err}");
    }
}
