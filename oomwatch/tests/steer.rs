//! The event loop is not left queued behind a CPU the kernel holds, on the real kernel.
//!
//! After an OOM kill the kernel keeps the killer's CPU for its walk of every process, and
//! under `PREEMPT_NONE` a task queued there waits for it; the probes' wake-ups come from that
//! CPU, so the scheduler often queues the agent's event loop there. The test makes that
//! situation last: CPU A is held by a `SCHED_FIFO` spinner (which no ordinary task preempts,
//! like the kernel's walk), the agent's event loop (its main thread) may run on A only, and a
//! victim is OOM-killed on CPU B, where everything else of the agent and of the test runs.
//! The kill must be recorded while A is still held (without the agent's watchers it waits
//! for the spinner's end), checked against the kernel's own line; the move is counted in
//! `oomwatch_event_loop_moves_total`, and the loop gets its whole CPU set back.
mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use oomwatch_testkit::cpus;

use common::{metric_value, real_kernel_or_skip, Agent, Kmsg, TestCgroup};

/// How long the spinner holds CPU A at most: below the 950 ms after which the kernel lets
/// ordinary tasks run beside a real-time one (its fair server, or RT throttling).
const HOLD: Duration = Duration::from_millis(800);

/// Pins thread `tid` (0: the caller) to `cpu`.
fn pin(tid: i32, cpu: usize) {
    cpus::pin(tid, cpu).unwrap_or_else(|e| panic!("pin {tid} to CPU {cpu}: {e}"));
}

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<i32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `Cpus_allowed_list` of thread `tid` of `pid`.
fn cpus_allowed(pid: u32, tid: i32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Holds `cpu` at `SCHED_FIFO` until `stop` or [`HOLD`]; `held` is true meanwhile.
fn spin(cpu: usize, held: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        pin(0, cpu);
        cpus::realtime(1).unwrap_or_else(|e| panic!("SCHED_FIFO: {e}"));
        held.store(true, Ordering::SeqCst);
        let end = Instant::now() + HOLD;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            std::hint::spin_loop();
        }
        held.store(false, Ordering::SeqCst);
    })
}

/// Waits (at most 5 s) until the agent's main thread sleeps.
fn wait_asleep(pid: u32) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
        let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
        if state == Some("S") {
            return;
        }
        assert!(
            Instant::now() < end,
            "the agent's event loop never slept: {stat}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_kill_is_recorded_while_the_cpu_its_event_loop_was_queued_on_stays_held() {
    if !real_kernel_or_skip() {
        return;
    }
    let allowed = cpus::allowed();
    assert!(
        allowed.len() >= 2,
        "this test needs two CPUs, it has {allowed:?}"
    );
    let (a, b) = (allowed[0], allowed[1]);
    let mut agent = Agent::start(&[]);
    let pid = agent.pid();
    assert!(
        agent.log_text().contains("the event loop's watchers run"),
        "{}",
        agent.log_text()
    );
    let whole = cpus_allowed(pid, pid as i32);
    // The loop may run on A only; the agent's other threads, and all of the test's, on B.
    for tid in threads(pid) {
        pin(tid, if tid == pid as i32 { a } else { b });
    }
    for tid in threads(std::process::id()) {
        pin(tid, b);
    }
    let cg = TestCgroup::new(48 << 20);
    let mut kmsg = Kmsg::open();
    let (held, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    // The loop must be waiting (parked) when A is taken, not preempted in the middle of work.
    wait_asleep(pid);
    let spinner = spin(a, Arc::clone(&held), Arc::clone(&stop));
    while !held.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    // The victim inherits this thread's CPU, B: its kill's wake-ups come from there.
    let victim = cg.oom_kill(0);
    let ev = agent.wait_event(Duration::from_secs(10), |v| v["pid"] == victim);
    let recorded_while_held = held.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    assert!(
        recorded_while_held,
        "the kill of {victim} was recorded only once CPU A ({a}) was free: the event loop \
         stayed queued there; log:\n{}",
        agent.log_text()
    );
    let kernel = kmsg.killed(victim, Duration::from_secs(10));
    assert_eq!(ev["comm"], kernel.comm.as_str(), "{ev}");
    assert_eq!(cg.oom_kills(), 1);
    let moves = metric_value(&agent.get("/metrics"), "oomwatch_event_loop_moves_total");
    assert!(moves.is_some_and(|m| m >= 1.0), "moves: {moves:?}");
    // Once it has run, the loop may run anywhere it could before the test pinned it.
    assert_eq!(cpus_allowed(pid, pid as i32), whole);
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}
