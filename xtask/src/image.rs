//! `cargo xtask image [--target TARGET]`: the agent's OCI image, built without network from the
//! release binary and the shared libraries it links: the same content as
//! `deploy/Containerfile`'s distroless `cc-debian12` stage (glibc and libgcc_s plus the binary),
//! entrypoint `/usr/local/bin/oomwatch`, command `run`. Written as an OCI archive
//! (`oci-layout`, `index.json`, blobs), named `ghcr.io/oomwatch/oomwatch:<version>` (the
//! DaemonSet's image), ready for `ctr -n k8s.io images import`, `podman load` or `docker load`
//! (Docker >= 25).
//!
//! One code path for every architecture ([`Arch`]): the host's image holds the release build
//! and the libraries `ldd` resolves on this Debian 12 host (glibc, libgcc_s, the dynamic
//! loader), at `target/image/oomwatch-oci.tar` (its root file system in
//! `target/image/rootfs/`: what the container tests run); another architecture's (arm64 on an
//! x86-64 host) holds the agent `crate::cross` builds and the libraries its `NEEDED` entries
//! name, from the cross toolchain's C library (`cross::libs`), at
//! `target/image/oomwatch-oci-arm64.tar` (root file system in `target/image/arm64/rootfs/`).
//! The image configuration's `architecture` is the OCI name of that architecture.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cross::{libs, Arch};
use crate::util::run;

const STEP: &str = "image";
/// Where the binary goes in the image (as in deploy/Containerfile).
const BIN: &str = "usr/local/bin/oomwatch";

/// Where one architecture's image is assembled and written.
#[derive(Debug, PartialEq, Eq)]
struct Paths {
    /// Working directory: `rootfs/`, `oci/` (the archive's content) and the layer while built.
    work: PathBuf,
    rootfs: PathBuf,
    archive: PathBuf,
}

impl Paths {
    /// Below `image_dir` (`target/image`): the host's architecture's at the top, another one's
    /// working directory in `<arch>/` and its archive named `oomwatch-oci-<arch>.tar`.
    fn of(image_dir: &Path, arch: Arch) -> Paths {
        let (work, archive) = match arch.is_host() {
            true => (image_dir.to_path_buf(), "oomwatch-oci.tar".to_string()),
            false => (
                image_dir.join(arch.oci()),
                format!("oomwatch-oci-{}.tar", arch.oci()),
            ),
        };
        Paths {
            rootfs: work.join("rootfs"),
            archive: image_dir.join(archive),
            work,
        }
    }

    /// Removes what a previous build of this architecture left (and nothing of another one's).
    fn clear(&self) -> Result<()> {
        for dir in [self.rootfs.clone(), self.work.join("oci")] {
            if dir.exists() {
                fs::remove_dir_all(&dir)
                    .with_context(|| format!("[{STEP}] remove {}", dir.display()))?;
            }
        }
        if self.archive.exists() {
            fs::remove_file(&self.archive)?;
        }
        Ok(())
    }
}

/// Builds the release agent for `target` (the host's if `None`) and its image; returns the
/// archive's path.
pub fn image(target: Option<Arch>) -> Result<PathBuf> {
    let arch = target
        .or_else(Arch::host)
        .context("[image] the host's architecture is neither x86-64 nor arm64: give --target")?;
    let binary = crate::build_target(false, Some(arch)).context("[image] step build")?;
    let t = Instant::now();
    let paths = Paths::of(&crate::target_dir().join("image"), arch);
    paths.clear()?;
    let libraries = rootfs(&binary, arch, &paths.rootfs)?;
    let name = format!("ghcr.io/oomwatch/oomwatch:{}", agent_version()?);
    let tar = oci_archive(&paths, &name, arch)?;
    let size = fs::metadata(&tar)?.len();
    eprintln!(
        "[{STEP}] {name} ({}/linux): {} ({:.1} MiB, {:.1}s; libraries {}); load it with \
         `ctr -n k8s.io images import {}`",
        arch.oci(),
        tar.display(),
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64(),
        libraries.join(" "),
        tar.display()
    );
    Ok(tar)
}

