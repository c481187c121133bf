//! Threads that run a prelude (the agent drops the thread's capabilities there) before their
//! work, and whose spawner waits for that prelude's result.

use std::{io, sync::mpsc, thread::JoinHandle};

/// Spawns thread `name`: it runs `prelude`, reports its result, and only when it succeeded runs
/// `work`. Returns once the prelude has run: its error, or the thread's handle.
pub fn spawn_after(
    name: &str,
    prelude: impl FnOnce() -> io::Result<()> + Send + 'static,
    work: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let (ready_tx, ready) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let r = prelude();
            let failed = r.is_err();
            let _ = ready_tx.send(r);
            if !failed {
                work();
            }
        })?;
    ready
        .recv()
        .map_err(|_| io::Error::other(format!("the {name} thread died")))??;
    Ok(handle)
}

/// Puts the calling thread at `SCHED_IDLE`: it runs only when a CPU has nothing else to do
/// (background work that must never delay the agent's records).
pub fn idle_priority() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid 0 is this thread.
    match unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The calling thread's nice value (Linux keeps one per thread; a new thread inherits its
/// creator's).
pub fn own_nice() -> i32 {
    // SAFETY: getpriority takes integer arguments only; 0 is the calling thread. It cannot
    // fail for the caller itself, so -1 is a nice value, not an error.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_runs_only_after_a_prelude_that_succeeded() {
        let (tx, rx) = mpsc::channel();
        let h = spawn_after("t-ok", || Ok(()), move || tx.send(1).unwrap()).unwrap();
        h.join().unwrap();
        assert_eq!(rx.try_recv(), Ok(1));

        let (tx, rx) = mpsc::channel::<i32>();
        let err = spawn_after(
            "t-err",
            || Err(io::Error::other("no")),
            move || tx.send(2).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "no");
        assert!(rx.recv().is_err(), "the work never ran");
    }

    #[test]
    fn a_thread_at_idle_priority_is_sched_idle() {
        let h = std::thread::spawn(|| {
            idle_priority().unwrap();
            // SAFETY: no preconditions; 0 is this thread.
            unsafe { libc::sched_getscheduler(0) }
        });
        assert_eq!(h.join().unwrap(), libc::SCHED_IDLE);
    }
}
