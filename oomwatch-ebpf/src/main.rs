//! oomwatch's eBPF programs. One file per hook family; every kernel read goes through an offset
//! the agent resolved at start-up and passed in as a global (Rust eBPF has no CO-RE relocations).
#![no_std]
#![no_main]

mod candidates;
mod cgroup;
mod globals;
mod header;
mod kill_signal;
mod lifecycle;
mod maps;
mod mark_victim;
mod oom_kill;
mod pidns;
mod read;
mod sigkill;
mod signal;
mod stack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot unwind; the verifier rejects any path reaching here, so this
    // loop is never executed at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
