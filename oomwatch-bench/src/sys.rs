//! What the bench reads from the system: clocks, `/proc/<pid>` samples (CPU, wake-ups, RSS),
//! the machine's description and how busy it is, the git commit, a free port.
//!
//! xtask has no libc dependency: the three C functions needed are declared here.

use std::{
    ffi::{c_int, c_long},
    fs,
    path::Path,
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

extern "C" {
    fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    fn sysconf(name: c_int) -> c_long;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

const CLOCK_MONOTONIC: c_int = 1;
const SC_CLK_TCK: c_int = 2;
pub const SIGTERM: c_int = 15;

/// `CLOCK_MONOTONIC` in ns: the clock of the kernel's `bpf_ktime_get_ns` and of the agent's
/// `ktime_ns` field.
pub fn monotonic_ns() -> u64 {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec of the C layout; the clock always exists.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second (`utime`/`stime` unit in `/proc/<pid>/stat`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { sysconf(SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: c_int) {
    // SAFETY: kill has no memory preconditions; a stale pid is at worst ESRCH.
    unsafe { kill(pid as c_int, sig) };
}

/// One reading of a process, summed over its threads.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at_ns: u64,
    /// utime + stime, clock ticks (whole process, from `/proc/<pid>/stat`).
    pub ticks: u64,
    /// Time on CPU, ns (`schedstat`, summed over live threads).
    pub cpu_ns: u64,
    /// Time runnable but waiting for a CPU, ns (`schedstat`).
    pub wait_ns: u64,
    /// voluntary + nonvoluntary context switches, summed over live threads.
    pub ctxsw: u64,
    pub threads: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Sample {
    /// CPU used between `self` (earlier) and `later`, ns: schedstat, else ticks.
    pub fn cpu_ns_until(&self, later: &Sample) -> u64 {
        let ns = later.cpu_ns.saturating_sub(self.cpu_ns);
        if ns > 0 || later.cpu_ns > 0 {
            ns
        } else {
            later.ticks.saturating_sub(self.ticks) * 1_000_000_000 / clock_ticks()
        }
    }
}

pub fn sample(pid: u32) -> Result<Sample> {
    let base = format!("/proc/{pid}");
    let stat =
        fs::read_to_string(format!("{base}/stat")).with_context(|| format!("read {base}/stat"))?;
    // Fields after the comm's closing parenthesis; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut s = Sample {
        at_ns: monotonic_ns(),
        ticks: num(11) + num(12),
        ..Sample::default()
    };
    let status = fs::read_to_string(format!("{base}/status"))?;
    s.rss_kib = kib(&status, "VmRSS:");
    s.hwm_kib = kib(&status, "VmHWM:");
    for task in fs::read_dir(format!("{base}/task"))?.flatten() {
        let dir = task.path();
        let Ok(status) = fs::read_to_string(dir.join("status")) else {
            continue;
        };
        s.threads += 1;
        s.ctxsw +=
            kib(&status, "voluntary_ctxt_switches:") + kib(&status, "nonvoluntary_ctxt_switches:");
        if let Ok(st) = fs::read_to_string(dir.join("schedstat")) {
            let mut it = st.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            s.cpu_ns += it.next().unwrap_or(0);
            s.wait_ns += it.next().unwrap_or(0);
        }
    }
    Ok(s)
}

/// The number after `key` in a `/proc/<pid>/status` text (0 if absent).
fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (`clear_refs` value 5).
pub fn reset_peak_rss(pid: u32) {
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Busy and total jiffies of all CPUs (`/proc/stat`), to tell how busy the machine was.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
    /// Time the hypervisor ran something else while a vCPU wanted to run (ticks).
    steal: u64,
}

pub fn cpu_times() -> CpuTimes {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    CpuTimes {
        busy: total.saturating_sub(idle),
        total,
        steal: v.get(7).copied().unwrap_or(0),
    }
}

impl CpuTimes {
    /// Percentage of all CPUs busy between `self` and `later`.
    pub fn busy_pct_until(&self, later: &CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * later.busy.saturating_sub(self.busy) as f64 / total as f64
    }

    /// CPU time stolen by the hypervisor between `self` and `later`, all CPUs (ms). On a
    /// shared VM a vCPU taken away for 100 ms holds every record meant for it as long.
    pub fn steal_ms_until(&self, later: &CpuTimes) -> f64 {
        later.steal.saturating_sub(self.steal) as f64 * 1000.0 / clock_ticks() as f64
    }
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine the bench ran on.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub ram_mib: u64,
    pub kernel: String,
    pub hz: Option<u64>,
}

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    Machine {
        cpu_model,
        cores,
        ram_mib: kib(&meminfo, "MemTotal:") / 1024,
        kernel: format!(
            "{} {}",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease")
        ),
        hz: kernel_hz(),
    }
}

/// `CONFIG_HZ` from `/proc/config.gz`, when the kernel exposes its configuration.
fn kernel_hz() -> Option<u64> {
    let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

/// The commit checked out in `repo` (read from `.git`, no git command), if any.
pub fn git_commit(repo: &Path) -> Option<String> {
    let mut git = repo.join(".git");
    if git.is_file() {
        let text = fs::read_to_string(&git).ok()?;
        git = repo.join(text.trim().strip_prefix("gitdir:")?.trim());
    }
    let head = fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref:").map(str::trim) else {
        return Some(head.to_string());
    };
    if let Ok(id) = fs::read_to_string(git.join(name)) {
        return Some(id.trim().to_string());
    }
    let packed = fs::read_to_string(git.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (id, r) = l.split_once(' ')?;
        (r == name).then(|| id.to_string())
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Now as UTC `(YYYY-MM-DDTHH:MM:SSZ, YYYYMMDDTHHMMSSZ)`.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z"),
    )
}

/// Sleeps until `deadline` (no-op if past).
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// When the hypervisor stole CPU time, as windows of `CLOCK_MONOTONIC` (ns): `/proc/stat`'s
/// steal sampled every [`STEAL_SAMPLE`] by a thread of its own until [`StealWatch::finish`].
///
/// The kernel accounts a stolen stretch at the first tick after the vCPU runs again, in
/// `USER_HZ` units, so a rise of `k` units between samples at `t0` and `t1` means CPU time was
/// taken somewhere from `k + 1` units (and a tick) before `t0` up to `t1`: that whole stretch
/// is the window.
pub struct StealWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<(u64, u64)>>>,
}

/// How often the steal counter is read.
pub const STEAL_SAMPLE: std::time::Duration = std::time::Duration::from_millis(5);

impl StealWatch {
    pub fn start() -> StealWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let unit_ns = 1_000_000_000 / clock_ticks().max(1);
            let mut windows = Vec::new();
            let mut last = (cpu_times(), monotonic_ns());
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(STEAL_SAMPLE);
                let now = (cpu_times(), monotonic_ns());
                // A failed read (all zero) says nothing: compare the next one with the last good.
                if now.0.total == 0 {
                    continue;
                }
                if let Some(w) = steal_window(&last, &now, unit_ns) {
                    windows.push(w);
                }
                last = now;
            }
            windows
        });
        StealWatch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the windows seen.
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let handle = self.handle.take();
        handle.and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for StealWatch {
    /// An error path that never calls `finish` still stops the thread.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The window a rise of the steal counter between two samples (counter, `CLOCK_MONOTONIC` ns)
/// stands for: from `k + 1` units (plus one 4 ms tick) before the earlier sample, since the
/// kernel accounts a stretch at the first tick after it, to the later sample.
fn steal_window(
    before: &(CpuTimes, u64),
    after: &(CpuTimes, u64),
    unit_ns: u64,
) -> Option<(u64, u64)> {
    let k = after
        .0
        .steal
        .checked_sub(before.0.steal)
        .filter(|&k| k > 0)?;
    let span = (k + 1) * unit_ns + 4_000_000;
    Some((before.1.saturating_sub(span), after.1))
}

/// Whether `[from, to]` (ns) overlaps one of `windows`.
pub fn overlaps(windows: &[(u64, u64)], from: u64, to: u64) -> bool {
    windows.iter().any(|&(a, b)| a <= to && from <= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(steal: u64, total: u64, ns: u64) -> (CpuTimes, u64) {
        (
            CpuTimes {
                busy: 0,
                total,
                steal,
            },
            ns,
        )
    }

    #[test]
    fn a_steal_rise_covers_its_units_and_a_tick_before_the_earlier_sample() {
        let unit = 10_000_000;
        assert_eq!(
            steal_window(&at(5, 1, 100_000_000), &at(5, 2, 130_000_000), unit),
            None
        );
        let w = steal_window(&at(5, 1, 100_000_000), &at(9, 2, 130_000_000), unit);
        // 4 units rose: 5 units and a 4 ms tick before 100 ms, up to 130 ms.
        assert_eq!(w, Some((46_000_000, 130_000_000)));
        assert!(overlaps(&[w.unwrap()], 40_000_000, 47_000_000));
        assert!(!overlaps(&[w.unwrap()], 131_000_000, 140_000_000));
    }
}
