//! `cargo xtask vm-test-arm64 [--keep]`: the agent on an arm64 kernel (Debian 12's newest 6.1
//! `cloud-arm64` image) in QEMU (`qemu-system-aarch64 -M virt`, TCG).
//!
//! The host downloads the kernel and `busybox-static:arm64` (`apt-get download`, cached under
//! `target/vm-arm64/`), cross-builds the release agent for `aarch64-unknown-linux-gnu` with
//! Debian's rustc and `aarch64-linux-gnu-gcc` (`target/cross/`) around an eBPF object built
//! for arm64's `pt_regs` (`oomwatch-ebpf/target/aarch64/`: the host's object makes the kprobe
//! rows read x86-64 registers, attached but silent), and packs both, the agent's libraries and [`INIT`] into an initramfs.
//! The guest starts the agent, causes one memory-cgroup OOM kill (`tail /dev/zero` under a
//! 32 MiB `memory.max`) and one `kill -9` from a shell, then prints the agent's output and the
//! kernel's "Killed process" lines between `@@OWVM` markers. The host checks the console
//! ([`check_console`]): the probe rows, the OOM event against the kernel's line, its trigger
//! stack, and the `sigkill` lines of both kills; it prints a table and fails on any mismatch.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    console::{agent_problems, parse_killed, probe_status, Console, KernelKill, REQUIRED_PROBES},
    initramfs::write_cpio_gz,
    kernel::ensure_packages,
};
use crate::util::{self, run};

const STEP: &str = "vm-arm64";
/// What the test needs on the host: the emulator, the cross linker and its C library, Debian's
/// Rust standard library for arm64 (for `/usr/bin/rustc`), cpio.
const PACKAGES: [&str; 4] = [
    "qemu-system-arm",
    "gcc-aarch64-linux-gnu",
    "libstd-rust-web-dev:arm64",
    "cpio",
];
/// `apt-cache search --names-only` pattern of the kernels (the newest one is booted).
const KERNEL_PATTERN: &str = r"^linux-image-6\.1\.0-[0-9]+-cloud-arm64$";
const BUSYBOX_PACKAGE: &str = "busybox-static";
const RUST_TARGET: &str = "aarch64-unknown-linux-gnu";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const LINKER: &str = "aarch64-linux-gnu-gcc";
const READELF: &str = "aarch64-linux-gnu-readelf";
/// The arm64 C library the cross linker links against (package `libc6-arm64-cross`).
const CROSS_LIBS: &str = "/usr/aarch64-linux-gnu/lib";
const QEMU: &str = "qemu-system-aarch64";
/// TCG emulation of aarch64 is slow: boot, eBPF verification and the kills get 30 minutes.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1800);
/// ELF `e_machine` of AArch64.
const EM_AARCH64: u16 = 183;
/// `memory.max` of the OOM victim's cgroup `/oom` (32 MiB, also in [`INIT`]).
const MEMORY_MAX: i64 = 32 << 20;
/// The page size of Debian's arm64 kernels.
const PAGE_SIZE: i64 = 4096;

/// The guest's `/init`. The agent runs as the brief of the amd64 matrix does (JSON log, so its
/// probe rows can be read); `/victims` gets `NAME PID STATUS` for the OOM victim (`oom`, in
/// `/oom`) and the `kill -9`ed sleeper (`kill`, in `/kill`).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Kernel messages stay off the console (they would split the sections); read back with dmesg.
dmesg -n 1
ip link set lo up
hostname oomwatch-arm64
CG=/sys/fs/cgroup
say() { echo "OWVM: $*"; }
begin() { echo "@@OWVM BEGIN $1@@"; }
end() { echo "@@OWVM END $1@@"; }
up() { cut -d' ' -f1 /proc/uptime; }
say "init running on $(uname -r) $(uname -m) at uptime $(up)s"
echo +memory > $CG/cgroup.subtree_control || say "cannot enable the memory controller"
mkdir -p /tmp/s
/oomwatch run --listen 127.0.0.1:9837 --state-dir /tmp/s --log-format json \
    --log-level debug,aya_obj=info > /events.jsonl 2> /agent.log &
agent=$!
start=$(cut -d. -f1 /proc/uptime)
while ! grep -qs "probes ready" /agent.log; do
    if ! kill -0 $agent 2>/dev/null; then say "agent exited before it was ready"; break; fi
    if [ $(($(cut -d. -f1 /proc/uptime) - start)) -gt 1200 ]; then say "agent not ready after 1200 s"; break; fi
    sleep 1
done
say "agent ready at uptime $(up)s"

# A memory-cgroup OOM kill: busybox tail keeps all of /dev/zero (no newline) in memory.
mkdir $CG/oom
echo $((32 << 20)) > $CG/oom/memory.max
if [ -f $CG/oom/memory.swap.max ]; then echo 0 > $CG/oom/memory.swap.max; fi
sh -c "echo \$\$ > $CG/oom/cgroup.procs && exec tail /dev/zero" > /dev/null &
p=$!
wait $p
s=$?
echo "oom $p $s" >> /victims
say "tail $p in /oom exited with status $s at uptime $(up)s"

# A SIGKILL from a shell: a sleeper in /kill, killed with kill -9 by another sh.
mkdir $CG/kill
sh -c "echo \$\$ > $CG/kill/cgroup.procs && exec sleep 1000" &
p=$!
i=0
while ! grep -qx $p $CG/kill/cgroup.procs && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
sleep 1
sh -c "kill -9 $p"
wait $p
s=$?
echo "kill $p $s" >> /victims
say "sleep $p in /kill exited with status $s at uptime $(up)s"

