//! `vm-test` set-up: the Debian packages it needs, and Debian's cloud kernels of each series
//! (newest of each, downloaded with `apt-get download` and cached under `target/vm/`), for
//! x86-64 and arm64.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use super::{arch::Arch, debs, STEP};
use crate::util::{self, run};

/// What booting kernels of `arch` needs: its QEMU, busybox (the host's: its applet list, and
/// the x86-64 guest's binary), cpio, and a cross toolchain for another architecture's.
pub fn boot_packages(arch: Arch) -> Vec<String> {
    let mut packages = vec![
        arch.qemu_package().to_string(),
        "busybox-static".into(),
        "cpio".into(),
    ];
    packages.extend(arch.cross_packages());
    packages
}

/// The decompressors of the kernels' payloads (6.1: lz4, 6.12: zstd; gzip is essential), for
/// extracting their BTF (see `btf.rs`).
pub const BTF_PACKAGES: [&str; 3] = ["zstd", "xz-utils", "lz4"];

/// A kernel series: its label (`--kernel`), architecture, and the `apt-cache search` pattern of
/// its cloud image packages.
pub struct Series {
    pub label: &'static str,
    pub arch: Arch,
    /// Whether `--kernel all` boots it.
    pub in_all: bool,
    pattern: &'static str,
    /// Boot to power-off as measured on the 2-core CI machine (CI of 2026-12-05), in seconds:
    /// only to start the longest boots first (two at a time, the longest last would idle a
    /// core for most of a boot).
    pub boot_secs: u16,
}

pub static SERIES: [Series; 6] = [
    Series {
        label: "5.10",
        arch: Arch::X86_64,
        in_all: true,
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
        boot_secs: 98,
    },
    Series {
        label: "6.1",
        arch: Arch::X86_64,
        in_all: true,
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
        boot_secs: 73,
    },
    Series {
        label: "6.12",
        arch: Arch::X86_64,
        in_all: true,
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$",
        boot_secs: 59,
    },
    // The newest cloud kernel of any suite apt knows (sid's, see `sources.rs`): 7.2 today.
    Series {
        label: "newest",
        arch: Arch::X86_64,
        in_all: true,
        pattern: r"^linux-image-[0-9]+\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64$",
        boot_secs: 122,
    },
    // Debian 12's arm64 cloud kernels, booted with `qemu-system-aarch64 -M virt` (TCG).
    Series {
        label: "arm64-6.1",
        arch: Arch::Arm64,
        in_all: true,
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-arm64$",
        boot_secs: 105,
    },
    // Not in `all`, to keep `cargo xtask test` within its 30 minutes on a 2-core machine:
    // `--kernel arm64-6.12` boots it (every check passed on 6.12.118+deb12-cloud-arm64).
    Series {
        label: "arm64-6.12",
        arch: Arch::Arm64,
        in_all: false,
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-arm64$",
        boot_secs: 100,
    },
];

/// The boot time [`Series::boot_secs`] expects of the series labelled `label` (0: unknown).
pub fn expected_boot_secs(label: &str) -> u16 {
    SERIES
        .iter()
        .find(|s| s.label == label)
        .map_or(0, |s| s.boot_secs)
}

/// The `--kernel` values: each series' label, and `all`.
pub fn labels() -> Vec<&'static str> {
    SERIES.iter().map(|s| s.label).chain(["all"]).collect()
}

/// The series `--kernel which` selects.
pub fn select(which: &str) -> Vec<&'static Series> {
    SERIES
        .iter()
        .filter(|s| s.label == which || (which == "all" && s.in_all))
        .collect()
}

/// A downloaded kernel ready to boot.
pub struct Kernel {
    pub label: &'static str,
    pub arch: Arch,
    pub package: String,
    pub version: String,
    /// The package's `vmlinuz` (its BTF is read from it).
    pub vmlinuz: PathBuf,
    /// What QEMU's `-kernel` boots: the vmlinuz on x86-64, the uncompressed `Image` on arm64.
    pub image: PathBuf,
}

