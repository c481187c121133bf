//! `cargo xtask vm-test [--kernel SERIES|all] [--jobs N] [--keep] [--prepare-only]`: boot
//! Debian's cloud kernels in QEMU (TCG), x86-64 (5.10, 6.1, 6.12, the newest) and arm64
//! (`arm64-6.1`, `arm64-6.12`), with the release agent in a busybox initramfs, cause
//! memory-cgroup OOM kills (single victims, a `memory.oom.group` kill, multi-threaded victims
//! with their leader alive and exited) on cgroup v2 and a global OOM, and check
//! the events of three agents run side by side (OOM context from fentry, from the kprobe
//! fallback, from the kernel log) against the kernel's own log; each kill's follow-up
//! `oom_kill_lifecycle` line, and a real earlyoom's SIGKILL (Debian's package, unpacked under
//! `target/vm/earlyoom/`) reported with `killer: "earlyoom"`; each of those SIGKILLs' `sigkill`
//! line (sender kind `oom_kernel`, `oom_group` or `oom_userspace`, the kill's `oom_id`).
//! Every architecture runs the same guest (`init.sh`) and the same checks; an arm64 guest's
//! binaries are cross-built (`cross`). Downloads are cached under `target/vm/`, and so is each
//! kernel's BTF (`target/vm/<release>/vmlinux.btf`, for the offset tests);
//! `--prepare-only` stops after those.
//!
//! The steps, one module each: `kernel` (Debian packages, kernel download; `debs`, `arch`) →
//! `btf` (each kernel's BTF) → `cross` (each architecture's agent, victim and busybox; the
//! agent's cross build is `crate::cross`'s; `ebpf_object`, the check that it embeds the right
//! eBPF object) → `initramfs` (with `crate::cross::libs`, `earlyoom`, and the guest's `/init`
//! from `oomwatch_guest::script`) → `qemu` (one boot, its serial console) → the
//! `oomwatch-guest` crate's `console` (the console's sections and kernel lines), `check` (the
//! boot's checks, and each of the three `agent`s') and `report` (the tables). `kernels_doc`
//! rewrites `docs/kernels.md` from the last console of each kernel.

mod arch;
mod btf;
mod cross;
mod debs;
mod earlyoom;
mod ebpf_object;
mod initramfs;
mod kernel;
mod kernels_doc;
mod qemu;
pub mod sources;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use arch::Arch;
pub use kernel::labels as kernel_labels;
use kernel::{fetch_kernel, Kernel, BTF_PACKAGES};
use oomwatch_guest::report::{self, print_run, print_summary, RunResult};
use oomwatch_guest::{check, check::Check, console};

const STEP: &str = "vm";

/// The whole test; with `prepare_only`, only the kernels and their BTF (no build, no boot).
/// `jobs`: guests booted at once (0: one per CPU).
pub fn vm_test(which: &str, jobs: usize, keep: bool, prepare_only: bool) -> Result<()> {
    let started = Instant::now();
    let vm_dir = crate::target_dir().join("vm");
    let (kernels, download_secs) = prepare(which, keep, prepare_only, &vm_dir)?;
    if prepare_only {
        // Also Debian's earlyoom, unpacked (never installed): the host's userspace-killer test
        // runs it from target/vm/earlyoom/.
        let mut arches = architectures(&kernels);
        arches.extend(Arch::host());
        for arch in arches {
            let earlyoom = earlyoom::fetch(&vm_dir, arch)?;
            eprintln!("[{STEP}] earlyoom: {}", earlyoom.display());
        }
        eprintln!(
            "[{STEP}] prepared {} kernel(s) and their BTF ({:.1}s); nothing built or booted",
            kernels.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let t = Instant::now();
    let guests = architectures(&kernels)
        .into_iter()
        .map(|arch| Guest::build(arch, &vm_dir, keep))
        .collect::<Result<Vec<_>>>()?;
    let build_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let results = boot_all(&kernels, &guests, &vm_dir, jobs)?;
    let boot_secs = t.elapsed().as_secs_f64();
    print_summary(&results);
    if let Err(e) = kernels_doc() {
        eprintln!("[{STEP}] docs/kernels.md not rewritten: {e:#}");
    }
    eprintln!(
        "[{STEP}] timings: kernels {download_secs:.1}s, builds and initramfs {build_secs:.1}s, \
         boots {boot_secs:.1}s ({}), total {:.1}s",
        results
            .iter()
            .map(|r| format!("{} boot-to-poweroff {:.1}s", r.release, r.boot_secs))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    verdict(&results)
}

/// Fails naming every failed check of every kernel.
fn verdict(results: &[RunResult]) -> Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let bad = r.report.failed();
            (!bad.is_empty()).then(|| format!("{}: {}", r.release, bad.join(", ")))
        })
        .collect();
    if !failed.is_empty() {
        // The first problem of each failed check, last but one: a CI log's tail shows them.
        for r in results {
            for p in r.report.first_problems(200) {
                eprintln!("[{STEP}] {}: {p}", r.release);
            }
        }
        bail!("[{STEP}] FAILED: {}", failed.join("; "));
    }
    eprintln!("[{STEP}] all checks passed on {} kernel(s)", results.len());
    Ok(())
}

