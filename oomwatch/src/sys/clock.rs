//! Clocks: the kernel's monotonic clock (what `bpf_ktime_get_ns` reads) and wall-clock times of its
//! timestamps.
use std::time::{Duration, SystemTime};

/// `CLOCK_MONOTONIC` now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC is always available.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The wall-clock time of a kernel monotonic timestamp.
pub fn wall_clock_of(ktime_ns: u64) -> SystemTime {
    let age = monotonic_ns().saturating_sub(ktime_ns);
    SystemTime::now() - Duration::from_nanos(age)
}
