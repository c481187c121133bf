//! A sub-millisecond timer for the event loop: tokio's timers tick in whole milliseconds, so a
//! 1 ms sleep lasts 1 to 2 ms. A `timerfd` wakes the loop through epoll like any other source.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A `CLOCK_MONOTONIC` timerfd, non-blocking: armed to fire every `period`, or disarmed.
#[derive(Debug)]
pub struct FineTimer {
    fd: OwnedFd,
    armed: bool,
}

impl FineTimer {
    pub fn new() -> io::Result<Self> {
        // SAFETY: timerfd_create takes integer arguments only.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(FineTimer { fd, armed: false })
    }

    /// Fires `period` from now and every `period` after, until [`Self::disarm`].
    pub fn arm(&mut self, period: Duration) -> io::Result<()> {
        let ts = timespec(period);
        self.set(libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        })?;
        self.armed = true;
        Ok(())
    }

    /// Stops the timer (an expiry not yet read stays readable until [`Self::consume`]).
    pub fn disarm(&mut self) -> io::Result<()> {
        let zero = timespec(Duration::ZERO);
        self.set(libc::itimerspec {
            it_interval: zero,
            it_value: zero,
        })?;
        self.armed = false;
        Ok(())
    }

    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Reads the expiry count (0 when none is pending), so that readiness clears.
    pub fn consume(&self) -> u64 {
        let mut n = [0u8; 8];
        // SAFETY: `n` is 8 writable bytes, the size a timerfd read needs.
        let rc = unsafe { libc::read(self.fd.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
        if rc == 8 {
            u64::from_ne_bytes(n)
        } else {
            0
        }
    }

    fn set(&self, spec: libc::itimerspec) -> io::Result<()> {
        // SAFETY: `spec` is a valid itimerspec for the call; the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

impl AsRawFd for FineTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn fires_every_period_until_disarmed() {
        let mut t = FineTimer::new().unwrap();
        assert_eq!(t.consume(), 0, "a new timer has fired nothing");
        let start = Instant::now();
        t.arm(Duration::from_micros(200)).unwrap();
        assert!(t.is_armed());
        while t.consume() == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "never fired");
            std::thread::yield_now();
        }
        assert!(start.elapsed() >= Duration::from_micros(200));
        t.disarm().unwrap();
        t.consume();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(t.consume(), 0, "a disarmed timer fires no more");
        assert!(!t.is_armed());
    }
}
