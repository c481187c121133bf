//! The architectures xtask builds the agent for and `vm-test` boots: what differs between an
//! x86-64 and an arm64 build is here (Debian's architecture name, the Rust target, the GNU
//! triple of the cross toolchain, the ELF machine of its binaries, the packages a cross build
//! needs). What differs between their QEMU guests is in `vm/arch.rs`.

use std::{fmt, path::PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uname())
    }
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// `--target`'s value: a Rust target (`aarch64-unknown-linux-gnu`), or the architecture's
    /// Debian (`arm64`) or `uname -m` (`aarch64`) name.
    pub fn parse(name: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|a| [a.rust_target(), a.deb(), a.uname()].contains(&name))
            .ok_or_else(|| {
                let known: Vec<String> = Arch::ALL
                    .iter()
                    .map(|a| format!("{} ({})", a.rust_target(), a.deb()))
                    .collect();
                format!("unknown target {name:?}: use one of {}", known.join(", "))
            })
    }

    /// The machine xtask runs on, if it is one of these.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Whether the host builds and runs this architecture's binaries (its agent build, busybox,
    /// libraries): else they are cross-built and fetched (`cross`).
    pub fn is_host(self) -> bool {
        Arch::host() == Some(self)
    }

    /// Debian's name (`dpkg --print-architecture`, the `_arm64.deb` suffix).
    pub fn deb(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// `uname -m` in the guest, also `AYA_BPF_TARGET_ARCH`'s name for it.
    pub fn uname(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The package name apt knows it by on this host: `name:arm64` for a foreign architecture.
    pub fn apt_name(self, package: &str) -> String {
        if self.is_host() {
            package.to_string()
        } else {
            format!("{package}:{}", self.deb())
        }
    }

    /// The Rust target of its binaries (`cargo xtask build --target`).
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The GNU triple of the cross toolchain (`aarch64-linux-gnu-gcc`, `/usr/aarch64-linux-gnu`).
    pub fn gnu_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// The OCI image configuration's `architecture` (Go's `GOARCH` names).
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Where its binaries' shared libraries come from: the host's (`ldd`, `None`), or for
    /// another architecture the cross toolchain's C library (`/usr/aarch64-linux-gnu/lib`, from
    /// `libc6-arm64-cross`).
    pub fn sysroot(self) -> Option<PathBuf> {
        (!self.is_host()).then(|| format!("/usr/{}/lib", self.gnu_triple()).into())
    }

    /// ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The packages a cross build for this architecture needs (none for the host's): the cross
    /// C compiler (linker) with its C library (only recommended by the compiler: apt installs
    /// without recommendations here), and Debian's Rust standard library for it.
    pub fn cross_packages(self) -> Vec<String> {
        if self.is_host() {
            return Vec::new();
        }
        vec![
            format!("gcc-{}", self.gnu_triple()),
            format!("libc6-dev-{}-cross", self.deb()),
            self.apt_name("libstd-rust-web-dev"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_packages_are_qualified_with_their_architecture() {
        if Arch::host() != Some(Arch::X86_64) {
            return;
        }
        assert_eq!(Arch::X86_64.apt_name("earlyoom"), "earlyoom");
        assert_eq!(Arch::Arm64.apt_name("earlyoom"), "earlyoom:arm64");
        assert!(Arch::X86_64.cross_packages().is_empty());
        assert_eq!(Arch::X86_64.sysroot(), None);
        assert_eq!(
            Arch::Arm64.sysroot(),
            Some("/usr/aarch64-linux-gnu/lib".into())
        );
        assert_eq!(
            Arch::Arm64.cross_packages(),
            [
                "gcc-aarch64-linux-gnu",
                "libc6-dev-arm64-cross",
                "libstd-rust-web-dev:arm64"
            ]
        );
    }

    #[test]
    fn targets_are_named_by_rust_debian_or_uname() {
        for name in ["aarch64-unknown-linux-gnu", "arm64", "aarch64"] {
            assert_eq!(Arch::parse(name), Ok(Arch::Arm64), "{name}");
        }
        for name in ["x86_64-unknown-linux-gnu", "amd64", "x86_64"] {
            assert_eq!(Arch::parse(name), Ok(Arch::X86_64), "{name}");
        }
        let err = Arch::parse("riscv64gc-unknown-linux-gnu").unwrap_err();
        assert!(err.contains("aarch64-unknown-linux-gnu (arm64)"), "{err}");
        assert_eq!(Arch::Arm64.oci(), "arm64");
        assert_eq!(Arch::X86_64.oci(), "amd64");
    }
}
