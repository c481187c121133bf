//! The boot check `eBPF object`: the agent embeds the eBPF object built for the guest's
//! architecture (aya-ebpf fixes at build time which `pt_regs` layout a kprobe reads: the
//! host's object attaches on arm64 but reads x86-64 registers).

use std::{fs, path::Path};

use oomwatch_guest::check::{check, Check};

use crate::vm::cross::GuestBinaries;

/// The agent binary holds the eBPF object built for its architecture, byte for byte
/// (`OOMWATCH_EBPF_OBJECT`, else the host's default object).
pub fn ebpf_object(guest: &GuestBinaries) -> Check {
    let want = crate::ebpf::object_path_for(guest.arch.uname());
    let mut problems = Vec::new();
    if guest.ebpf_object != want {
        problems.push(format!(
            "built with {}, not the object for {} ({})",
            guest.ebpf_object.display(),
            guest.arch,
            want.display()
        ));
    }
    match embeds(&guest.agent, &want) {
        Ok(true) => {}
        Ok(false) => problems.push(format!(
            "{} does not embed {}",
            guest.agent.display(),
            want.display()
        )),
        Err(e) => problems.push(e),
    }
    let size = fs::metadata(&want).map_or(0, |m| m.len() >> 10);
    check(
        "eBPF object",
        problems,
        format!(
            "the agent embeds the object built for {} ({}, {size} KiB)",
            guest.arch,
            want.display()
        ),
    )
}

/// Whether `binary` holds the bytes of `object` (`include_bytes!`).
fn embeds(binary: &Path, object: &Path) -> Result<bool, String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (haystack, needle) = (read(binary)?, read(object)?);
    if needle.is_empty() {
        return Ok(false);
    }
    Ok(haystack.windows(needle.len()).any(|w| w == needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_must_be_in_the_binary_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-ebpf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (binary, object) = (dir.join("agent"), dir.join("object"));
        fs::write(&object, b"\x7fELF eBPF object").unwrap();
        fs::write(&binary, b"code \x7fELF eBPF object more code").unwrap();
        assert_eq!(embeds(&binary, &object), Ok(true));
        fs::write(&object, b"\x7fELF another object").unwrap();
        assert_eq!(embeds(&binary, &object), Ok(false));
        assert!(embeds(&dir.join("missing"), &object).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