impl Kernel {
    /// The kernel release (`6.1.0-56-cloud-amd64`): the name of its directory under `target/vm/`.
    pub fn release(&self) -> &str {
        self.package
            .strip_prefix("linux-image-")
            .unwrap_or(&self.package)
    }
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

/// Step 2: download and extract the package picked for a series ([`pick_packages`]; both
/// cached). Newer
/// Debian kernels ship the image in a package of its own, `linux-binary-<release>` (vmlinuz
/// under `usr/lib/modules/<release>/`), which `linux-image-<release>` depends on: it is fetched
/// too when the image package has no vmlinuz.
pub fn fetch_kernel(
    series: &Series,
    (package, version): (String, String),
    vm_dir: &Path,
    keep: bool,
) -> Result<Kernel> {
    let arch = series.arch;
    eprintln!("[{STEP}] kernel {}: {package} {version}", series.label);
    let dir = vm_dir.join(&package);
    let vmlinuz = match find_vmlinuz(&dir) {
        Some(vmlinuz) => {
            eprintln!("[{STEP}] {}: cached", vmlinuz.display());
            vmlinuz
        }
        None => {
            let deb = debs::download(vm_dir, &package, &version, arch)?;
            let mut downloaded = vec![deb];
            let binary = package.replacen("linux-image-", "linux-binary-", 1);
            if !deb_has_vmlinuz(&downloaded[0])? {
                eprintln!("[{STEP}] {package} has no vmlinuz: the image is in {binary}");
                downloaded.push(debs::download(vm_dir, &binary, &version, arch)?);
            }
            extract(vm_dir, &downloaded, &package, &dir, keep)?
        }
    };
    let image = match arch {
        Arch::X86_64 => vmlinuz.clone(),
        Arch::Arm64 => arm64_image(&vmlinuz, &dir.join("boot/Image"))?,
    };
    Ok(Kernel {
        label: series.label,
        arch,
        package,
        version,
        vmlinuz,
        image,
    })
}

/// QEMU's `-kernel` boots an arm64 `Image` but not a gzip-compressed one, which Debian's arm64
/// `vmlinuz` is: decompressed once to `image` (a plain `Image` is copied).
fn arm64_image(vmlinuz: &Path, image: &Path) -> Result<PathBuf> {
    if image.is_file() {
        return Ok(image.to_path_buf());
    }
    let mut magic = [0u8; 2];
    fs::File::open(vmlinuz)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("[vm] reading {}", vmlinuz.display()))?;
    let partial = image.with_extension("partial");
    if magic == [0x1f, 0x8b] {
        let out = fs::File::create(&partial)?;
        let status = Command::new("gzip")
            .arg("-dc")
            .arg(vmlinuz)
            .stdout(out)
            .status()
            .context("[vm] cannot run gzip")?;
        if !status.success() {
            bail!("[{STEP}] gzip -dc {} failed ({status})", vmlinuz.display());
        }
    } else {
        fs::copy(vmlinuz, &partial)?;
    }
    fs::rename(&partial, image)?;
    eprintln!("[{STEP}] extracted {}", image.display());
    Ok(image.to_path_buf())
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

/// Every cloud kernel image package of both architectures (one `apt-cache search`: each
/// apt-cache run loads the package lists).
const CLOUD_IMAGES: &str = r"^linux-image-.*-cloud-(amd64|arm64)$";

/// The newest package of each series (after an apt-get update if one has none) and its
/// candidate version.
pub fn pick_packages(series: &[&Series]) -> Result<Vec<(String, String)>> {
    let search = ["search", "--names-only", CLOUD_IMAGES];
    let mut listed = debs::apt_cache(&search)?;
    let mut found = newest_of_each(series, &listed)?;
    if found.iter().any(Option::is_none) && util::is_root() {
        eprintln!("[{STEP}] a kernel series is not in the package lists: apt-get update");
        run(STEP, &mut util::apt_get(&["update"]))?;
        listed = debs::apt_cache(&search)?;
        found = newest_of_each(series, &listed)?;
    }
    let packages = series
        .iter()
        .zip(found)
        .map(|(s, p)| {
            p.with_context(|| {
                format!(
                    "[{STEP}] no package matches {} (run apt-get update as root)",
                    s.pattern
                )
            })
        })
        .collect::<Result<Vec<String>>>()?;
    let asked: Vec<(&str, Arch)> = packages
        .iter()
        .zip(series)
        .map(|(p, s)| (p.as_str(), s.arch))
        .collect();
    let versions = debs::candidates(&asked)?;
    Ok(packages.into_iter().zip(versions).collect())
}

/// For each series, the newest of the `listed` packages its pattern matches (`grep -E`).
fn newest_of_each(series: &[&Series], listed: &str) -> Result<Vec<Option<String>>> {
    series
        .iter()
        .map(|s| {
            let mut grep = Command::new("grep");
            grep.args(["-E", "--", s.pattern])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            let mut child = grep.spawn().context("[vm] cannot run grep")?;
            let names: String = listed
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|n| format!("{n}\n"))
                .collect();
            child
                .stdin
                .take()
                .context("[vm] grep stdin")?
                .write_all(names.as_bytes())?;
            let out = child.wait_with_output()?;
            Ok(newest(&String::from_utf8_lossy(&out.stdout)))
        })
        .collect()
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
    fn all_is_every_series_marked_so_and_a_label_is_its_series() {
        let chosen = |which| select(which).iter().map(|s| s.label).collect::<Vec<_>>();
        let all: Vec<&str> = SERIES
            .iter()
            .filter(|s| s.in_all)
            .map(|s| s.label)
            .collect();
        assert_eq!(chosen("all"), all);
        assert_eq!(chosen("arm64-6.1"), ["arm64-6.1"]);
        assert!(select("arm64-6.1").iter().all(|s| s.arch == Arch::Arm64));
        assert!(chosen("7.2").is_empty());
        assert_eq!(labels().last(), Some(&"all"));
    }

    #[test]
    fn one_search_gives_the_newest_package_of_each_series() {
        let listed = "linux-image-6.1.0-9-cloud-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-57-cloud-amd64 - Linux 6.1\n\
                      linux-image-6.1.0-57-cloud-arm64 - Linux 6.1 for arm64\n\
                      linux-image-6.12.118+deb12-cloud-arm64 - Linux 6.12 for arm64\n\
                      linux-image-7.2.13+deb14-cloud-amd64 - Linux 7.2\n";
        let series: Vec<&Series> = ["6.1", "arm64-6.1", "arm64-6.12", "5.10", "newest"]
            .iter()
            .flat_map(|l| select(l))
            .collect();
        assert_eq!(
            newest_of_each(&series, listed).unwrap(),
            [
                Some("linux-image-6.1.0-57-cloud-amd64".to_string()),
                Some("linux-image-6.1.0-57-cloud-arm64".to_string()),
                Some("linux-image-6.12.118+deb12-cloud-arm64".to_string()),
                None,
                Some("linux-image-7.2.13+deb14-cloud-amd64".to_string()),
            ]
        );
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
}