/// The image's root file system in `root`: the agent, the libraries it links for `arch` (the
/// host's as `ldd` resolves them, another architecture's from its cross C library), and the
/// DaemonSet's mount points; returns the libraries' paths in the image.
fn rootfs(binary: &Path, arch: Arch, root: &Path) -> Result<Vec<String>> {
    fs::create_dir_all(root.join("usr/local/bin"))?;
    fs::copy(binary, root.join(BIN)).context("[image] copy the agent")?;
    let mut paths = Vec::new();
    for lib in libs::of(binary, arch.sysroot().as_deref()).context("[image] libraries")? {
        let dest = root.join(lib.guest.strip_prefix("/").unwrap_or(&lib.guest));
        fs::create_dir_all(dest.parent().context("[image] a library at /")?)?;
        // The file itself, not the symlink: the image holds no link to a missing target.
        fs::copy(&lib.host, &dest)
            .with_context(|| format!("[image] copy {}", lib.host.display()))?;
        paths.push(lib.guest.display().to_string());
    }
    // Mount points of the DaemonSet (the root filesystem is read-only there) and /tmp.
    for dir in ["proc", "sys", "dev", "host", "tmp", "var/lib/oomwatch"] {
        fs::create_dir_all(root.join(dir))?;
    }
    Ok(paths)
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

/// An OCI archive of the root file system (one layer, reproducible: sorted, owner 0, mtime 0).
fn oci_archive(paths: &Paths, name: &str, arch: Arch) -> Result<PathBuf> {
    let layout = paths.work.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer = paths.work.join("layer.tar");
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
    ])
    .arg("-C")
    .arg(&paths.rootfs)
    .arg("-cf")
    .arg(&layer)
    .arg(".");
    run(STEP, &mut tar)?;
    let (layer_sum, layer_size) = blob(&blobs, &fs::read(&layer)?)?;
    let (config_sum, config_size) = blob(&blobs, config(arch, &layer_sum).as_bytes())?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_sum}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_sum}","size":{layer_size}}}]}}"#
    );
    let (manifest_sum, manifest_size) = blob(&blobs, manifest.as_bytes())?;
    let index = index(arch, name, &manifest_sum, manifest_size);
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fs::remove_file(&layer)?;
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&paths.archive)
        .args(["oci-layout", "index.json", "blobs"]);
    run(STEP, &mut tar)?;
    Ok(paths.archive.clone())
}

/// The image configuration: `arch`'s OCI name, the entrypoint, the one layer.
fn config(arch: Arch, layer_sum: &str) -> String {
    let architecture = arch.oci();
    format!(
        r#"{{"architecture":"{architecture}","os":"linux","config":{{"Entrypoint":["/{BIN}"],"Cmd":["run"],"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_sum}"]}}}}"#
    )
}

/// `index.json`: the one manifest, its platform and the image's name.
fn index(arch: Arch, name: &str, manifest_sum: &str, manifest_size: usize) -> String {
    let architecture = arch.oci();
    format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_sum}","size":{manifest_size},"platform":{{"architecture":"{architecture}","os":"linux"}},"annotations":{{"io.containerd.image.name":"{name}","org.opencontainers.image.ref.name":"{name}"}}}}]}}"#
    )
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_configuration_and_the_index_name_the_architecture() {
        for (arch, name) in [(Arch::X86_64, "amd64"), (Arch::Arm64, "arm64")] {
            let config: Value = serde_json::from_str(&config(arch, "ab12")).unwrap();
            assert_eq!(config["architecture"], name);
            assert_eq!(config["os"], "linux");
            assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/oomwatch");
            assert_eq!(config["config"]["Cmd"][0], "run");
            assert_eq!(config["rootfs"]["diff_ids"][0], "sha256:ab12");
            let index: Value =
                serde_json::from_str(&index(arch, "ghcr.io/oomwatch/oomwatch:0.1.0", "cd34", 5))
                    .unwrap();
            let manifest = &index["manifests"][0];
            assert_eq!(manifest["platform"]["architecture"], name);
            assert_eq!(manifest["platform"]["os"], "linux");
            assert_eq!(manifest["digest"], "sha256:cd34");
            assert_eq!(
                manifest["annotations"]["io.containerd.image.name"],
                "ghcr.io/oomwatch/oomwatch:0.1.0"
            );
        }
    }

    #[test]
    fn the_hosts_image_keeps_its_paths_and_another_architectures_has_its_own() {
        let Some(host) = Arch::host() else { return };
        let other = Arch::ALL.into_iter().find(|a| *a != host).unwrap();
        let dir = Path::new("/t/image");
        assert_eq!(
            Paths::of(dir, host),
            Paths {
                work: dir.into(),
                rootfs: dir.join("rootfs"),
                archive: dir.join("oomwatch-oci.tar"),
            }
        );
        let name = other.oci();
        assert_eq!(
            Paths::of(dir, other),
            Paths {
                work: dir.join(name),
                rootfs: dir.join(name).join("rootfs"),
                archive: dir.join(format!("oomwatch-oci-{name}.tar")),
            }
        );
    }
}
