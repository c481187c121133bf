//! `vm-test` set-up: the Debian packages it needs, and Debian's 6.1/6.12 cloud kernels
//! (newest of each series, downloaded with `apt-get download` and cached under `target/vm/`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::STEP;
use crate::util::{self, run};

/// What booting the kernels needs.
pub const BOOT_PACKAGES: [&str; 3] = ["qemu-system-x86", "busybox-static", "cpio"];

/// The decompressors of the kernels' payloads (6.1: lz4, 6.12: zstd; gzip is essential), for
/// extracting their BTF (see `btf.rs`).
pub const BTF_PACKAGES: [&str; 3] = ["zstd", "xz-utils", "lz4"];

/// Packages apt may remove to install [`BOOT_PACKAGES`]; each is reinstalled from Debian 12 at once.
/// (The machine image carries a backported qemu-utils that Debian 12's qemu conflicts with.)
const REPLACEABLE: [&str; 1] = ["qemu-utils"];

/// A kernel series and the `apt-cache search` pattern of its cloud image packages.
pub struct Series {
    pub label: &'static str,
    pattern: &'static str,
}

pub const SERIES: [Series; 4] = [
    Series {
        label: "5.10",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
    },
    Series {
        label: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
    },
    Series {
        label: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$",
    },
    // The newest cloud kernel of any suite apt knows (sid's, see `sources.rs`): 7.2 today.
    Series {
        label: "newest",
        pattern: r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64$",
    },
];

/// A downloaded kernel ready to boot.
pub struct Kernel {
    pub label: &'static str,
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// The kernel release (`6.1.0-56-cloud-amd64`): the name of its directory under `target/vm/`.
    pub fn release(&self) -> &str {
        self.package
            .strip_prefix("linux-image-")
            .unwrap_or(&self.package)
    }
}

