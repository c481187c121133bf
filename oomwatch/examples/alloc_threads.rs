//! A multi-threaded process that allocates without bound from every thread, like a Java or Go
//! service running out of memory: run it in a memory cgroup with a small limit and it is
//! OOM-killed. Used by the tests (`tests/threads.rs`) and handy to reproduce by hand:
//!
//! ```text
//! cargo build --example alloc_threads
//! alloc_threads [THREADS] [leader-exits]
//! ```
//!
//! `leader-exits`: the main thread exits alone once the others run (the process lives on with a
//! zombie leader), so the kernel's victim is one of the other threads, not the leader.
use std::thread;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let leader_exits = args.next().as_deref() == Some("leader-exits");
    for _ in 0..threads {
        thread::spawn(|| {
            // Let every thread start before memory runs out.
            thread::sleep(Duration::from_millis(200));
            let mut held = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                for i in (0..chunk.len()).step_by(4096) {
                    chunk[i] = 1;
                }
                held.push(chunk);
            }
        });
    }
    println!("ready");
    if leader_exits {
        // SAFETY: SYS_exit ends only the calling thread, without unwinding or running
        // destructors; the other threads never touch anything of this thread's stack.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    }
    loop {
        thread::park();
    }
}
