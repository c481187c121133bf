//! Debian's `earlyoom` for the guest's userspace-killer phase: downloaded with
//! `apt-get download` and unpacked under `target/vm/earlyoom/` (`earlyoom-arm64/` for arm64
//! guests), never installed on the host, so no earlyoom service is started there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{arch::Arch, debs, STEP};

const PACKAGE: &str = "earlyoom";

/// The unpacked `usr/bin/earlyoom` of `arch`, downloading and unpacking the package if not
/// cached.
pub fn fetch(vm_dir: &Path, arch: Arch) -> Result<PathBuf> {
    let dir = match arch.is_host() {
        true => vm_dir.join(PACKAGE),
        false => vm_dir.join(format!("{PACKAGE}-{}", arch.deb())),
    };
    let bin = dir.join("usr/bin/earlyoom");
    if bin.is_file() {
        eprintln!("[{STEP}] {}: cached", bin.display());
        return Ok(bin);
    }
    let version = debs::candidate(PACKAGE, arch)?;
    let deb = debs::download(vm_dir, PACKAGE, &version, arch)?;
    debs::unpack(&deb, &dir)?;
    if !bin.is_file() {
        bail!("[{STEP}] {} has no usr/bin/earlyoom", deb.display());
    }
    eprintln!("[{STEP}] extracted {}", bin.display());
    Ok(bin)
}
