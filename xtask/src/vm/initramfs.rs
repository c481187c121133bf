//! The `vm-test` initramfs of one architecture: busybox-static with its applet links, the agent,
//! `alloc_threads` and earlyoom with their shared libraries (`libs`), and an `/init` script
//! (`oomwatch_guest::script`, the same for every architecture) that starts three agents, causes the OOM kills
//! and prints the results between `@@OWVM BEGIN name@@` / `@@OWVM END name@@` markers on the
//! serial console.

use std::{
    fs,
    io::Write,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use oomwatch_guest::script::init_script;

use crate::{
    cross::libs,
    vm::cross::{GuestBinaries, HOST_BUSYBOX},
};

/// Build `out` (gzip-compressed newc cpio) from `guest`'s binaries and `extra` ones (put in
/// `/usr/bin`, e.g. earlyoom), each with its libraries; `staging` is emptied first.
pub fn build(guest: &GuestBinaries, extra: &[&Path], staging: &Path, out: &Path) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("[vm] cannot remove {}", staging.display()))?;
    }
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root",
    ] {
        fs::create_dir_all(staging.join(dir))?;
    }
    let applets = busybox(&guest.busybox, staging)?;
    let sysroot = guest.sysroot.as_deref();
    copy_file(&guest.agent, &staging.join("oomwatch"))?;
    let libs = copy_libraries(&guest.agent, sysroot, staging)?;
    eprintln!(
        "[vm] initramfs ({}): busybox with {applets} applets, oomwatch, libraries {}",
        guest.arch,
        libs.join(" ")
    );
    for bin in std::iter::once(guest.alloc_threads.as_path()).chain(extra.iter().copied()) {
        let name = bin
            .file_name()
            .context("[vm] extra binary without a name")?;
        copy_file(bin, &staging.join("usr/bin").join(name))?;
        copy_libraries(bin, sysroot, staging)?;
        eprintln!(
            "[vm] initramfs: {} as /usr/bin/{}",
            bin.display(),
            name.to_string_lossy()
        );
    }
    let init = staging.join("init");
    fs::write(&init, init_script())?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    write_cpio_gz(staging, out)
}

/// `busybox` as `/bin/busybox` and one symlink per applet, at the path busybox itself names:
/// the host's busybox lists them (the guest's may be for another architecture, which the host
/// cannot run; both are Debian's busybox-static).
fn busybox(busybox: &Path, staging: &Path) -> Result<usize> {
    copy_file(busybox, &staging.join("bin/busybox"))?;
    let list = Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .with_context(|| format!("[vm] cannot run {HOST_BUSYBOX} --list-full"))?;
    if !list.status.success() {
        bail!("[vm] {HOST_BUSYBOX} --list-full failed");
    }
    let mut applets = 0;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = staging.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        if !link.exists() {
            symlink("/bin/busybox", &link)?;
            applets += 1;
        }
    }
    Ok(applets)
}

/// The libraries `binary` needs, at their guest paths; returns those paths.
fn copy_libraries(binary: &Path, sysroot: Option<&Path>, staging: &Path) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for lib in libs::of(binary, sysroot)? {
        let rel = lib.guest.strip_prefix("/").unwrap_or(&lib.guest);
        copy_file(&lib.host, &staging.join(rel))?;
        paths.push(lib.guest.display().to_string());
    }
    Ok(paths)
}

/// `cp -L` semantics: follow symlinks, keep the mode.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("[vm] cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// `find . | cpio -o -H newc -R 0:0 | gzip` without a shell pipeline, so each failure is seen.
fn write_cpio_gz(staging: &Path, out: &Path) -> Result<()> {
    let mut entries = Vec::new();
    collect(staging, Path::new("."), &mut entries)?;
    let cpio_path = out.with_extension("cpio");
    let cpio_file = fs::File::create(&cpio_path)
        .with_context(|| format!("[vm] cannot create {}", cpio_path.display()))?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(staging)
        .stdin(Stdio::piped())
        .stdout(cpio_file)
        .spawn()
        .context("[vm] cannot run cpio")?;
    {
        let mut stdin = child.stdin.take().context("[vm] cpio stdin")?;
        for e in &entries {
            writeln!(stdin, "{}", e.display())?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("[vm] cpio failed ({status})");
    }
    let status = Command::new("gzip")
        .args(["-f", "-n", "-6"])
        .arg(&cpio_path)
        .status()
        .context("[vm] cannot run gzip")?;
    if !status.success() {
        bail!("[vm] gzip failed ({status})");
    }
    let gz = PathBuf::from(format!("{}.gz", cpio_path.display()));
    if gz != out {
        fs::rename(&gz, out)?;
    }
    Ok(())
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(rel.to_path_buf());
    let full = root.join(rel);
    if fs::symlink_metadata(&full)?.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&full)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for name in names {
            collect(root, &rel.join(name), out)?;
        }
    }
    Ok(())
}