# Both sigkill lines and the OOM event, or 120 s.
i=0
while [ $(grep -c '"type":"sigkill"' /events.jsonl) -lt 2 ] && [ $i -lt 120 ]; do i=$((i + 1)); sleep 1; done
sleep 2
kill -TERM $agent
wait $agent
echo $? > /agent.exit
say "agent exited with status $(cat /agent.exit)"

begin victims; cat /victims; end victims
begin events; cat /events.jsonl; end events
begin agent-log; cat /agent.log; end agent-log
begin agent-exit; cat /agent.exit; end agent-exit
begin dmesg; dmesg | grep -e 'Killed process' -e 'invoked oom-killer' -e 'type=1326'; end dmesg
begin uptime; cat /proc/uptime; end uptime
echo "@@OWVM DONE@@"
poweroff -f
"#;

/// The whole test: prepare, build, boot, check, report.
pub fn vm_test_arm64(keep: bool) -> Result<()> {
    let started = Instant::now();
    let dir = crate::target_dir().join("vm-arm64");
    fs::create_dir_all(&dir).with_context(|| format!("[{STEP}] creating {}", dir.display()))?;
    ensure_packages(&PACKAGES)?;
    let kernel = fetch_kernel(&dir, keep)?;
    let busybox = fetch_busybox(&dir)?;
    let agent = cross_build()?;
    let initrd = build_initramfs(&agent, &busybox, &dir, keep)?;
    let log_path = dir.join(&kernel.release).join("console.log");
    let boot = boot(&kernel, &initrd, &log_path)?;
    let mut rows = vec![qemu_row(&boot)];
    let console = Console::parse(&boot.console);
    rows.extend(check_console(&console));
    print_probes(&console);
    print_rows(&rows);
    eprintln!(
        "[{STEP}] {}: boot to poweroff {:.1}s, total {:.1}s; console: {}",
        kernel.release,
        boot.secs,
        started.elapsed().as_secs_f64(),
        log_path.display()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        if !console.done {
            print_tail(&boot.console);
        }
        bail!(
            "[{STEP}] FAILED on {}: {}",
            kernel.release,
            failed.join(", ")
        );
    }
    eprintln!("[{STEP}] all checks passed on {}", kernel.release);
    Ok(())
}

/// The arm64 kernel to boot: its package and the uncompressed `Image` QEMU's `-kernel` takes.
struct ArmKernel {
    release: String,
    version: String,
    image: PathBuf,
}

/// The newest [`KERNEL_PATTERN`] package, downloaded and its image extracted (both cached) as
/// `target/vm-arm64/<release>/Image`.
fn fetch_kernel(dir: &Path, keep: bool) -> Result<ArmKernel> {
    let search = apt_cache(&["search", "--names-only", KERNEL_PATTERN])?;
    let package = newest(&search).with_context(|| {
        format!("[{STEP}] no package matches {KERNEL_PATTERN} (run apt-get update as root)")
    })?;
    let version = candidate(&package)?;
    let release = package.trim_start_matches("linux-image-").to_string();
    let image = dir.join(&release).join("Image");
    if image.is_file() {
        eprintln!(
            "[{STEP}] kernel {package} {version}: {} cached",
            image.display()
        );
        return Ok(ArmKernel {
            release,
            version,
            image,
        });
    }
    let deb = download(dir, &package, &version)?;
    let unpacked = dir.join(format!("{package}.partial"));
    unpack(&deb, &unpacked)?;
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    fs::create_dir_all(dir.join(&release))?;
    write_image(&vmlinuz, &image)?;
    if !keep {
        fs::remove_dir_all(&unpacked)?;
    }
    eprintln!("[{STEP}] kernel {package} {version}: {}", image.display());
    Ok(ArmKernel {
        release,
        version,
        image,
    })
}

/// QEMU's `-kernel` boots an arm64 `Image` but not a gzip-compressed one: `vmlinuz` is copied,
/// or decompressed with `zcat` when it starts with gzip's magic.
fn write_image(vmlinuz: &Path, image: &Path) -> Result<()> {
    let mut magic = [0u8; 2];
    fs::File::open(vmlinuz)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("[{STEP}] reading {}", vmlinuz.display()))?;
    if magic == [0x1f, 0x8b] {
        let out = fs::File::create(image)?;
        let status = Command::new("zcat")
            .arg(vmlinuz)
            .stdout(out)
            .status()
            .context("[vm-arm64] cannot run zcat")?;
        if !status.success() {
            bail!("[{STEP}] zcat {} failed ({status})", vmlinuz.display());
        }
    } else {
        fs::copy(vmlinuz, image)
            .with_context(|| format!("[{STEP}] copying {}", vmlinuz.display()))?;
    }
    Ok(())
}

/// `busybox-static:arm64`'s `bin/busybox` (cached under `target/vm-arm64/busybox/`).
fn fetch_busybox(dir: &Path) -> Result<PathBuf> {
    let version = candidate(BUSYBOX_PACKAGE)?;
    let root = dir.join(format!("busybox-{version}"));
    let busybox = root.join("bin/busybox");
    if busybox.is_file() {
        eprintln!("[{STEP}] {}: cached", busybox.display());
        return Ok(busybox);
    }
    let deb = download(dir, BUSYBOX_PACKAGE, &version)?;
    unpack(&deb, &root)?;
    require_aarch64(&busybox)?;
    Ok(busybox)
}