/// Step 1: the given packages (see [`BOOT_PACKAGES`], [`BTF_PACKAGES`]); install only what is
/// missing (as root).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !util::dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("[{STEP}] packages {}: installed", packages.join(" "));
        return Ok(());
    }
    let list = missing.join(" ");
    if !util::is_root() {
        bail!(
            "[{STEP}] missing Debian packages: {list}; as root run: \
             apt-get install -y --no-install-recommends {list}"
        );
    }
    // Never let apt make room by removing other packages, with one known exception: this kind
    // of machine ships a backported qemu-utils that Debian 12's qemu-system-x86 conflicts with.
    // That one is replaced by Debian 12's own qemu-utils (so qemu-img stays); anything else
    // apt would remove stops the set-up with the command to accept it.
    let removals = would_remove(&missing);
    let replaced: Vec<&String> = removals
        .iter()
        .filter(|r| REPLACEABLE.contains(&r.as_str()))
        .collect();
    if removals.len() != replaced.len() {
        bail!(
            "[{STEP}] installing {list} would remove {}: not done; to accept that, as root run: \
             apt-get install -y --no-install-recommends {list}",
            removals.join(" ")
        );
    }
    eprintln!("[{STEP}] installing {list}");
    let started = Instant::now();
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    if replaced.is_empty() {
        args.push("--no-remove");
    }
    args.extend(&missing);
    if run(STEP, &mut util::apt_get(&args)).is_err() {
        eprintln!("[{STEP}] apt-get install failed; updating the package lists and retrying");
        run(STEP, &mut util::apt_get(&["update"]))?;
        run(STEP, &mut util::apt_get(&args))?;
    }
    for r in &replaced {
        eprintln!("[{STEP}] {r} (a backport that Debian 12's qemu conflicts with) was removed; installing Debian 12's {r}");
        run(
            STEP,
            &mut util::apt_get(&[
                "install",
                "-y",
                "--no-install-recommends",
                "--no-remove",
                r.as_str(),
            ]),
        )?;
    }
    if let Some(p) = missing.iter().find(|p| !util::dpkg_installed(p)) {
        bail!("[{STEP}] {p} is still not installed after apt-get install");
    }
    eprintln!(
        "[{STEP}] installed {list} ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Packages `apt-get install -s` would remove (its `Remv NAME ...` lines).
fn would_remove(packages: &[&str]) -> Vec<String> {
    let mut args = vec!["install", "-s", "--no-install-recommends"];
    args.extend(packages);
    let out = util::apt_get(&args)
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    removals(&String::from_utf8_lossy(&out))
}

/// The `Remv NAME [VERSION]` lines of `apt-get install -s` output.
fn removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv ")?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Numeric components of a package name, for "newest" ordering (6.1.0-56 > 6.1.0-9).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// The newest package name from `apt-cache search --names-only` output.
fn newest(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

fn apt_cache(args: &[&str]) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(args)
        .output()
        .context("[vm] cannot run apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Step 2: pick the newest package of a series, download and extract it (both cached). Newer
/// Debian kernels ship the image in a package of its own, `linux-binary-<release>` (vmlinuz
/// under `usr/lib/modules/<release>/`), which `linux-image-<release>` depends on: it is fetched
/// too when the image package has no vmlinuz.
pub fn fetch_kernel(series: &Series, vm_dir: &Path, keep: bool) -> Result<Kernel> {
    let (package, version) = pick_package(series)?;
    eprintln!("[{STEP}] kernel {}: {package} {version}", series.label);
    let dir = vm_dir.join(&package);
    let vmlinuz = match find_vmlinuz(&dir) {
        Some(vmlinuz) => {
            eprintln!("[{STEP}] {}: cached", vmlinuz.display());
            vmlinuz
        }
        None => {
            let deb = download(vm_dir, &package, &version)?;
            let mut debs = vec![deb];
            let binary = package.replacen("linux-image-", "linux-binary-", 1);
            if !deb_has_vmlinuz(&debs[0])? {
                eprintln!("[{STEP}] {package} has no vmlinuz: the image is in {binary}");
                debs.push(download(vm_dir, &binary, &version)?);
            }
            extract(vm_dir, &debs, &package, &dir, keep)?
        }
    };
    Ok(Kernel {
        label: series.label,
        package,
        version,
        vmlinuz,
    })
}

/// Whether the .deb holds a `vmlinuz` (`dpkg-deb -c`).
fn deb_has_vmlinuz(deb: &Path) -> Result<bool> {
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .context("[vm] cannot run dpkg-deb -c")?;
    if !out.status.success() {
        bail!("[vm] dpkg-deb -c {} failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| is_vmlinuz_path(l.split_whitespace().last().unwrap_or(""))))
}

/// `./boot/vmlinuz-<release>` (until 6.x) or `./usr/lib/modules/<release>/vmlinuz` (the
/// `linux-binary-*` packages).
fn is_vmlinuz_path(path: &str) -> bool {
    let path = path.trim_start_matches("./");
    let name = path.rsplit('/').next().unwrap_or("");
    (path.starts_with("boot/") && name.starts_with("vmlinuz-"))
        || ((path.starts_with("usr/lib/modules/") || path.starts_with("lib/modules/"))
            && name == "vmlinuz")
}

/// The newest package of `series` (after an apt-get update if none is listed) and its
/// candidate version.
fn pick_package(series: &Series) -> Result<(String, String)> {
    let search = ["search", "--names-only", series.pattern];
    let mut found = newest(&apt_cache(&search)?);
    if found.is_none() && util::is_root() {
        eprintln!(
            "[{STEP}] no {} kernel in the package lists: apt-get update",
            series.label
        );
        run(STEP, &mut util::apt_get(&["update"]))?;
        found = newest(&apt_cache(&search)?);
    }
    let Some(package) = found else {
        bail!(
            "[{STEP}] no package matches {} (run apt-get update as root)",
            series.pattern
        );
    };
    let policy = apt_cache(&["policy", &package])?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)")
        .with_context(|| format!("[vm] {package} has no installation candidate"))?;
    Ok((package, version))
}

/// The package's .deb in `vm_dir/debs`, downloaded unless cached.
fn download(vm_dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs)?;
    if let Some(deb) = find_deb(&debs, package, version) {
        eprintln!("[{STEP}] {}: cached", deb.display());
        return Ok(deb);
    }
    let t = Instant::now();
    run(
        STEP,
        util::apt_get(&["download", &format!("{package}={version}")]).current_dir(&debs),
    )?;
    let deb = find_deb(&debs, package, version)
        .with_context(|| format!("[vm] apt-get download wrote no {package} {version} .deb"))?;
    eprintln!(
        "[{STEP}] downloaded {} ({} MiB, {:.1}s)",
        deb.display(),
        fs::metadata(&deb)?.len() >> 20,
        t.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// Extracts the `debs` into `dir`, the vmlinuz always as `boot/vmlinuz-<release>` (without the
/// modules unless `keep`).
fn extract(
    vm_dir: &Path,
    debs: &[PathBuf],
    package: &str,
    dir: &Path,
    keep: bool,
) -> Result<PathBuf> {
    let tmp = vm_dir.join(format!("{package}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    for deb in debs {
        run(STEP, Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    }
    let release = package.strip_prefix("linux-image-").unwrap_or(package);
    for modules in ["usr/lib/modules", "lib/modules"] {
        let image = tmp.join(modules).join(release).join("vmlinuz");
        if image.is_file() && find_vmlinuz(&tmp).is_none() {
            fs::create_dir_all(tmp.join("boot"))?;
            fs::copy(&image, tmp.join("boot").join(format!("vmlinuz-{release}")))?;
        }
    }
    if !keep {
        // Only boot/vmlinuz-* is booted; the modules are most of the package.
        let _ = fs::remove_dir_all(tmp.join("lib"));
        let _ = fs::remove_dir_all(tmp.join("usr/lib/modules"));
    }
    fs::rename(&tmp, dir)?;
    let vmlinuz = find_vmlinuz(dir).with_context(|| {
        format!("[vm] {package} has no boot/vmlinuz-* nor usr/lib/modules/{release}/vmlinuz")
    })?;
    eprintln!("[{STEP}] extracted {}", vmlinuz.display());
    Ok(vmlinuz)
}

/// `apt-get download` names files `PKG_VERSION_ARCH.deb`, percent-encoding `:` (and maybe
/// `+` or `~`): compare decoded names.
fn find_deb(dir: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let want = format!("{package}_{version}_");
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".deb") && percent_decode(n).starts_with(&want))
        })
}

fn percent_decode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_package_is_picked_numerically() {
        let search = "linux-image-6.1.0-9-cloud-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-56-cloud-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-47-cloud-amd64 - Linux 6.1\n";
        assert_eq!(
            newest(search).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let search = "linux-image-6.12.117+deb12-cloud-amd64 - x\n\
                      linux-image-6.12.100+deb12-cloud-amd64 - x\n";
        assert_eq!(
            newest(search).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(newest(""), None);
    }

    #[test]
    fn vmlinuz_paths_of_both_layouts() {
        assert!(is_vmlinuz_path("./boot/vmlinuz-6.1.0-57-cloud-amd64"));
        assert!(is_vmlinuz_path(
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz"
        ));
        assert!(!is_vmlinuz_path("./boot/System.map-6.1.0-57-cloud-amd64"));
        assert!(!is_vmlinuz_path(
            "./usr/lib/modules/7.2.13+deb14-cloud-amd64/modules.order"
        ));
        assert!(!is_vmlinuz_path("./usr/share/doc/vmlinuz"));
    }

    #[test]
    fn simulated_removals_are_found() {
        let sim = "Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                   Inst cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])\n\
                   Conf cpio (2.13+dfsg-7.1 Debian:12.15/oldstable [amd64])\n";
        assert_eq!(removals(sim), ["qemu-utils"]);
        assert!(removals("Inst cpio (2.13)\n").is_empty());
    }

    #[test]
    fn deb_names_are_percent_decoded() {
        assert_eq!(
            percent_decode(
                "linux-image-6.12.117%2bdeb12-cloud-amd64_1%3a6.12.117-1%7edeb12u1_amd64.deb"
            ),
            "linux-image-6.12.117+deb12-cloud-amd64_1:6.12.117-1~deb12u1_amd64.deb"
        );
        assert_eq!(percent_decode("a%zz%"), "a%zz%");
    }
}
