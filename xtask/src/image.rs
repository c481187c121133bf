//! `cargo xtask image`: the agent's OCI image, built without network from the release binary
//! and the shared libraries it links (as `ldd` resolves them on this Debian 12 host: glibc,
//! libgcc_s, the dynamic loader): the same content as `deploy/Containerfile`'s distroless
//! `cc-debian12` stage (glibc and libgcc_s plus the binary), entrypoint
//! `/usr/local/bin/oomwatch`, command `run`. Written as an OCI archive (`oci-layout`,
//! `index.json`, blobs) to `target/image/oomwatch-oci.tar`, named
//! `ghcr.io/oomwatch/oomwatch:<version>` (the DaemonSet's image), ready for
//! `ctr -n k8s.io images import`, `podman load` or `docker load` (Docker >= 25).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::run;

const STEP: &str = "image";
/// Where the binary goes in the image (as in deploy/Containerfile).
const BIN: &str = "usr/local/bin/oomwatch";

/// Builds the release agent and its image; returns the archive's path.
pub fn image() -> Result<PathBuf> {
    let binary = crate::build(false).context("[image] step build")?;
    let out = crate::target_dir().join("image");
    let root = out.join("rootfs");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("[image] remove {}", out.display()))?;
    }
    fs::create_dir_all(root.join("usr/local/bin"))?;
    fs::copy(&binary, root.join(BIN)).context("[image] copy the agent")?;
    for lib in linked_libraries(&binary)? {
        let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().unwrap())?;
        // The file itself, not the symlink: the image holds no link to a missing target.
        fs::copy(&lib, &dest).with_context(|| format!("[image] copy {}", lib.display()))?;
    }
    // Mount points of the DaemonSet (the root filesystem is read-only there) and /tmp.
    for dir in ["proc", "sys", "dev", "host", "tmp", "var/lib/oomwatch"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let name = format!("ghcr.io/oomwatch/oomwatch:{}", agent_version()?);
    let tar = oci_archive(&out, &root, &name)?;
    let size = fs::metadata(&tar)?.len();
    eprintln!(
        "[{STEP}] {name}: {} ({:.1} MiB); load it with `ctr -n k8s.io images import {}`",
        tar.display(),
        size as f64 / (1 << 20) as f64,
        tar.display()
    );
    Ok(tar)
}

/// The shared objects `ldd` resolves for `binary`, loader included.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("[image] ldd")?;
    if !out.status.success() {
        bail!("[image] ldd {} failed", binary.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    if libs.is_empty() {
        bail!("[image] ldd found no libraries for {}", binary.display());
    }
    Ok(libs)
}

/// The workspace version (`[workspace.package]`, which the `oomwatch` crate inherits).
fn agent_version() -> Result<String> {
    let toml = fs::read_to_string(crate::util::repo_root().join("Cargo.toml"))?;
    toml.lines()
        .find_map(|l| {
            let v = l.strip_prefix("version")?.trim_start().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        })
        .context("[image] no version in Cargo.toml")
}

/// An OCI archive of `rootfs` (one layer, reproducible: sorted, owner 0, mtime 0).
fn oci_archive(out: &Path, rootfs: &Path, name: &str) -> Result<PathBuf> {
    let layout = out.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer = out.join("layer.tar");
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
    ])
    .arg("-C")
    .arg(rootfs)
    .arg("-cf")
    .arg(&layer)
    .arg(".");
    run(STEP, &mut tar)?;
    let (layer_sum, layer_size) = blob(&blobs, &fs::read(&layer)?)?;
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/{BIN}"],"Cmd":["run"],"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_sum}"]}}}}"#
    );
    let (config_sum, config_size) = blob(&blobs, config.as_bytes())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_sum}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_sum}","size":{layer_size}}}]}}"#
    );
    let (manifest_sum, manifest_size) = blob(&blobs, manifest.as_bytes())?;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_sum}","size":{manifest_size},"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"io.containerd.image.name":"{name}","org.opencontainers.image.ref.name":"{name}"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fs::remove_file(&layer)?;
    let archive = out.join("oomwatch-oci.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]);
    run(STEP, &mut tar)?;
    Ok(archive)
}

/// Stores `data` as a blob named by its sha256; returns (hex digest, size).
fn blob(blobs: &Path, data: &[u8]) -> Result<(String, usize)> {
    let tmp = blobs.join("tmp");
    fs::write(&tmp, data)?;
    let out = Command::new("sha256sum").arg(&tmp).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .context("[image] sha256sum")?
        .to_owned();
    fs::rename(&tmp, blobs.join(&hex))?;
    Ok((hex, data.len()))
}
