//! A multi-threaded process that allocates without bound from every thread, like a Java or Go
//! service running out of memory: run it in a memory cgroup with a small limit and it is
//! OOM-killed. Used by the tests (`tests/threads.rs`) and handy to reproduce by hand:
//!
//! ```text
//! cargo build --example alloc_threads
//! alloc_threads [THREADS] [leader-exits | membind=N]
//! ```
//!
//! `leader-exits`: the main thread exits alone once the others run (the process lives on with a
//! zombie leader), so the kernel's victim is one of the other threads, not the leader.
//!
//! `membind=N`: every thread may take memory from NUMA node N only (`set_mempolicy(MPOL_BIND)`,
//! as `numactl --membind=N` does), so the node running out is an OOM with constraint
//! `CONSTRAINT_MEMORY_POLICY` while the host has memory left.
use std::thread;
use std::time::Duration;

/// `MPOL_BIND` of include/uapi/linux/mempolicy.h.
const MPOL_BIND: libc::c_long = 2;

/// Takes 1 MiB and touches every page: the allocation the OOM killer interrupts, under a name
/// `vm-test` looks for in the trigger's user stack (`leaky_cache_insert <- serve_request`).
#[inline(never)]
fn leaky_cache_insert(held: &mut Vec<Vec<u8>>) {
    let mut chunk = vec![0u8; 1 << 20];
    for i in (0..chunk.len()).step_by(4096) {
        // A volatile write: the page is touched here, in this function, not optimised away.
        // SAFETY: `i` is below the chunk's length, so the pointer is in bounds and aligned.
        unsafe { std::ptr::write_volatile(chunk.as_mut_ptr().add(i), 1) };
    }
    held.push(chunk);
}

#[inline(never)]
fn serve_request(held: &mut Vec<Vec<u8>>) {
    leaky_cache_insert(held);
    // Keeps this frame a real caller (no tail call into leaky_cache_insert).
    std::hint::black_box(held.len());
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let mode = args.next().unwrap_or_default();
    let leader_exits = mode == "leader-exits";
    if let Some(node) = mode.strip_prefix("membind=") {
        let node: u32 = node.parse().expect("membind=N: N is a NUMA node number");
        assert!(node < 64, "membind=N: N below 64");
        let mask: libc::c_ulong = 1 << node;
        // SAFETY: set_mempolicy reads `maxnode` bits from `mask`, a live c_ulong of 64 bits;
        // the threads spawned below inherit the policy.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                MPOL_BIND,
                &mask as *const libc::c_ulong,
                64 as libc::c_ulong,
            )
        };
        if rc != 0 {
            eprintln!(
                "set_mempolicy(MPOL_BIND, node {node}): {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(2);
        }
    }
    for _ in 0..threads {
        thread::spawn(|| {
            // Let every thread start before memory runs out.
            thread::sleep(Duration::from_millis(200));
            let mut held = Vec::new();
            loop {
                serve_request(&mut held);
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
