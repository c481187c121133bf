//! Debian packages `vm-test` takes files from without installing them (kernels, earlyoom, the
//! arm64 busybox): their candidate version, `apt-get download` into `target/vm/debs/` (cached),
//! `dpkg-deb -x`. A package of another architecture than the host's is `name:arm64` to apt.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result};

use super::{arch::Arch, STEP};
use crate::util::{self, run};

pub fn apt_cache(args: &[&str]) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(args)
        .output()
        .context("[vm] cannot run apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The candidate version of `package` for `arch` (`apt-cache policy`).
pub fn candidate(package: &str, arch: Arch) -> Result<String> {
    candidates(&[(package, arch)]).map(|mut v| v.remove(0))
}

/// The candidate versions of several packages, in one `apt-cache policy` (each apt-cache run
/// loads the package lists: seconds).
pub fn candidates(packages: &[(&str, Arch)]) -> Result<Vec<String>> {
    let names: Vec<String> = packages.iter().map(|(p, a)| a.apt_name(p)).collect();
    let mut args = vec!["policy"];
    args.extend(names.iter().map(String::as_str));
    let policy = parse_policy(&apt_cache(&args)?);
    names
        .iter()
        .map(|name| {
            policy
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.clone())
                .with_context(|| format!("[vm] {name} has no installation candidate"))
        })
        .collect()
}

/// `NAME:` (as asked, `name:arm64` for a foreign one) and its `Candidate:` of `apt-cache
/// policy` output; `None` for `(none)`.
fn parse_policy(text: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.trim_end().strip_suffix(':') {
                out.push((name.to_string(), None));
            }
        } else if let Some(v) = line.trim().strip_prefix("Candidate:") {
            if let Some(last) = out.last_mut() {
                last.1 = Some(v.trim().to_string()).filter(|v| v != "(none)");
            }
        }
    }
    out
}

/// The package's .deb in `vm_dir/debs`, downloaded unless cached.
pub fn download(vm_dir: &Path, package: &str, version: &str, arch: Arch) -> Result<PathBuf> {
    let debs = vm_dir.join("debs");
    fs::create_dir_all(&debs)?;
    if let Some(deb) = find_deb(&debs, package, version, arch) {
        eprintln!("[{STEP}] {}: cached", deb.display());
        return Ok(deb);
    }
    let t = Instant::now();
    let spec = format!("{}={version}", arch.apt_name(package));
    run(STEP, util::apt_get(&["download", &spec]).current_dir(&debs))?;
    let deb = find_deb(&debs, package, version, arch)
        .with_context(|| format!("[vm] apt-get download wrote no {spec} .deb"))?;
    eprintln!(
        "[{STEP}] downloaded {} ({} KiB, {:.1}s)",
        deb.display(),
        fs::metadata(&deb)?.len() >> 10,
        t.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// `dpkg-deb -x DEB DIR` into a fresh `dir`.
pub fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    run(STEP, Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
        .with_context(|| format!("[vm] unpacking {}", deb.display()))
}

/// `apt-get download` names files `PKG_VERSION_ARCH.deb`, percent-encoding `:` (and maybe
/// `+` or `~`): compare decoded names.
fn find_deb(dir: &Path, package: &str, version: &str, arch: Arch) -> Option<PathBuf> {
    let want = deb_name(package, version, arch);
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| percent_decode(n) == want)
        })
}

fn deb_name(package: &str, version: &str, arch: Arch) -> String {
    format!("{package}_{version}_{}.deb", arch.deb())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_of_native_and_foreign_packages() {
        let policy = "linux-image-6.1.0-57-cloud-amd64:\n  Installed: (none)\n  \
                      Candidate: 6.1.192-3\n  Version table:\n     6.1.192-3 500\n        \
                      500 http://deb.debian.org/debian-security bookworm-security/main amd64 \
                      Packages\nearlyoom:arm64:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(
            parse_policy(policy),
            [
                (
                    "linux-image-6.1.0-57-cloud-amd64".to_string(),
                    Some("6.1.192-3".to_string())
                ),
                ("earlyoom:arm64".to_string(), None)
            ]
        );
    }

    #[test]
    fn deb_names_are_percent_decoded() {
        assert_eq!(
            percent_decode(
                "linux-image-6.12.117%2bdeb12-cloud-amd64_1%3a6.12.117-1%7edeb12u1_amd64.deb"
            ),
            deb_name(
                "linux-image-6.12.117+deb12-cloud-amd64",
                "1:6.12.117-1~deb12u1",
                Arch::X86_64
            )
        );
        assert_eq!(
            percent_decode("busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"),
            deb_name("busybox-static", "1:1.35.0-4+deb12u1+b1", Arch::Arm64)
        );
        assert_eq!(percent_decode("a%zz%"), "a%zz%");
    }
}