fn apt_cache(args: &[&str]) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(args)
        .output()
        .context("[vm-arm64] cannot run apt-cache")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Numeric components of a package name, for "newest" ordering (6.1.0-57 > 6.1.0-9).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

/// The newest package name of `apt-cache search --names-only` output.
fn newest(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

/// The candidate version of `package:arm64` (`apt-cache policy`).
fn candidate(package: &str) -> Result<String> {
    let policy = apt_cache(&["policy", &format!("{package}:arm64")])?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| v != "(none)")
        .with_context(|| {
            format!("[{STEP}] {package}:arm64 has no candidate (is arm64 a dpkg architecture?)")
        })
}

/// `package:arm64=version`'s .deb in `dir/debs`, downloaded unless cached.
fn download(dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let want = format!("{package}_{version}_arm64.deb");
    let find = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| deb_name_decoded(n) == want)
            }))
    };
    if let Some(deb) = find()? {
        eprintln!("[{STEP}] {}: cached", deb.display());
        return Ok(deb);
    }
    let t = Instant::now();
    run(
        STEP,
        util::apt_get(&["download", &format!("{package}:arm64={version}")]).current_dir(&debs),
    )?;
    let deb = find()?.with_context(|| format!("[{STEP}] apt-get download wrote no {want}"))?;
    eprintln!(
        "[{STEP}] downloaded {} ({} KiB, {:.1}s)",
        deb.display(),
        fs::metadata(&deb)?.len() >> 10,
        t.elapsed().as_secs_f64()
    );
    Ok(deb)
}

/// apt-get download's file names percent-encode `:`, `+` and `~` of the version.
fn deb_name_decoded(name: &str) -> String {
    let mut out = name.to_string();
    for (code, c) in [("%3a", ":"), ("%2b", "+"), ("%7e", "~")] {
        out = out.replace(code, c).replace(&code.to_uppercase(), c);
    }
    out
}

/// `dpkg-deb -x DEB DIR` into a fresh `dir`.
fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    run(STEP, Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))
        .with_context(|| format!("[{STEP}] unpacking {}", deb.display()))
}

