//! Debian's `earlyoom` for the guest's userspace-killer phase: downloaded with
//! `apt-get download` and unpacked under `target/vm/earlyoom/` (never installed on the host, so
//! no earlyoom service is started there).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::util::run;

const STEP: &str = "vm";

/// The unpacked `usr/bin/earlyoom`, downloading and unpacking the package if not cached.
pub fn fetch(vm_dir: &Path) -> Result<PathBuf> {
    let dir = vm_dir.join("earlyoom");
    let bin = dir.join("usr/bin/earlyoom");
    if bin.is_file() {
        eprintln!("[{STEP}] {}: cached", bin.display());
        return Ok(bin);
    }
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs)?;
    let deb = match find_deb(&debs) {
        Some(deb) => deb,
        None => {
            run(
                STEP,
                crate::util::apt_get(&["download", "earlyoom"]).current_dir(&debs),
            )
            .context(
                "[vm] apt-get download earlyoom (run apt-get update as root if it is unknown)",
            )?;
            find_deb(&debs).context("[vm] apt-get download wrote no earlyoom .deb")?
        }
    };
    let tmp = vm_dir.join("earlyoom.partial");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    run(STEP, Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::rename(&tmp, &dir)?;
    if !bin.is_file() {
        bail!("[vm] {} has no usr/bin/earlyoom", deb.display());
    }
    eprintln!("[{STEP}] extracted {}", bin.display());
    Ok(bin)
}

fn find_deb(debs: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(debs)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("earlyoom_") && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}
