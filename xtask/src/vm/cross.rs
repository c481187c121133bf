//! The guest's binaries for one architecture: the release agent, `examples/alloc_threads` (the
//! multi-threaded victim, compiled by `rustc` against the agent build's `libc` into
//! `target/vm/bin/<arch>/`) and busybox.
//!
//! For the host's architecture they are the ordinary release build and the host's busybox. For
//! another one (arm64 on an x86-64 host) the agent and the example are cross-built with
//! Debian's cargo and rustc (whose standard library for the target is
//! `libstd-rust-web-dev:arm64`) and linked by `aarch64-linux-gnu-gcc` (with
//! `libc6-dev-arm64-cross`) into `target/cross/`, the agent around an eBPF object built for
//! that architecture (`ebpf::build_ebpf_for_arch`: aya-ebpf
//! fixes at build time which `pt_regs` layout a kprobe reads, so the host's object would read
//! the wrong registers), embedded with `OOMWATCH_EBPF_OBJECT`; busybox is Debian's
//! `busybox-static` of that architecture (unpacked under `target/vm/busybox-arm64/`).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{arch::Arch, debs, STEP};
use crate::util::{self, run};

const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
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
    /// Where the binaries' shared libraries come from: the host's (`ldd`), or for another
    /// architecture the cross toolchain's C library (`/usr/aarch64-linux-gnu/lib`).
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
        sysroot: None,
    })
}

/// The eBPF object for `arch`, then the agent embedding it, for `arch`'s Rust target with
/// Debian's cargo and rustc, into `target/cross/`; then the example against the agent's libc.
fn cross_build(arch: Arch, vm_dir: &Path) -> Result<GuestBinaries> {
    crate::setup::setup(false).context("[vm] step setup")?;
    let object = crate::ebpf::build_ebpf_for_arch(arch.uname()).context("[vm] step build-ebpf")?;
    let target = arch.rust_target();
    let target_dir = crate::target_dir().join("cross");
    let mut cmd = Command::new(DEBIAN_CARGO);
    util::scrub_cargo_env(&mut cmd);
    cmd.args(["build", "--release", "-p", "oomwatch", "--bin", "oomwatch"])
        .args(["--target", target])
        .args(["--message-format", "json-render-diagnostics"])
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(linker_variable(target), linker(arch))
        .env("OOMWATCH_EBPF_OBJECT", &object)
        .current_dir(util::repo_root());
    let t = Instant::now();
    let libc = libc_of(&mut cmd)?;
    let alloc_threads = vm_dir.join("bin").join(arch.deb()).join("alloc_threads");
    let mut rustc = Command::new(DEBIAN_RUSTC);
    rustc
        .args(["--target", target, "-C"])
        .arg(format!("linker={}", linker(arch)));
    rustc_alloc_threads(rustc, &libc, &alloc_threads)?;
    eprintln!(
        "[{STEP}] cross-build for {target}: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(GuestBinaries {
        arch,
        agent: target_dir.join(target).join("release/oomwatch"),
        alloc_threads,
        ebpf_object: object,
        busybox: fetch_busybox(arch, vm_dir)?,
        sysroot: Some(PathBuf::from(format!("/usr/{}/lib", arch.gnu_triple()))),
    })
}

/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER`.
fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    )
}

/// The cross C compiler that links for `arch` (`aarch64-linux-gnu-gcc`).
fn linker(arch: Arch) -> String {
    format!("{}-gcc", arch.gnu_triple())
}

/// Runs a `cargo build --message-format json-render-diagnostics` of the agent (its
/// diagnostics and progress on stderr) and returns the `libc` rlib among the artifacts it
/// reports.
fn libc_of(cmd: &mut Command) -> Result<PathBuf> {
    eprintln!("[{STEP}] $ {}", util::describe(cmd));
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("[vm] cannot start cargo")?;
    if !out.status.success() {
        bail!("[{STEP}] cargo build failed ({})", out.status);
    }
    artifacts(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .find(|a| a.ends_with(".rlib") && a.contains("/liblibc-"))
        .map(PathBuf::from)
        .context("[vm] the agent's build reported no libc rlib")
}

/// The `filenames` of cargo's `compiler-artifact` messages.
fn artifacts(messages: &str) -> Vec<String> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter_map(|m| m.get("filenames").and_then(Value::as_array).cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
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

/// The file is a little-endian ELF for `arch` (`e_machine` at offset 18).
fn require_elf(path: &Path, arch: Arch) -> Result<()> {
    let mut header = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("[{STEP}] reading {}", path.display()))?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || machine != arch.elf_machine() {
        bail!(
            "[{STEP}] {} is not an ELF file for {arch} (e_machine {machine}, expected {})",
            path.display(),
            arch.elf_machine()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linker_and_the_artifacts_of_a_cross_build() {
        assert_eq!(
            linker_variable("aarch64-unknown-linux-gnu"),
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"
        );
        assert_eq!(linker(Arch::Arm64), "aarch64-linux-gnu-gcc");
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"libc"},"filenames":["/t/deps/liblibc-1.rlib","/t/deps/liblibc-1.rmeta"]}
{"reason":"build-script-executed","package_id":"x"}
not json
{"reason":"compiler-artifact","target":{"name":"oomwatch"},"filenames":["/t/oomwatch"]}"#;
        assert_eq!(
            artifacts(messages),
            [
                "/t/deps/liblibc-1.rlib",
                "/t/deps/liblibc-1.rmeta",
                "/t/oomwatch"
            ]
        );
    }
}