/// The eBPF object for arm64 (`ebpf::build_ebpf_for_arch`), then the release agent embedding it
/// for [`RUST_TARGET`] with Debian's cargo and rustc (whose arm64 standard library is
/// `libstd-rust-web-dev:arm64`) into `target/cross/`.
fn cross_build() -> Result<PathBuf> {
    let object =
        crate::ebpf::build_ebpf_for_arch("aarch64").context("[vm-arm64] step build-ebpf")?;
    let target_dir = crate::target_dir().join("cross");
    let mut cmd = Command::new(DEBIAN_CARGO);
    util::scrub_cargo_env(&mut cmd);
    cmd.args([
        "build",
        "--release",
        "-p",
        "oomwatch",
        "--target",
        RUST_TARGET,
    ])
    .env("RUSTC", DEBIAN_RUSTC)
    .env("CARGO_TARGET_DIR", &target_dir)
    .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", LINKER)
    .env("OOMWATCH_EBPF_OBJECT", &object)
    .current_dir(util::repo_root());
    let t = Instant::now();
    run(STEP, &mut cmd).context("[vm-arm64] step cross-build of the agent")?;
    let binary = target_dir.join(RUST_TARGET).join("release/oomwatch");
    require_aarch64(&binary)?;
    eprintln!(
        "[{STEP}] agent {} ({} KiB, {:.1}s)",
        binary.display(),
        fs::metadata(&binary)?.len() >> 10,
        t.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// The file is a little-endian ELF for AArch64 (`e_machine` at offset 18).
fn require_aarch64(path: &Path) -> Result<()> {
    let mut header = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("[{STEP}] reading {}", path.display()))?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || machine != EM_AARCH64 {
        bail!(
            "[{STEP}] {} is not an AArch64 ELF (e_machine {machine})",
            path.display()
        );
    }
    Ok(())
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

fn readelf(flag: &str, binary: &Path) -> Result<String> {
    let out = Command::new(READELF)
        .arg(flag)
        .arg(binary)
        .output()
        .with_context(|| format!("[{STEP}] cannot run {READELF}"))?;
    if !out.status.success() {
        bail!("[{STEP}] {READELF} {flag} {} failed", binary.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `target/vm-arm64/initrd.cpio.gz`: busybox (its applets linked by `/init` itself: the host
/// cannot run it), the agent as `/oomwatch`, the libraries it needs from [`CROSS_LIBS`] in
/// `/lib` (and its interpreter at its path), [`INIT`] as `/init`.
fn build_initramfs(agent: &Path, busybox: &Path, dir: &Path, keep: bool) -> Result<PathBuf> {
    let staging = dir.join("initramfs");
    let out = dir.join("initrd.cpio.gz");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root", "lib",
    ] {
        fs::create_dir_all(staging.join(d))?;
    }
    copy(busybox, &staging.join("bin/busybox"))?;
    copy(agent, &staging.join("oomwatch"))?;
    let (needed, interpreter) = parse_readelf(&readelf("-d", agent)?, &readelf("-l", agent)?);
    for lib in &needed {
        copy(
            &Path::new(CROSS_LIBS).join(lib),
            &staging.join("lib").join(lib),
        )?;
    }
    if let Some(interp) = &interpreter {
        let name = Path::new(interp)
            .file_name()
            .context("[vm-arm64] interpreter without a file name")?;
        let dest = staging.join(interp.trim_start_matches('/'));
        copy(&Path::new(CROSS_LIBS).join(name), &dest)?;
    }
    let init = staging.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    write_cpio_gz(&staging, &out)?;
    if !keep {
        fs::remove_dir_all(&staging)?;
    }
    eprintln!(
        "[{STEP}] initramfs {} ({} KiB): busybox, oomwatch, libraries {} (interpreter {})",
        out.display(),
        fs::metadata(&out)?.len() >> 10,
        needed.join(" "),
        interpreter.as_deref().unwrap_or("none")
    );
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to).with_context(|| {
        format!(
            "[{STEP}] cannot copy {} to {}",
            from.display(),
            to.display()
        )
    })?;
    Ok(())
}

/// One boot's result.
struct Boot {
    /// `None` when QEMU was killed at the timeout.
    status: Option<ExitStatus>,
    secs: f64,
    console: String,
}

/// Boot `k` with `initrd` (serial console `ttyAMA0`, also written to `log_path`); `OWVM: `
/// lines are echoed as they come.
fn boot(k: &ArmKernel, initrd: &Path, log_path: &Path) -> Result<Boot> {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-M", "virt", "-cpu", "max", "-accel", "tcg"])
        .args(["-m", "1G", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&k.image)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyAMA0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!(
        "[{STEP}] booting {} ({}), timeout {}s: $ {}",
        k.release,
        k.version,
        BOOT_TIMEOUT.as_secs(),
        util::describe(&cmd)
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("[{STEP}] cannot start {QEMU}"))?;
    let stdout = child.stdout.take().context("[vm-arm64] qemu stdout")?;
    let mut log = fs::File::create(log_path)
        .with_context(|| format!("[{STEP}] cannot create {}", log_path.display()))?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let mut lines = BufReader::new(stdout).split(b'\n');
        while let Some(Ok(bytes)) = lines.next() {
            let line = String::from_utf8_lossy(&bytes);
            let _ = writeln!(log, "{}", line.trim_end_matches('\r'));
            if let Some((_, msg)) = line.trim_end().split_once("OWVM: ") {
                eprintln!(
                    "[{STEP}] guest ({:.0}s): {msg}",
                    started.elapsed().as_secs_f64()
                );
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let secs = started.elapsed().as_secs_f64();
    let console = reader
        .join()
        .map_err(|_| anyhow::anyhow!("[{STEP}] console reader panicked"))?;
    Ok(Boot {
        status,
        secs,
        console,
    })
}

/// One line of the report.
#[derive(Debug)]
struct Row {
    name: String,
    ok: bool,
    detail: String,
}

fn row(name: &str, problems: Vec<String>, detail: String) -> Row {
    Row {
        name: name.to_string(),
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            detail
        } else {
            problems.join("; ")
        },
    }
}

fn qemu_row(boot: &Boot) -> Row {
    Row {
        name: "qemu".into(),
        ok: boot.status.is_some_and(|s| s.success()),
        detail: match boot.status {
            Some(s) => format!("exited ({s}) after {:.1}s", boot.secs),
            None => format!("killed after the {}s timeout", BOOT_TIMEOUT.as_secs()),
        },
    }
}

/// `NAME PID STATUS` lines of the `victims` section.
fn victim(console: &Console, name: &str) -> Option<(i64, i64)> {
    console.section("victims").iter().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == name).then_some(())?;
        Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
    })
}

/// The JSON lines of the `events` section.
fn events(console: &Console) -> Vec<Value> {
    console
        .section("events")
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Every check of the guest's console (without QEMU's exit, see [`qemu_row`]).
fn check_console(console: &Console) -> Vec<Row> {
    let events = events(console);
    let oom = victim(console, "oom");
    let killed = victim(console, "kill");
    let kernel_kills: Vec<KernelKill> = console
        .section("dmesg")
        .iter()
        .filter_map(|l| parse_killed(l))
        .collect();
    let mut rows = vec![
        row(
            "console",
            if console.done {
                vec![]
            } else {
                vec!["the guest never printed @@OWVM DONE@@".into()]
            },
            format!("{} sections", console.sections.len()),
        ),
        check_probes(console),
    ];
    let (oom_pid, kill_pid) = match (oom, killed) {
        (Some(o), Some(k)) => (o, k),
        _ => {
            rows.push(row(
                "victims",
                vec![format!(
                    "no oom and kill lines in the victims section: {oom:?} {killed:?}"
                )],
                String::new(),
            ));
            return rows;
        }
    };
    rows.push(check_victims(oom_pid, kill_pid));
    let event = oom_event(&events, oom_pid.0);
    rows.push(check_event(&event, oom_pid.0));
    if let Ok(e) = &event {
        rows.push(check_constraint(e));
        rows.push(check_stack(e));
        rows.push(check_rss(e, &kernel_kills));
    }
    let oom_id = event
        .as_ref()
        .ok()
        .and_then(|e| e.get("oom_id").and_then(Value::as_u64));
    rows.push(check_sigkill(
        "sigkill of the OOM kill",
        &events,
        oom_pid.0,
        "oom_kernel",
        oom_id,
    ));
    rows.push(check_sigkill(
        "sigkill of kill -9",
        &events,
        kill_pid.0,
        "other",
        None,
    ));
    rows.push(check_seccomp(console));
    rows.push(check_agent_exit(console));
    rows
}

/// The agent's seccomp filter (arm64's system call numbers) refused nothing: no `audit:
/// type=1326` line (`SECCOMP_FILTER_FLAG_LOG`) in the kernel log.
fn check_seccomp(console: &Console) -> Row {
    let refused: Vec<String> = console
        .section("dmesg")
        .iter()
        .filter(|l| l.contains("type=1326"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            format!("{} syscall={}", field("comm="), field("syscall="))
        })
        .collect();
    let problems = if refused.is_empty() {
        vec![]
    } else {
        vec![format!("seccomp refused: {}", refused.join(", "))]
    };
    row(
        "seccomp",
        problems,
        "no system call refused (no audit type=1326 line)".into(),
    )
}

/// The rows the amd64 matrix requires ([`REQUIRED_PROBES`]) attached; every row in the detail.
fn check_probes(console: &Console) -> Row {
    let log = console.section("agent-log");
    let status = probe_status(log);
    let ready = log.iter().any(|l| l.contains("probes ready"));
    let attached: Vec<&str> = status
        .iter()
        .filter(|(_, s)| s.0)
        .map(|(p, _)| p.as_str())
        .collect();
    let mut problems: Vec<String> = REQUIRED_PROBES
        .iter()
        .filter(|p| !status.get(**p).is_some_and(|s| s.0))
        .map(|p| format!("{p} not attached"))
        .collect();
    if !ready {
        problems.push("the agent never logged \"probes ready\"".into());
    }
    problems.extend(
        silent_probes(log)
            .into_iter()
            .map(|p| format!("{p} attached but silent (an eBPF object for another architecture?)")),
    );
    if !problems.is_empty() {
        problems.push(format!("attached: {}", attached.join(" ")));
    }
    row(
        "probes",
        problems,
        format!(
            "{} of {} rows attached: {}",
            attached.len(),
            status.len(),
            attached.join(" ")
        ),
    )
}

/// Rows the agent found attached but silent after an OOM kill (`probe attached but silent`):
/// a kprobe reading another architecture's `pt_regs` is one.
fn silent_probes(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| str_at(v, "/fields/message").starts_with("probe attached but silent"))
        .map(|v| str_at(&v, "/fields/probe").to_string())
        .collect()
}

/// Both victims died of SIGKILL (`wait` status 137).
fn check_victims(oom: (i64, i64), kill: (i64, i64)) -> Row {
    let problems = [("tail", oom), ("sleep", kill)]
        .iter()
        .filter(|(_, (_, status))| *status != 137)
        .map(|(comm, (pid, status))| format!("{comm} {pid} exited with status {status}, not 137"))
        .collect();
    row(
        "victims",
        problems,
        format!(
            "tail {} and sleep {} exited with 137 (SIGKILL)",
            oom.0, kill.0
        ),
    )
}

/// The one OOM event (a line without `type`) of `pid`.
fn oom_event(events: &[Value], pid: i64) -> Result<Value, String> {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("type").is_none() && e.get("pid").and_then(Value::as_i64) == Some(pid))
        .collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        other => Err(format!("{} OOM events for pid {pid}, not 1", other.len())),
    }
}