/// `docs/kernels.md` from the last console of each kernel under `target/vm/`.
pub fn kernels_doc() -> Result<()> {
    let doc = crate::util::repo_root().join("docs/kernels.md");
    kernels_doc::write(&crate::target_dir().join("vm"), &doc)?;
    eprintln!(
        "[{STEP}] {} rewritten from the last run of each kernel",
        doc.display()
    );
    Ok(())
}

/// The architectures of `kernels`, each once.
fn architectures(kernels: &[Kernel]) -> BTreeSet<Arch> {
    kernels.iter().map(|k| k.arch).collect()
}

/// Steps 1 to 3: packages, then each kernel downloaded and extracted, and its BTF dumped.
fn prepare(
    which: &str,
    keep: bool,
    prepare_only: bool,
    vm_dir: &Path,
) -> Result<(Vec<Kernel>, f64)> {
    let series = kernel::select(which);
    if series.is_empty() {
        bail!(
            "[{STEP}] unknown --kernel {which:?}: use one of {}",
            kernel_labels().join(", ")
        );
    }
    fs::create_dir_all(vm_dir)?;
    let arches: BTreeSet<Arch> = series.iter().map(|s| s.arch).collect();
    let mut packages: Vec<String> = BTF_PACKAGES.map(String::from).to_vec();
    for arch in &arches {
        crate::cross::ensure_architecture(*arch)?;
        if !prepare_only {
            packages.extend(kernel::boot_packages(*arch));
        }
    }
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    crate::util::ensure_packages(STEP, &packages)?;
    sources::ensure()?;

    let t = Instant::now();
    let picked = kernel::pick_packages(&series)?;
    let mut kernels: Vec<Kernel> = Vec::new();
    for (series, package) in series.into_iter().zip(picked) {
        let kernel = fetch_kernel(series, package, vm_dir, keep)?;
        // "newest" is one of the others when no newer suite is reachable.
        if let Some(same) = kernels.iter().find(|k| k.package == kernel.package) {
            eprintln!(
                "[{STEP}] kernel {}: {} is kernel {} already; booted once",
                kernel.label, kernel.package, same.label
            );
            continue;
        }
        btf::extract(&kernel, vm_dir)?;
        kernels.push(kernel);
    }
    let download_secs = t.elapsed().as_secs_f64();
    eprintln!("[{STEP}] kernels ready ({download_secs:.1}s)");
    Ok((kernels, download_secs))
}

/// What every guest of one architecture boots with.
struct Guest {
    arch: Arch,
    initrd: PathBuf,
    /// The boot check of the agent's eBPF object (`ebpf_object`).
    ebpf: Check,
}

