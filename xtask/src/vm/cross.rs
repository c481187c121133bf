//! The guest's binaries for one architecture: the release agent, `examples/alloc_threads` (the
//! multi-threaded victim, compiled by `rustc` against the agent build's `libc` into
//! `target/vm/bin/<arch>/`) and busybox.
//!
//! For the host's architecture they are the ordinary release build and the host's busybox. For
//! another one (arm64 on an x86-64 host) the agent is `crate::cross`'s (cross-built around an
//! eBPF object for that architecture, in the `vm-guest` profile: release at opt-level 1), the
//! example is compiled by the same Debian rustc and
//! linked by the same cross linker, and busybox is Debian's `busybox-static` of that
//! architecture (unpacked under `target/vm/busybox-arm64/`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result};

use super::{arch::Arch, debs, STEP};
use crate::{
    cross::{self, libc_of, require_elf},
    util::{self, run},
};

/// The host's busybox: the x86-64 guest's, and the applet list of every guest's.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// What one architecture's guests run.
pub struct GuestBinaries {
    pub arch: Arch,
    pub agent: PathBuf,
    pub alloc_threads: PathBuf,
    /// The eBPF object the agent was built to embed.
    pub ebpf_object: PathBuf,
    pub busybox: PathBuf,
    /// Where the binaries' shared libraries come from ([`Arch::sysroot`]).
    pub sysroot: Option<PathBuf>,
}

/// The binaries of `arch`'s guests, built (or cross-built) and checked to be ELF files for it.
pub fn build(arch: Arch, vm_dir: &Path) -> Result<GuestBinaries> {
    let t = Instant::now();
    let guest = if arch.is_host() {
        host_build(arch, vm_dir)?
    } else {
        cross_build(arch, vm_dir)?
    };
    for binary in [&guest.agent, &guest.alloc_threads, &guest.busybox] {
        require_elf(binary, arch)?;
    }
    eprintln!(
        "[{STEP}] {arch} guest binaries: agent {} ({} KiB), {}, {} ({:.1}s)",
        guest.agent.display(),
        fs::metadata(&guest.agent)?.len() >> 10,
        guest.alloc_threads.display(),
        guest.busybox.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(guest)
}

/// The release agent (`cargo xtask build`), then the example against its libc.
fn host_build(arch: Arch, vm_dir: &Path) -> Result<GuestBinaries> {
    let agent = crate::build(false).context("[vm] step build")?;
    // The same build again (fresh: nothing is compiled), for the path of its libc.
    let cargo = util::host_cargo();
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "-p", "oomwatch", "--bin", "oomwatch"])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(util::repo_root());
    let libc = libc_of(&mut cmd)?;
    // The rustc of that cargo's toolchain (rustup puts them side by side).
    let rustc = cargo.with_file_name("rustc");
    let rustc = if rustc.is_file() {
        rustc
    } else {
        "rustc".into()
    };
    let alloc_threads = vm_dir.join("bin").join(arch.deb()).join("alloc_threads");
    rustc_alloc_threads(Command::new(rustc), &libc, &alloc_threads)?;
    Ok(GuestBinaries {
        arch,
        agent,
        alloc_threads,
        ebpf_object: crate::ebpf::object_path(),
        busybox: PathBuf::from(HOST_BUSYBOX),
        sysroot: arch.sysroot(),
    })
}

/// The agent cross-built for `arch` (`crate::cross`), then the example against its libc, with
/// the same compiler and linker.
fn cross_build(arch: Arch, vm_dir: &Path) -> Result<GuestBinaries> {
    let agent = cross::build_agent(arch, cross::Profile::VmGuest).context("[vm] step build")?;
    let alloc_threads = vm_dir.join("bin").join(arch.deb()).join("alloc_threads");
    let mut rustc = Command::new(cross::DEBIAN_RUSTC);
    rustc
        .args(["--target", arch.rust_target(), "-C"])
        .arg(format!("linker={}", cross::linker(arch)));
    rustc_alloc_threads(rustc, &agent.libc, &alloc_threads)?;
    Ok(GuestBinaries {
        arch,
        agent: agent.binary,
        alloc_threads,
        ebpf_object: agent.ebpf_object,
        busybox: fetch_busybox(arch, vm_dir)?,
        sysroot: arch.sysroot(),
    })
}

/// `examples/alloc_threads`, whose only dependency is libc, built by `rustc` (the agent's
/// compiler, with its target and linker) against the agent build's `libc` rlib, optimised as
/// the release profile: cargo would build the package's dev-dependencies for an example (the
/// gRPC stack of the agent's container tests, and the agent's library again with its test
/// knobs: minutes). Built with frame pointers, so its user stack unwinds through its own
/// functions.
fn rustc_alloc_threads(mut rustc: Command, libc: &Path, out: &Path) -> Result<()> {
    let source = util::repo_root().join("oomwatch/examples/alloc_threads.rs");
    let deps = libc
        .parent()
        .context("[vm] libc rlib without a directory")?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir)?;
    }
    rustc
        .args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "alloc_threads", "-C", "opt-level=3"])
        // Frame pointers: the kernel unwinds the trigger's user stack by them, and the
        // `trigger stacks` check looks for `leaky_cache_insert <- serve_request` in it.
        .args(["-C", "force-frame-pointers=yes"])
        .arg("--extern")
        .arg(format!("libc={}", libc.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg("-o")
        .arg(out)
        .arg(source);
    run(STEP, &mut rustc).context("[vm] rustc examples/alloc_threads.rs")
}

/// Debian's `busybox-static` of `arch`: its `bin/busybox`, unpacked under
/// `target/vm/busybox-<arch>/` (cached).
fn fetch_busybox(arch: Arch, vm_dir: &Path) -> Result<PathBuf> {
    const PACKAGE: &str = "busybox-static";
    let dir = vm_dir.join(format!("busybox-{}", arch.deb()));
    let busybox = dir.join("bin/busybox");
    if busybox.is_file() {
        eprintln!("[{STEP}] {}: cached", busybox.display());
        return Ok(busybox);
    }
    let version = debs::candidate(PACKAGE, arch)?;
    let deb = debs::download(vm_dir, PACKAGE, &version, arch)?;
    debs::unpack(&deb, &dir)?;
    Ok(busybox)
}