fn check_event(event: &Result<Value, String>, pid: i64) -> Row {
    let e = match event {
        Ok(e) => e,
        Err(problem) => return row("oom event", vec![problem.clone()], String::new()),
    };
    let mut problems = Vec::new();
    for (field, want) in [
        ("/comm", "tail"),
        ("/cgroup", "/oom"),
        ("/killer", "kernel"),
    ] {
        let got = str_at(e, field);
        if got != want {
            problems.push(format!("{field} {got:?}, expected {want:?}"));
        }
    }
    row(
        "oom event",
        problems,
        format!(
            "pid {pid} comm tail cgroup /oom killer kernel oom_id {}",
            e.get("oom_id").unwrap_or(&Value::Null)
        ),
    )
}

fn check_constraint(e: &Value) -> Row {
    let constraint = str_at(e, "/constraint");
    let mut problems = Vec::new();
    if constraint != "CONSTRAINT_MEMCG" {
        problems.push(format!(
            "constraint {constraint:?}, expected CONSTRAINT_MEMCG"
        ));
    }
    // The kernel-log source gives no totalpages; a probe's must be memory.max in pages.
    let totalpages = e.get("totalpages").and_then(Value::as_i64);
    if totalpages.is_some_and(|t| t != MEMORY_MAX / PAGE_SIZE) {
        problems.push(format!(
            "totalpages {totalpages:?}, expected {} (memory.max)",
            MEMORY_MAX / PAGE_SIZE
        ));
    }
    row(
        "constraint",
        problems,
        format!(
            "CONSTRAINT_MEMCG from {} (candidates from {}); oom_memcg {}, totalpages {}, \
             badness {}",
            str_at(e, "/sources/oom"),
            str_at(e, "/sources/candidates"),
            e.get("oom_memcg").unwrap_or(&Value::Null),
            e.get("totalpages").unwrap_or(&Value::Null),
            e.get("badness").unwrap_or(&Value::Null),
        ),
    )
}

/// `trigger.stack.kernel` is symbolized and goes through the OOM killer.
fn check_stack(e: &Value) -> Row {
    let frames: Vec<&str> = e
        .pointer("/trigger/stack/kernel")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|f| f.get("symbol").and_then(Value::as_str).unwrap_or("?"))
                .collect()
        })
        .unwrap_or_default();
    let through = frames
        .iter()
        .any(|f| *f == "mem_cgroup_out_of_memory" || *f == "out_of_memory");
    let problems = if through {
        vec![]
    } else {
        vec![format!(
            "trigger.stack.kernel has no mem_cgroup_out_of_memory/out_of_memory frame: [{}]",
            frames.join(" <- ")
        )]
    };
    row(
        "trigger stack",
        problems,
        format!(
            "{} kernel frames: {}",
            frames.len(),
            frames
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join(" <- ")
        ),
    )
}

