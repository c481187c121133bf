//! How long each OOM kill keeps its CPU after `mark_victim`, from the kernel's own
//! tracepoints, with no agent involved.
//!
//! A storm's killer is its victim (a `tail` alone in its memory cgroup faults, the memcg OOM
//! killer picks it, it returns to user space only to die). From its `oom:mark_victim` it runs
//! on in the kernel: the rest of `__oom_kill_process` (the "Killed process" line, then a walk
//! of every process on the host looking for others sharing the victim's memory), the memcg
//! charge unwinding, the return to user space, where its SIGKILL is delivered
//! (`signal:signal_deliver`, sig 9). The hold ends at that delivery or at the task's first
//! switch-out (`sched:sched_switch` of a `tail`), whichever comes first: the unbroken stretch
//! during which, under `PREEMPT_NONE`, a task woken on that CPU (the agent, an HTTP client)
//! waits. The bench sets this beside kill → record, so a node whose kernel takes longer per
//! kill is told apart from an agent that does.

use std::{collections::HashMap, fs, path::PathBuf};

/// A tracefs instance recording the two tracepoints, removed when finished or dropped.
pub struct KillerHold {
    dir: PathBuf,
}

const TRACEFS: &str = "/sys/kernel/tracing/instances";

impl KillerHold {
    /// Starts recording; `None` (with a line on stderr) when tracefs or either tracepoint is
    /// missing.
    pub fn start(tag: &str) -> Option<KillerHold> {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir =
            PathBuf::from(TRACEFS).join(format!("oomwatch-bench-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir(&dir);
        if let Err(e) = fs::create_dir(&dir) {
            eprintln!(
                "[bench] no kernel trace of the killers' time ({}): {e}",
                dir.display()
            );
            return None;
        }
        let h = KillerHold { dir };
        let setup = [
            ("trace_clock", "mono"),
            ("buffer_size_kb", "16384"),
            ("events/signal/signal_deliver/filter", "sig==9"),
            ("events/signal/signal_deliver/enable", "1"),
            ("events/sched/sched_switch/filter", "prev_comm == \"tail\""),
            ("events/sched/sched_switch/enable", "1"),
            ("events/oom/mark_victim/enable", "1"),
        ];
        for (file, value) in setup {
            if let Err(e) = fs::write(h.dir.join(file), value) {
                eprintln!("[bench] no kernel trace of the killers' time ({file}): {e}");
                return None;
            }
        }
        Some(h)
    }

    /// Stops recording; each killer's mark (`CLOCK_MONOTONIC` ns) and hold (ms).
    pub fn finish(self) -> Vec<(u64, f64)> {
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        holds(&text)
    }
}

impl Drop for KillerHold {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("events/enable"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One trace line: the task's pid, the time (s), the event and its fields.
fn parse(line: &str) -> Option<(u32, f64, &str, &str)> {
    // "<comm>-<pid> [<cpu>] <flags> <seconds>: <event>: <fields>"; comm may hold anything.
    let (head, rest) = line.split_once(": ")?;
    let (event, fields) = rest.split_once(": ").unwrap_or((rest, ""));
    let mut toks: Vec<&str> = head.split_whitespace().collect();
    let secs: f64 = toks.pop()?.parse().ok()?;
    let cpu_at = toks
        .iter()
        .rposition(|t| t.len() > 2 && t.starts_with('[') && t.ends_with(']'))?;
    let task = toks[..cpu_at].join(" ");
    let pid = task.rsplit_once('-')?.1.parse().ok()?;
    Some((pid, secs, event.trim(), fields))
}

/// A mark not ended within this long is dropped (its end was lost, or the pid was reused).
const HOLD_MAX_S: f64 = 1.0;

/// Each victim's `mark_victim` (ns) and the time to its next switch-out or SIGKILL delivered
/// (ms), whichever comes first.
pub fn holds(trace: &str) -> Vec<(u64, f64)> {
    let mut marked: HashMap<u32, f64> = HashMap::new();
    let mut out = Vec::new();
    for (pid, secs, event, fields) in trace.lines().filter_map(parse) {
        match event {
            "mark_victim" => {
                let victim = fields
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("pid="))
                    .and_then(|p| p.trim_end_matches(',').parse().ok());
                if let Some(v) = victim {
                    marked.insert(v, secs);
                }
            }
            "signal_deliver" | "sched_switch" => {
                if let Some(t0) = marked.remove(&pid).filter(|t0| secs - t0 <= HOLD_MAX_S) {
                    out.push(((t0 * 1e9) as u64, (secs - t0) * 1000.0));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_ends_at_the_first_switch_out_and_stale_marks_are_dropped() {
        let trace = "\x20 tail-7 [000] d..1.   5.000000: mark_victim: pid=7 uid=0 comm=tail\n\
            \x20 tail-7 [000] d..2.   5.001000: sched_switch: prev_comm=tail prev_pid=7 \
            prev_prio=120 prev_state=R+ ==> next_comm=oomwatch next_pid=9 next_prio=110\n\
            \x20 tail-7 [001] d..1.   5.003000: signal_deliver: sig=9 errno=0 code=128 \
            sa_handler=0 sa_flags=0\n\
            \x20 tail-8 [001] d..1.   6.000000: mark_victim: pid=8 uid=0 comm=tail\n\
            \x20 tail-8 [001] d..1.   9.000000: signal_deliver: sig=9 errno=0 code=128 \
            sa_handler=0 sa_flags=0\n";
        let h = holds(trace);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!((h[0].1 - 1.0).abs() < 1e-6, "{h:?}");
    }

    #[test]
    fn a_mark_is_paired_with_its_victims_sigkill_only() {
        let trace = "# tracer: nop\n\
            #\n\
            \x20           tail-4242    [001] d..1.   100.000100: mark_victim: pid=4242 uid=0 comm=tail\n\
            \x20 evil- name-7 [000] .....   100.000200: signal_deliver: sig=9 errno=0 code=0 sa_handler=0 sa_flags=0\n\
            \x20 a: b-4243 [000] d..1.   100.000300: mark_victim: pid=4243 uid=0 comm=a: b\n\
            \x20           tail-4242    [001] d..1.   100.002600: signal_deliver: sig=9 errno=0 code=128 sa_handler=0 sa_flags=0\n";
        let h = holds(trace);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].0, 100_000_100_000);
        assert!((h[0].1 - 2.5).abs() < 1e-6, "{h:?}");
    }
}
