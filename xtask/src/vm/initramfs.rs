//! The `vm-test` initramfs of one architecture: busybox-static with its applet links, the agent,
//! `alloc_threads` and earlyoom with their shared libraries (`libs`), and an `/init` script
//! (`init.sh`, the same for every architecture) that starts three agents, causes the OOM kills
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

use crate::{
    cross::libs,
    vm::{
        agent::AGENTS,
        cross::{GuestBinaries, HOST_BUSYBOX},
    },
};

/// Number of single-task OOM victims in `/sys/fs/cgroup/t` (the last one has oom_score_adj 300).
pub const T_VICTIMS: usize = 3;
/// `memory.max` of both test cgroups (the `mkcg` of [`INIT_TEMPLATE`]).
pub const MEMORY_MAX: i64 = 64 << 20;
/// Tasks in the `memory.oom.group=1` cgroup `/sys/fs/cgroup/g`: two sleepers (the second with
/// oom_score_adj 500, ranked between the hog and the first) and one hog.
pub const G_VICTIMS: usize = 3;

/// Allocating threads of each multi-threaded victim in `/sys/fs/cgroup/m` (two runs: leader
/// alive, leader exited).
pub const M_THREADS: usize = 4;
/// Runs of the multi-threaded victim.
pub const M_VICTIMS: usize = 2;

/// Seconds `/init` waits for every agent to be ready before the first victim. About 10 s
/// suffice when every program loads; an older kernel's verifier that explores a program to
/// its 1M-instruction limit before refusing it (E2BIG) takes over a minute per agent under TCG
/// (`qemu::boot_timeout` leaves room for that and the rest of the run).
pub const READY_SECS: u64 = 360;

/// `/init` (`init.sh`), with `@START_AGENTS@`, `@SUFFIXES@`, `@READY_SECS@` and `@THREADS@`
/// filled in by [`init_script`]. No `set -e`: whatever fails, the results are still printed
/// and the guest powers off.
const INIT_TEMPLATE: &str = include_str!("init.sh");

/// `/init` for the agents of [`AGENTS`]: one `start_agent` line each, and their file suffixes
/// (`"" -kprobe -kmsg`) for the loops that wait for them, stop them and print their sections.
pub fn init_script() -> String {
    let start: Vec<String> = AGENTS
        .iter()
        .map(|a| {
            let line = format!(
                "start_agent {} \"{}\" {}",
                a.port,
                a.suffix,
                a.disable_args()
            );
            line.trim_end().to_string()
        })
        .collect();
    let suffixes: Vec<String> = AGENTS.iter().map(|a| format!("\"{}\"", a.suffix)).collect();
    INIT_TEMPLATE
        .replace("@THREADS@", &M_THREADS.to_string())
        .replace("@READY_SECS@", &READY_SECS.to_string())
        .replace("@START_AGENTS@", &start.join("\n"))
        .replace("@SUFFIXES@", &suffixes.join(" "))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_uses_the_memory_limit_the_check_expects() {
        assert_eq!(MEMORY_MAX, 64 << 20);
        assert!(init_script().contains("echo $((64 << 20)) > $CG/$1/memory.max"));
    }

    #[test]
    fn init_script_starts_each_agent_and_prints_every_section_the_check_reads() {
        let script = init_script();
        for tag in ["@START_AGENTS@", "@SUFFIXES@", "@READY_SECS@", "@THREADS@"] {
            assert!(!script.contains(tag), "{tag} left in /init");
        }
        assert!(script.contains(
            "start_agent 9838 \"-kprobe\" --disable-probe fentry:oom_kill_process \
             --disable-probe fexit:oom_badness\n"
        ));
        assert!(script.contains(
            "start_agent 9839 \"-kmsg\" --disable-probe fentry:oom_kill_process \
             --disable-probe kprobe:oom_kill_process --disable-probe fexit:oom_badness \
             --disable-probe kretprobe:oom_badness\n"
        ));
        assert!(script.contains("start_agent 9837 \"\"\n"));
        assert_eq!(
            script
                .matches("for s in \"\" \"-kprobe\" \"-kmsg\"; do")
                .count(),
            5
        );
        for name in crate::vm::console::BOOT_SECTIONS {
            assert!(
                script.contains(&format!("begin {name};"))
                    || script.contains(&format!("begin {name}\n")),
                "init script lacks section {name}"
            );
        }
        for name in crate::vm::console::AGENT_SECTIONS {
            assert!(
                script.contains(&format!("begin {name}$s;")),
                "init script lacks section {name}$s"
            );
        }
    }
}