/// The event's RSS (bytes) equal the kernel's "Killed process" line (kB) for the same pid.
fn check_rss(e: &Value, kills: &[KernelKill]) -> Row {
    let pid = e.get("pid").and_then(Value::as_i64).unwrap_or(-1);
    let Some(k) = kills.iter().find(|k| k.pid == pid) else {
        return row(
            "rss",
            vec![format!("no kernel \"Killed process {pid}\" line")],
            String::new(),
        );
    };
    let mut problems = Vec::new();
    let mut detail = Vec::new();
    if k.comm != str_at(e, "/comm") {
        problems.push(format!(
            "kernel comm {:?}, event {:?}",
            k.comm,
            str_at(e, "/comm")
        ));
    }
    for (kernel, field) in [
        ("anon-rss", "anon_rss"),
        ("file-rss", "file_rss"),
        ("shmem-rss", "shmem_rss"),
    ] {
        let want = k.numbers.get(kernel).map(|kb| kb * 1024);
        let got = e.get(field).and_then(Value::as_i64);
        if want.is_none() || want != got {
            problems.push(format!("{field} {got:?} B, kernel {kernel} {want:?} B"));
        } else {
            detail.push(format!("{field} {} kB", want.unwrap_or(0) / 1024));
        }
    }
    row(
        "rss",
        problems,
        format!(
            "= kernel's Killed process {pid} ({}): {}",
            k.comm,
            detail.join(", ")
        ),
    )
}

/// One `sigkill` line for `pid` with `sender_kind` `kind` (and the OOM event's `oom_id`).
fn check_sigkill(name: &str, events: &[Value], pid: i64, kind: &str, oom_id: Option<u64>) -> Row {
    let lines: Vec<&Value> = events
        .iter()
        .filter(|e| {
            str_at(e, "/type") == "sigkill"
                && e.pointer("/target/pid").and_then(Value::as_i64) == Some(pid)
        })
        .collect();
    let [line] = lines.as_slice() else {
        return row(
            name,
            vec![format!(
                "{} sigkill lines for pid {pid}, not 1",
                lines.len()
            )],
            String::new(),
        );
    };
    let mut problems = Vec::new();
    let got = str_at(line, "/sender_kind");
    if got != kind {
        problems.push(format!("sender_kind {got:?}, expected {kind:?}"));
    }
    let line_oom_id = line.get("oom_id").and_then(Value::as_u64);
    if line_oom_id != oom_id {
        problems.push(format!("oom_id {line_oom_id:?}, expected {oom_id:?}"));
    }
    row(
        name,
        problems,
        format!(
            "target {pid} ({}), sender {} ({}), sender_kind {kind}, si_code {}, oom_id {}",
            str_at(line, "/target/comm"),
            line.pointer("/sender/pid").unwrap_or(&Value::Null),
            str_at(line, "/sender/comm"),
            line.get("si_code").unwrap_or(&Value::Null),
            line.get("oom_id").unwrap_or(&Value::Null),
        ),
    )
}

/// The agent stopped with status 0 on SIGTERM; its warnings and errors in the detail.
fn check_agent_exit(console: &Console) -> Row {
    let status = console
        .section("agent-exit")
        .first()
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let warnings = agent_problems(console.section("agent-log"));
    let problems = if status == "0" {
        vec![]
    } else {
        vec![format!("agent exit status {status:?}, expected 0")]
    };
    row(
        "agent exit",
        problems,
        format!("status 0; {} WARN/ERROR log lines", warnings.len()),
    )
}

/// Every probe row of the agent's log: attached or not, and what it reads or why not.
fn print_probes(console: &Console) {
    let status = probe_status(console.section("agent-log"));
    eprintln!("[{STEP}] probe rows on arm64:");
    for (probe, (attached, detail)) in &status {
        let mark = if *attached { "attached" } else { "unavailable" };
        eprintln!("[{STEP}]   {probe:<42} {mark:<11} {detail}");
    }
    for line in agent_problems(console.section("agent-log")) {
        eprintln!("[{STEP}]   agent warning: {line}");
    }
}

fn print_rows(rows: &[Row]) {
    eprintln!("[{STEP}] {:<26} {:<4} detail", "check", "ok");
    for r in rows {
        let ok = if r.ok { "ok" } else { "FAIL" };
        eprintln!("[{STEP}] {:<26} {ok:<4} {}", r.name, r.detail);
    }
}

