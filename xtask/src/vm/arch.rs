//! The architectures `vm-test` boots, a property of each kernel series (`kernel::SERIES`): what
//! differs between an x86-64 and an arm64 guest is here (Debian's architecture name, the QEMU
//! binary, machine and serial console, the ELF machine and Rust target of its binaries); the
//! guest itself (`init.sh`, its phases, the checks) is the same.

use std::fmt;

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
    /// The machine xtask runs on, if it is one of these.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The architecture of a Debian kernel release (`6.1.0-57-cloud-arm64`): its flavour's
    /// suffix; x86-64 for any other.
    pub fn of_release(release: &str) -> Arch {
        match release.ends_with(&format!("-{}", Arch::Arm64.deb())) {
            true => Arch::Arm64,
            false => Arch::X86_64,
        }
    }

    /// Whether guests of this architecture run what the host builds and has (its agent build,
    /// busybox, libraries): else they are cross-built and fetched (`cross`).
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

    /// The Rust target of the guest's binaries.
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

    /// ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The Debian package with the QEMU binary.
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Arm64 => "qemu-system-arm",
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

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }

    /// QEMU's machine and CPU. arm64: the `virt` board with every CPU feature TCG emulates;
    /// pointer authentication (which Debian's kernels use in every function) with QEMU's own
    /// cheap algorithm instead of the architected QARMA5, whose emulation is slow; no network
    /// card (the guest needs none, and `virt`'s default one wants a boot ROM from `ipxe-qemu`,
    /// which apt does not install without recommendations).
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-accel", "tcg"],
            Arch::Arm64 => &[
                "-M",
                "virt",
                "-cpu",
                "max,pauth-impdef=on",
                "-accel",
                "tcg",
                "-nic",
                "none",
            ],
        }
    }

    /// The guest's CPUs (all on NUMA node 0). arm64: two, as any arm64 server has: on one
    /// emulated CPU, three agents at nice -10 woken by each victim of a `memory.oom.group`
    /// kill run between the kernel's kills of its members, more than 100 ms apart under
    /// arm64's slower emulation.
    pub fn cpus(self) -> u32 {
        match self {
            Arch::X86_64 => 1,
            Arch::Arm64 => 2,
        }
    }

    /// The serial console the kernel writes to.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
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
        assert_eq!(Arch::of_release("6.1.0-57-cloud-arm64"), Arch::Arm64);
        assert_eq!(Arch::of_release("7.2.13+deb14-cloud-amd64"), Arch::X86_64);
        assert_eq!(
            Arch::Arm64.cross_packages(),
            [
                "gcc-aarch64-linux-gnu",
                "libc6-dev-arm64-cross",
                "libstd-rust-web-dev:arm64"
            ]
        );
    }
}
