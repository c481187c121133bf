//! What differs between an x86-64 and an arm64 guest of `vm-test`, a property of each kernel
//! series (`kernel::SERIES`): the QEMU binary, machine, CPUs and serial console, and the
//! flavour of Debian's kernel release. The architecture itself and its builds are
//! `crate::cross::Arch`; the guest (`init.sh`, its phases, the checks) is the same.

pub use crate::cross::Arch;

impl Arch {
    /// The architecture of a Debian kernel release (`6.1.0-57-cloud-arm64`): its flavour's
    /// suffix; x86-64 for any other.
    pub fn of_release(release: &str) -> Arch {
        match release.ends_with(&format!("-{}", Arch::Arm64.deb())) {
            true => Arch::Arm64,
            false => Arch::X86_64,
        }
    }

    /// The Debian package with the QEMU binary.
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Arm64 => "qemu-system-arm",
        }
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
    fn a_kernel_release_names_its_architecture() {
        assert_eq!(Arch::of_release("6.1.0-57-cloud-arm64"), Arch::Arm64);
        assert_eq!(Arch::of_release("7.2.13+deb14-cloud-amd64"), Arch::X86_64);
    }
}
