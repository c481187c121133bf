//! The shared libraries a binary needs, and where a root file system (the `vm-test` initramfs,
//! the OCI image) puts them: for the host's architecture the paths `ldd` prints (copied from the
//! host to the same paths); for another one, `ldd` cannot run the binary: its `NEEDED` entries
//! (`readelf -d`, followed through the libraries themselves) come from the cross toolchain's C
//! library (`Arch::sysroot`) and go to `/lib`, and its interpreter (`readelf -l`) to the path it
//! names.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// One library: the host file and its path in the guest (the root file system).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Library {
    pub host: PathBuf,
    pub guest: PathBuf,
}

/// The libraries of `binary`, from the host (`sysroot` `None`) or from `sysroot`.
pub fn of(binary: &Path, sysroot: Option<&Path>) -> Result<Vec<Library>> {
    match sysroot {
        None => Ok(ldd_paths(binary)?
            .into_iter()
            .map(|p| Library {
                host: p.clone(),
                guest: p,
            })
            .collect()),
        Some(root) => from_sysroot(binary, root),
    }
}

/// Absolute paths of the libraries `ldd BINARY` lists (`name => /path (addr)` or `/path (addr)`).
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn ldd_paths(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not found") {
        bail!(
            "ldd {} failed or names a missing library:\n{text}",
            binary.display()
        );
    }
    Ok(parse_ldd(&text))
}

/// `NEEDED` libraries of `binary` and of each of them, in `/lib`, and the interpreter.
fn from_sysroot(binary: &Path, sysroot: &Path) -> Result<Vec<Library>> {
    let mut found = BTreeSet::new();
    let mut todo = vec![binary.to_path_buf()];
    while let Some(file) = todo.pop() {
        let (needed, interpreter) = parse_readelf(&readelf("-d", &file)?, &readelf("-l", &file)?);
        for name in needed {
            let lib = Library {
                host: sysroot.join(&name),
                guest: Path::new("/lib").join(&name),
            };
            if !lib.host.is_file() {
                bail!(
                    "{} needs {name}, not in {}",
                    file.display(),
                    sysroot.display()
                );
            }
            if found.insert(lib.clone()) {
                todo.push(lib.host);
            }
        }
        if let Some(interp) = interpreter {
            let name = Path::new(&interp)
                .file_name()
                .context("an interpreter without a file name")?;
            found.insert(Library {
                host: sysroot.join(name),
                guest: PathBuf::from(interp),
            });
        }
    }
    Ok(found.into_iter().collect())
}

/// `Shared library: [libc.so.6]` lines of `readelf -d`, and the `Requesting program
/// interpreter: /lib/ld-linux-aarch64.so.1` of `readelf -l`.
fn parse_readelf(dynamic: &str, program_headers: &str) -> (Vec<String>, Option<String>) {
    let bracketed = |l: &str, key: &str| -> Option<String> {
        let rest = &l[l.find(key)? + key.len()..];
        Some(rest.split(']').next()?.trim().to_string())
    };
    let needed = dynamic
        .lines()
        .filter_map(|l| bracketed(l, "Shared library: ["))
        .collect();
    let interpreter = program_headers
        .lines()
        .find_map(|l| bracketed(l, "Requesting program interpreter:"));
    (needed, interpreter)
}

/// The host's `readelf` reads any architecture's ELF files.
fn readelf(flag: &str, file: &Path) -> Result<String> {
    let out = Command::new("readelf")
        .arg(flag)
        .arg(file)
        .output()
        .context("cannot run readelf")?;
    if !out.status.success() {
        bail!("readelf {flag} {} failed", file.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007fb4bd0bd000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fb4bd08c000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fb4bca1e000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007fb4bd0bf000)\n";
        assert_eq!(
            parse_ldd(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn readelf_output_gives_libraries_and_interpreter() {
        let dynamic = " 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n \
                       0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n \
                       0x000000000000000c (INIT)               0x1c000\n";
        let headers = "  INTERP         0x0000000000000238 0x0000000000000238\n      \
                       [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]\n";
        let (needed, interp) = parse_readelf(dynamic, headers);
        assert_eq!(needed, ["libgcc_s.so.1", "libc.so.6"]);
        assert_eq!(interp.as_deref(), Some("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(parse_readelf("", ""), (vec![], None));
    }

    #[test]
    fn a_foreign_binarys_libraries_come_from_the_cross_c_library() {
        // On an arm64 host, arm64 is the host's: nothing is cross-built.
        let Some(sysroot) = crate::cross::Arch::Arm64.sysroot() else {
            return;
        };
        let lib = sysroot.join("libgcc_s.so.1");
        if !lib.is_file() {
            oomwatch_testkit::skip(format!(
                "{} missing (Debian's libgcc-s1-arm64-cross, installed with the cross toolchain)",
                lib.display()
            ));
            return;
        }
        let found = of(&lib, Some(sysroot.as_path())).unwrap();
        let guest: Vec<&Path> = found.iter().map(|l| l.guest.as_path()).collect();
        assert_eq!(
            guest,
            ["/lib/ld-linux-aarch64.so.1", "/lib/libc.so.6"].map(Path::new)
        );
        for l in &found {
            assert_eq!(l.host.parent(), Some(sysroot.as_path()), "{l:?}");
        }
    }
}