fn print_tail(console: &str) {
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    eprintln!("[{STEP}] last console lines:");
    for l in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("[{STEP}] | {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OOM_EVENT: &str = r#"{"time":"t","pid":171,"tgid":171,"comm":"tail","anon_rss":32665600,"file_rss":0,"shmem_rss":4096,"cgroup":"/oom","killer":"kernel","oom_id":1,"constraint":"CONSTRAINT_MEMCG","totalpages":8192,"badness":8000,"oom_memcg":"/oom","trigger":{"pid":171,"stack":{"kernel":[{"symbol":"mark_oom_victim"},{"symbol":"__oom_kill_process"},{"symbol":"oom_kill_process"},{"symbol":"out_of_memory"},{"symbol":"mem_cgroup_out_of_memory"},{"symbol":"try_charge_memcg"}]}},"sources":{"oom":"fentry:oom_kill_process"}}"#;
    const SIGKILL_OOM: &str = r#"{"type":"sigkill","target":{"pid":171,"comm":"tail"},"sender":{"pid":171,"comm":"tail"},"sender_kind":"oom_kernel","oom_id":1,"si_code":128}"#;
    const SIGKILL_OTHER: &str = r#"{"type":"sigkill","target":{"pid":175,"comm":"sleep"},"sender":{"pid":177,"comm":"sh"},"sender_kind":"other","oom_id":null,"si_code":0}"#;
    const PROBES: [&str; 3] = [
        r#"{"level":"INFO","fields":{"message":"probe attached","probe":"tp_btf:mark_victim","reads":"tgid"}}"#,
        r#"{"level":"INFO","fields":{"message":"probe attached","probe":"tracepoint:oom/mark_victim","reads":"pid"}}"#,
        r#"{"level":"WARN","fields":{"message":"probe unavailable","probe":"fexit:oom_badness","reason":"no trampoline"}}"#,
    ];
    const READY: &str =
        r#"{"level":"INFO","fields":{"message":"probes ready; waiting for OOM kills"}}"#;
    const KILLED: &str = "[   41.5] Memory cgroup out of memory: Killed process 171 (tail) \
        total-vm:33412kB, anon-rss:31900kB, file-rss:0kB, shmem-rss:4kB, UID:0 pgtables:104kB \
        oom_score_adj:0";

    /// A console as [`INIT`] prints it, with kernel noise and `\r` around the sections.
    fn console_text(events: &[&str]) -> String {
        let mut lines = vec![
            "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]".to_string(),
            "OWVM: agent ready at uptime 80.1s".into(),
            "@@OWVM BEGIN victims@@\r".into(),
            "oom 171 137".into(),
            "kill 175 137".into(),
            "@@OWVM END victims@@".into(),
            "@@OWVM BEGIN events@@".into(),
        ];
        lines.extend(events.iter().map(|e| format!("{e}\r")));
        lines.push("@@OWVM END events@@".into());
        lines.push("@@OWVM BEGIN agent-log@@".into());
        lines.extend(PROBES.iter().map(|l| l.to_string()));
        lines.push(READY.into());
        lines.push("@@OWVM END agent-log@@".into());
        lines.extend(
            ["@@OWVM BEGIN agent-exit@@", "0", "@@OWVM END agent-exit@@"].map(String::from),
        );
        lines.push("@@OWVM BEGIN dmesg@@".into());
        lines.push("[   41.4] tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0".into());
        lines.push(KILLED.into());
        lines.push("@@OWVM END dmesg@@".into());
        lines.push("@@OWVM DONE@@".into());
        lines.join("\n")
    }

    fn rows(text: &str) -> Vec<Row> {
        check_console(&Console::parse(text))
    }

    fn failed(rows: &[Row]) -> Vec<&str> {
        rows.iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.as_str())
            .collect()
    }

    fn good() -> String {
        console_text(&[OOM_EVENT, SIGKILL_OOM, SIGKILL_OTHER])
    }

    #[test]
    fn a_good_console_passes_every_check() {
        let rows = rows(&good());
        assert!(failed(&rows).is_empty(), "{rows:#?}");
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "console",
                "probes",
                "victims",
                "oom event",
                "constraint",
                "trigger stack",
                "rss",
                "sigkill of the OOM kill",
                "sigkill of kill -9",
                "seccomp",
                "agent exit"
            ]
        );
        let probes = &rows[1];
        assert_eq!(
            probes.detail,
            "2 of 3 rows attached: tp_btf:mark_victim tracepoint:oom/mark_victim"
        );
        let rss = rows.iter().find(|r| r.name == "rss").unwrap();
        assert_eq!(
            rss.detail,
            "= kernel's Killed process 171 (tail): anon_rss 31900 kB, file_rss 0 kB, shmem_rss 4 kB"
        );
    }

    #[test]
    fn each_mismatch_fails_its_own_row() {
        let cases = [
            // One kB off the kernel's anon-rss.
            (OOM_EVENT.replace("32665600", "32664576"), "rss"),
            (
                OOM_EVENT.replace("CONSTRAINT_MEMCG", "CONSTRAINT_NONE"),
                "constraint",
            ),
            (
                OOM_EVENT.replace("\"totalpages\":8192", "\"totalpages\":16384"),
                "constraint",
            ),
            (
                OOM_EVENT
                    .replace("\"symbol\":\"out_of_memory\"", "\"symbol\":\"x\"")
                    .replace("mem_cgroup_out_of_memory", "y"),
                "trigger stack",
            ),
            (
                OOM_EVENT.replace("\"/oom\",\"killer\"", "\"/x\",\"killer\""),
                "oom event",
            ),
        ];
        for (event, row_name) in cases {
            let text = console_text(&[&event, SIGKILL_OOM, SIGKILL_OTHER]);
            assert_eq!(failed(&rows(&text)), [row_name], "{event}");
        }
        let text = console_text(&[
            OOM_EVENT,
            SIGKILL_OOM,
            &SIGKILL_OTHER.replace("other", "self"),
        ]);
        assert_eq!(failed(&rows(&text)), ["sigkill of kill -9"]);
        let text = console_text(&[
            OOM_EVENT,
            &SIGKILL_OOM.replace("\"oom_id\":1", "\"oom_id\":2"),
        ]);
        assert_eq!(
            failed(&rows(&text)),
            ["sigkill of the OOM kill", "sigkill of kill -9"]
        );
        // No event at all, or two for the pid.
        let text = console_text(&[SIGKILL_OOM, SIGKILL_OTHER]);
        assert_eq!(
            failed(&rows(&text)),
            ["oom event", "sigkill of the OOM kill"]
        );
        let text = console_text(&[OOM_EVENT, OOM_EVENT, SIGKILL_OOM, SIGKILL_OTHER]);
        assert_eq!(
            failed(&rows(&text)),
            ["oom event", "sigkill of the OOM kill"]
        );
    }

    #[test]
    fn a_console_cut_short_fails() {
        let text = good();
        let cut = &text[..text.find("@@OWVM BEGIN agent-log@@").unwrap()];
        assert_eq!(
            failed(&rows(cut)),
            ["console", "probes", "rss", "agent exit"]
        );
        let silent = r#"{"level":"WARN","fields":{"message":"probe attached but silent: this kernel's hook gives nothing after an OOM kill; using the fallback","probe":"kprobe:oom_kill_process"}}"#;
        let text = good().replace(READY, &format!("{READY}\n{silent}"));
        let r = rows(&text);
        assert_eq!(failed(&r), ["probes"]);
        assert!(r[1]
            .detail
            .starts_with("kprobe:oom_kill_process attached but silent"));
        let audit = "[   50.1] audit: type=1326 audit(1764946000.123:2): auid=4294967295 uid=0 \
            gid=0 ses=4294967295 pid=201 comm=\"oomwatch\" exe=\"/oomwatch\" sig=0 \
            arch=c00000b7 syscall=79 compat=0 ip=0xffff8a1c code=0x50000";
        let text = good().replace(KILLED, &format!("{KILLED}\n{audit}"));
        let r = rows(&text);
        assert_eq!(failed(&r), ["seccomp"]);
        let seccomp = r.iter().find(|r| r.name == "seccomp").unwrap();
        assert_eq!(seccomp.detail, "seccomp refused: \"oomwatch\" syscall=79");
        let text = good().replace("kill 175 137", "kill 175 0");
        assert_eq!(failed(&rows(&text)), ["victims"]);
    }

    /// A real run's console (`cargo xtask vm-test-arm64`, 6.1.0-57-cloud-arm64, 2026-12-05).
    const FIXTURE: &str = include_str!("../../tests/fixtures/vm-console-arm64.log");
    /// The first real run, with the host's (x86-64) eBPF object embedded in the arm64 agent.
    const FIXTURE_HOST_EBPF: &str =
        include_str!("../../tests/fixtures/vm-console-arm64-host-ebpf.log");

    #[test]
    fn the_real_arm64_console_passes() {
        let console = Console::parse(FIXTURE);
        let rows = check_console(&console);
        assert!(failed(&rows).is_empty(), "{rows:#?}");
        let detail = |name: &str| rows.iter().find(|r| r.name == name).unwrap().detail.clone();
        assert_eq!(
            detail("rss"),
            "= kernel's Killed process 243 (tail): anon_rss 32404 kB, file_rss 4 kB, shmem_rss 1108 kB"
        );
        assert!(detail("constraint").starts_with(
            "CONSTRAINT_MEMCG from kprobe:oom_kill_process (candidates from kretprobe:oom_badness)"
        ));
        assert!(detail("trigger stack").contains(
            "oom_kill_process <- out_of_memory <- mem_cgroup_out_of_memory <- try_charge_memcg"
        ));
        // arm64's 6.1 has no ftrace direct calls: fentry/fexit do not attach, tp_btf does.
        let probes = probe_status(console.section("agent-log"));
        let unavailable: Vec<&str> = probes
            .iter()
            .filter(|(_, s)| !s.0)
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(
            unavailable,
            ["fentry:oom_kill_process", "fexit:oom_badness"]
        );
        assert_eq!(probes.len(), 12);
    }

    #[test]
    fn the_hosts_ebpf_object_leaves_the_kprobe_silent_on_arm64() {
        let rows = check_console(&Console::parse(FIXTURE_HOST_EBPF));
        assert_eq!(failed(&rows), ["probes"]);
        assert!(rows[1]
            .detail
            .starts_with("kprobe:oom_kill_process attached but silent"));
        let constraint = rows.iter().find(|r| r.name == "constraint").unwrap();
        assert!(constraint.detail.contains("from kmsg:oom_report"));
    }

    #[test]
    fn init_prints_every_section_the_check_reads() {
        for section in ["victims", "events", "agent-log", "agent-exit", "dmesg"] {
            assert!(INIT.contains(&format!("begin {section}; ")), "{section}");
            assert!(INIT.contains(&format!("end {section}\n")), "{section}");
        }
        assert!(INIT.contains(&format!(
            "echo $(({} << 20)) > $CG/oom/memory.max",
            MEMORY_MAX >> 20
        )));
        assert!(INIT.contains("echo \"oom $p $s\" >> /victims"));
        assert!(INIT.contains("echo \"kill $p $s\" >> /victims"));
        assert!(INIT.contains("--listen 127.0.0.1:9837 --state-dir /tmp/s"));
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
    fn packages_and_debs_are_named_as_apt_does() {
        let search = "linux-image-6.1.0-9-cloud-arm64 - Linux 6.1 for arm64 cloud (signed)\n\
                      linux-image-6.1.0-57-cloud-arm64 - Linux 6.1 for arm64 cloud (signed)\n";
        assert_eq!(
            newest(search).as_deref(),
            Some("linux-image-6.1.0-57-cloud-arm64")
        );
        assert_eq!(
            deb_name_decoded("busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"),
            "busybox-static_1:1.35.0-4+deb12u1+b1_arm64.deb"
        );
        assert_eq!(
            deb_name_decoded("a_1%2Bx%7E1_arm64.deb"),
            "a_1+x~1_arm64.deb"
        );
    }
}
