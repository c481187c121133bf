//! The release agent for another architecture than the host's (arm64 on an x86-64 host), for
//! `cargo xtask build --target`, `cargo xtask image --target` and `vm-test`'s arm64 guests.
//!
//! It is cross-built with Debian's cargo and rustc (whose standard library for the target is
//! `libstd-rust-web-dev:arm64`) and linked by `aarch64-linux-gnu-gcc` (with
//! `libc6-dev-arm64-cross`) into `target/cross/`, around an eBPF object built for that
//! architecture (`ebpf::build_ebpf_for_arch`: aya-ebpf fixes at build time which `pt_regs`
//! layout a kprobe reads, so the host's object would read the wrong registers), embedded with
//! `OOMWATCH_EBPF_OBJECT`. What the cross build needs is installed when missing (as root):
//! the dpkg architecture (`dpkg --add-architecture arm64`) and [`Arch::cross_packages`].
//! The agent's shared libraries come from that toolchain's C library ([`Arch::sysroot`],
//! [`libs`]).

mod arch;
pub mod libs;

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub use arch::Arch;

use crate::util::{self, run};

const STEP: &str = "cross";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's rustc: the cross build's compiler (its standard library for arm64 is Debian's).
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// The cargo profile of a cross build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `release`: what `cargo xtask build --target` and `image --target` ship.
    Release,
    /// `vm-guest` (the workspace's Cargo.toml): release at opt-level 1, for `vm-test`'s
    /// emulated guests only; it builds in about three quarters of the time (on this 2-core
    /// machine 206 s instead of 264 s from a clean target directory), which CI's budget needs.
    VmGuest,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::VmGuest => "vm-guest",
        }
    }
}

/// The agent of one cross build.
pub struct Agent {
    /// `target/cross/<rust target>/<profile>/oomwatch`, an ELF file for the architecture.
    pub binary: PathBuf,
    /// The eBPF object it embeds, built for the architecture.
    pub ebpf_object: PathBuf,
    /// The `libc` rlib it was built with (`vm-test`'s victim links against it).
    pub libc: PathBuf,
}

/// The release agent for `arch`, which is not the host's: its toolchain installed if missing,
/// the eBPF object for `arch`, then the agent embedding it, with Debian's cargo and rustc, into
/// `target/cross/`.
pub fn build_agent(arch: Arch, profile: Profile) -> Result<Agent> {
    if arch.is_host() {
        bail!("[{STEP}] {arch} is the host's architecture: no cross build");
    }
    crate::setup::setup(false).context("[cross] step setup")?;
    ensure_toolchain(arch)?;
    let object =
        crate::ebpf::build_ebpf_for_arch(arch.uname()).context("[cross] step build-ebpf")?;
    let target = arch.rust_target();
    let target_dir = crate::target_dir().join("cross");
    let mut cmd = Command::new(DEBIAN_CARGO);
    util::scrub_cargo_env(&mut cmd);
    cmd.args(["build", "--profile", profile.name(), "-p", "oomwatch"])
        .args(["--bin", "oomwatch"])
        .args(["--target", target])
        .args(["--message-format", "json-render-diagnostics"])
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(linker_variable(target), linker(arch))
        .env("OOMWATCH_EBPF_OBJECT", &object)
        .current_dir(util::repo_root());
    let t = Instant::now();
    let libc = libc_of(&mut cmd)?;
    let binary = target_dir
        .join(target)
        .join(profile.name())
        .join("oomwatch");
    require_elf(&binary, arch)?;
    eprintln!(
        "[{STEP}] cross-build for {target}, profile {}: {} ({} KiB, {:.1}s)",
        profile.name(),
        binary.display(),
        fs::metadata(&binary)?.len() >> 10,
        t.elapsed().as_secs_f64()
    );
    Ok(Agent {
        binary,
        ebpf_object: object,
        libc,
    })
}

/// What a cross build for `arch` needs: its dpkg architecture and [`Arch::cross_packages`].
pub fn ensure_toolchain(arch: Arch) -> Result<()> {
    ensure_architecture(arch)?;
    let packages = arch.cross_packages();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    util::ensure_packages(STEP, &packages)
}

/// Whether `name` is among dpkg's foreign architectures.
fn dpkg_has_architecture(name: &str) -> bool {
    util::probe("dpkg", &["--print-foreign-architectures"]).is_some_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|a| a == name)
    })
}

/// A foreign architecture's packages known to apt: `dpkg --add-architecture` and an apt-get
/// update, once (as root).
pub fn ensure_architecture(arch: Arch) -> Result<()> {
    if arch.is_host() || dpkg_has_architecture(arch.deb()) {
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "[{STEP}] {0} is no dpkg architecture here; as root run: dpkg --add-architecture {0} \
             && apt-get update",
            arch.deb()
        );
    }
    eprintln!(
        "[{STEP}] adding the dpkg architecture {} (its kernels, busybox, earlyoom, Rust standard \
         library): apt-get update",
        arch.deb()
    );
    run(
        STEP,
        Command::new("dpkg").args(["--add-architecture", arch.deb()]),
    )?;
    run(STEP, &mut util::apt_get(&["update"]))
}

/// `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER`.
fn linker_variable(target: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    )
}

/// The cross C compiler that links for `arch` (`aarch64-linux-gnu-gcc`).
pub fn linker(arch: Arch) -> String {
    format!("{}-gcc", arch.gnu_triple())
}

/// Runs a `cargo build --message-format json-render-diagnostics` of the agent (its
/// diagnostics and progress on stderr) and returns the `libc` rlib among the artifacts it
/// reports.
pub fn libc_of(cmd: &mut Command) -> Result<PathBuf> {
    eprintln!("[{STEP}] $ {}", util::describe(cmd));
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("[cross] cannot start cargo")?;
    if !out.status.success() {
        bail!("[{STEP}] cargo build failed ({})", out.status);
    }
    artifacts(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .find(|a| a.ends_with(".rlib") && a.contains("/liblibc-"))
        .map(PathBuf::from)
        .context("[cross] the agent's build reported no libc rlib")
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

/// The file is a little-endian ELF for `arch` (`e_machine` at offset 18).
pub fn require_elf(path: &Path, arch: Arch) -> Result<()> {
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

    #[test]
    fn elf_machines_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("xtask-elf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let elf = |machine: u16| {
            let mut header = b"\x7fELF\x02\x01\x01".to_vec();
            header.resize(18, 0);
            header.extend(machine.to_le_bytes());
            header
        };
        let (arm, x86, text) = (dir.join("arm"), dir.join("x86"), dir.join("text"));
        fs::write(&arm, elf(183)).unwrap();
        fs::write(&x86, elf(62)).unwrap();
        fs::write(&text, "#!/bin/sh\necho not an ELF file\n").unwrap();
        assert!(require_elf(&arm, Arch::Arm64).is_ok());
        assert!(require_elf(&x86, Arch::X86_64).is_ok());
        let err = require_elf(&x86, Arch::Arm64).unwrap_err().to_string();
        assert!(
            err.contains("not an ELF file for aarch64 (e_machine 62"),
            "{err}"
        );
        assert!(require_elf(&text, Arch::X86_64).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