impl Guest {
    /// The architecture's binaries (`cross`), earlyoom, and the initramfs
    /// `target/vm/initramfs/<arch>/initrd.cpio.gz`.
    fn build(arch: Arch, vm_dir: &Path, keep: bool) -> Result<Guest> {
        let binaries = cross::build(arch, vm_dir)?;
        let t = Instant::now();
        let earlyoom = earlyoom::fetch(vm_dir, arch)?;
        let dir = vm_dir.join("initramfs").join(arch.deb());
        let (staging, initrd) = (dir.join("root"), dir.join("initrd.cpio.gz"));
        initramfs::build(&binaries, &[earlyoom.as_path()], &staging, &initrd)?;
        if !keep {
            fs::remove_dir_all(&staging)?;
        }
        eprintln!(
            "[{STEP}] initramfs {} ({} KiB, {:.1}s)",
            initrd.display(),
            fs::metadata(&initrd)?.len() / 1024,
            t.elapsed().as_secs_f64()
        );
        let ebpf = ebpf_object::ebpf_object(&binaries);
        Ok(Guest { arch, initrd, ebpf })
    }
}

/// Step 4 and 5 for every kernel, `jobs` guests at a time (each emulated CPU keeps one host
/// core busy; 0: one per CPU), the longest expected boots first; the results in `kernels`'
/// order.
fn boot_all(
    kernels: &[Kernel],
    guests: &[Guest],
    vm_dir: &Path,
    jobs: usize,
) -> Result<Vec<RunResult>> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = if jobs == 0 { cpus } else { jobs }.clamp(1, kernels.len().max(1));
    eprintln!(
        "[{STEP}] booting {} kernel(s), {jobs} at a time ({cpus} CPUs)",
        kernels.len()
    );
    // Popped from the end: the longest boot last in the list, so it starts first.
    let mut order: Vec<usize> = (0..kernels.len()).collect();
    order.sort_by_key(|&i| kernel::expected_boot_secs(kernels[i].label));
    let queue = Mutex::new(order);
    let done: Mutex<Vec<Option<Result<RunResult>>>> =
        Mutex::new((0..kernels.len()).map(|_| None).collect());
    thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(i) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let k = &kernels[i];
                let guest = guests.iter().find(|g| g.arch == k.arch);
                let result = guest
                    .context("[vm] no guest built for the kernel's architecture")
                    .and_then(|g| boot_and_check(k, g, vm_dir));
                done.lock().expect("results")[i] = Some(result);
            });
        }
    });
    done.into_inner()
        .expect("results")
        .into_iter()
        .map(|r| r.unwrap_or_else(|| bail!("[vm] a kernel was not booted")))
        .collect()
}

/// Step 4 and 5: boot one kernel, capture the serial console, check it.
fn boot_and_check(k: &Kernel, guest: &Guest, vm_dir: &Path) -> Result<RunResult> {
    let release = k.release().to_string();
    let out_dir = vm_dir.join(&release);
    fs::create_dir_all(&out_dir)?;
    let log_path = out_dir.join("console.log");
    let boot = qemu::boot(k, &guest.initrd, &log_path)?;
    let (text, boot_secs) = (&boot.console, boot.secs);

    let mut report = check::check_console(text);
    let qemu = check::check(
        "qemu",
        match boot.status {
            Some(s) if s.success() => vec![],
            Some(s) => vec![format!("exited ({s}) after {boot_secs:.1}s")],
            None => vec![format!(
                "killed after the {}s timeout",
                qemu::boot_timeout(k.arch).as_secs()
            )],
        },
        format!("exited (exit status: 0) after {boot_secs:.1}s"),
    );
    report.boot.splice(0..0, [qemu, guest.ebpf.clone()]);
    let uptime = check::guest_uptime(text)
        .map(|u| format!(", guest uptime {u:.1}s at the end"))
        .unwrap_or_default();
    let result = RunResult {
        label: k.label,
        release,
        report,
        boot_secs,
    };
    let console = console::Console::parse(text);
    let _one_at_a_time = report::PRINT.lock();
    eprintln!(
        "[{STEP}] {}: boot to poweroff {boot_secs:.1}s{uptime}; console: {}",
        result.release,
        log_path.display()
    );
    print_run(&result, &console);
    if !result.report.failed().is_empty() && !console.done {
        let log_lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
        eprintln!("[{STEP}]   last console lines:");
        for l in &log_lines[log_lines.len().saturating_sub(30)..] {
            eprintln!("[{STEP}]   | {l}");
        }
    }
    Ok(result)
}
