//! The `trigger stacks` check of `vm-test` (issue 18): every live kernel kill's event carries
//! the trigger's stacks, taken by the `mark_victim` programs on the guest's own kernel:
//! - kernel frames through the OOM killer (`out_of_memory`, and `mem_cgroup_out_of_memory` for
//!   a memory-cgroup OOM), each of these names present in the guest's `/proc/kallsyms` (the
//!   `kallsyms` section `/init` prints);
//! - user frames for a user task: `alloc_threads`, built with frame pointers, named through its
//!   own ELF symbols (`leaky_cache_insert` called from `serve_request`, the summary's leaf) even
//!   when its thread was the one killed and its process is gone; busybox (static, stripped)
//!   as `busybox+0x…` frames; none for a kernel thread (the `kworker` of the manual OOM kill).
//!
//! A kernel whose unwinder cannot step through a kretprobe's trampoline (Debian 11's 5.10: the
//! kprobe agent's `kretprobe:out_of_memory` replaces `out_of_memory`'s return address, and every
//! agent's stack of that invocation stops there) gives `… out_of_memory,
//! kretprobe_trampoline`: accepted, and said in the detail, for the caller only.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::check::{check, lifecycle, Check};
use crate::console::{probe_status, ProbeStatus};

/// Kernel functions of the OOM path whose names must be the guest's own.
pub const OOM_PATH: [&str; 5] = [
    "mark_oom_victim",
    "__oom_kill_process",
    "oom_kill_process",
    "out_of_memory",
    "mem_cgroup_out_of_memory",
];
/// The frame a 5.10 unwinder leaves where a kretprobe replaced a return address.
const KRETPROBE_TRAMPOLINE: &str = "kretprobe_trampoline";
const MARK_VICTIM: [&str; 2] = ["tp_btf:mark_victim", "tracepoint:oom/mark_victim"];

/// What the stacks of one agent's events showed, for the detail line.
#[derive(Default)]
struct Seen {
    kills: usize,
    memcg_paths: usize,
    truncated: usize,
    named: usize,
    /// alloc_threads stacks whose innermost frame is in the C library (built without frame
    /// pointers: the kernel's unwinder stops there).
    in_libc: usize,
    stripped: usize,
    kernel_threads: usize,
}

pub fn check_stacks(log: &[String], kallsyms: &[String], events: &[&Value]) -> Check {
    let status = probe_status(log);
    let kills: Vec<&Value> = events
        .iter()
        .copied()
        .filter(|e| live_kernel_kill(e))
        .collect();
    if !mark_victim_attached(&status) {
        let with: Vec<String> = kills
            .iter()
            .filter(|e| !e["trigger"]["stack"].is_null())
            .map(|e| format!("pid {}: a stack without a mark_victim program", e["pid"]))
            .collect();
        return check(
            "trigger stacks",
            with,
            "not captured: no mark_victim program attached".into(),
        );
    }
    let known: BTreeSet<&str> = kallsyms
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let mut problems = Vec::new();
    if known.is_empty() {
        problems.push("no kallsyms section: the guest printed none of the OOM path".into());
    }
    let mut seen = Seen::default();
    for e in &kills {
        let pid = &e["pid"];
        let stack = &e["trigger"]["stack"];
        if !stack.is_object() {
            problems.push(format!("pid {pid}: no trigger.stack"));
            continue;
        }
        seen.kills += 1;
        problems.extend(
            kernel_problems(e, &known, &mut seen)
                .into_iter()
                .map(|p| format!("pid {pid}: {p}")),
        );
        problems.extend(
            user_problems(e, &mut seen)
                .into_iter()
                .map(|p| format!("pid {pid}: {p}")),
        );
    }
    if kills.is_empty() {
        problems.push("no live kernel kill to check".into());
    }
    if seen.in_libc > 0 && seen.named == 0 {
        problems.push("no alloc_threads stack named through its own functions".into());
    }
    check("trigger stacks", problems, detail(&seen))
}

fn detail(s: &Seen) -> String {
    let truncated = match s.truncated {
        0 => String::new(),
        n => format!(
            "; {n} stop at {KRETPROBE_TRAMPOLINE} after out_of_memory (this kernel's unwinder \
             does not step through the kprobe agent's kretprobe)"
        ),
    };
    let in_libc = match s.in_libc {
        0 => String::new(),
        n => format!(
            " ({n} more fault in the C library, whose missing frame pointers end the unwinding \
             there)"
        ),
    };
    format!(
        "{} kernel kills with stacks: kernel frames through out_of_memory (named as in the \
         guest's kallsyms), {} through mem_cgroup_out_of_memory{truncated}; user frames: \
         {} alloc_threads leaky_cache_insert <- serve_request{in_libc}, {} busybox+0x… \
         (stripped), {} kernel threads without",
        s.kills, s.memcg_paths, s.named, s.stripped, s.kernel_threads
    )
}

/// A victim's event (not a follow-up record) of a kernel kill recorded live.
fn live_kernel_kill(e: &Value) -> bool {
    !lifecycle::not_a_kernel_event(e) && e["killer"] == "kernel" && e["replayed"] != true
}

fn mark_victim_attached(status: &ProbeStatus) -> bool {
    MARK_VICTIM
        .iter()
        .any(|p| status.get(*p).is_some_and(|(attached, _)| *attached))
}

fn symbols(frames: &Value) -> Vec<&str> {
    frames
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["symbol"].as_str()).collect())
        .unwrap_or_default()
}

/// The kernel frames go through the OOM killer, by names of the guest's kallsyms.
fn kernel_problems(e: &Value, known: &BTreeSet<&str>, seen: &mut Seen) -> Vec<String> {
    let kernel = symbols(&e["trigger"]["stack"]["kernel"]);
    let mut problems = Vec::new();
    let Some(oom) = kernel.iter().position(|s| *s == "out_of_memory") else {
        return vec![format!("kernel stack without out_of_memory: {kernel:?}")];
    };
    for name in kernel.iter().filter(|s| OOM_PATH.contains(s)) {
        if !known.is_empty() && !known.contains(name) {
            problems.push(format!("{name} is not in the guest's kallsyms"));
        }
    }
    if e["constraint"] == "CONSTRAINT_MEMCG" {
        let truncated = kernel[oom + 1..].first() == Some(&KRETPROBE_TRAMPOLINE);
        if kernel.contains(&"mem_cgroup_out_of_memory") {
            seen.memcg_paths += 1;
        } else if truncated {
            seen.truncated += 1;
        } else {
            problems.push(format!(
                "memory-cgroup OOM without mem_cgroup_out_of_memory: {kernel:?}"
            ));
        }
    }
    problems
}

/// The user frames: named for alloc_threads, `module+0x…` for stripped busybox, none for a
/// kernel thread.
fn user_problems(e: &Value, seen: &mut Seen) -> Vec<String> {
    let stack = &e["trigger"]["stack"];
    let user = stack["user"].as_array().cloned().unwrap_or_default();
    let comm = e["trigger"]["comm"].as_str().unwrap_or("");
    let summary = stack["summary"].as_str().unwrap_or("");
    if comm.starts_with("kworker/") {
        seen.kernel_threads += 1;
        return match (user.is_empty(), stack["summary"].is_null()) {
            (true, true) => vec![],
            _ => vec![format!("kernel thread {comm} with user frames: {stack}")],
        };
    }
    if user.is_empty() {
        return vec![format!("{comm}: no user frames")];
    }
    match comm {
        "alloc_threads"
            if user[0]["module"]
                .as_str()
                .is_some_and(|m| m.starts_with("libc.")) =>
        {
            seen.in_libc += 1;
            vec![]
        }
        "alloc_threads" => {
            seen.named += 1;
            alloc_threads_problems(&user, summary)
        }
        "dd" | "sleep" | "sh" => {
            seen.stripped += 1;
            let own: Vec<&Value> = user.iter().filter(|f| f["module"] == "busybox").collect();
            let mut problems = Vec::new();
            if own.is_empty() || own.iter().any(|f| !f["symbol"].is_null()) {
                problems.push(format!("{comm}: expected busybox+0x… frames: {user:?}"));
            }
            if !summary.starts_with("busybox+0x") {
                problems.push(format!("{comm}: summary {summary:?}"));
            }
            problems
        }
        _ => vec![],
    }
}

/// `leaky_cache_insert` then its caller `serve_request`, from alloc_threads' own symbols, and
/// the summary's leaf.
fn alloc_threads_problems(user: &[Value], summary: &str) -> Vec<String> {
    let names: Vec<&str> = user
        .iter()
        .filter(|f| f["module"] == "alloc_threads")
        .filter_map(|f| f["symbol"].as_str())
        .collect();
    let at = |n: &str| names.iter().position(|s| s.ends_with(n));
    let mut problems = Vec::new();
    match (at("leaky_cache_insert"), at("serve_request")) {
        (Some(a), Some(b)) if a < b => {}
        _ => problems.push(format!(
            "alloc_threads: no leaky_cache_insert <- serve_request in {user:?}"
        )),
    }
    let leaf = summary.split(" <- ").next().unwrap_or("");
    if !leaf.ends_with("leaky_cache_insert") {
        problems.push(format!("alloc_threads: summary {summary:?}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    //! On the real 7.2 guest's console (`fixture::FIXTURE`): every agent passes; each kind of
    //! wrong stack, made from its real events, fails with its reason.

    use serde_json::Value;

    use super::*;
    use crate::check::fixture::FIXTURE;
    use crate::console::Console;

    struct Guest {
        log: Vec<String>,
        kallsyms: Vec<String>,
        events: Vec<Value>,
    }

    fn guest() -> Guest {
        let c = Console::parse(FIXTURE);
        Guest {
            log: c.section("agent-log").to_vec(),
            kallsyms: c.section("kallsyms").to_vec(),
            events: c
                .section("events")
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    fn run(g: &Guest) -> Check {
        check_stacks(&g.log, &g.kallsyms, &g.events.iter().collect::<Vec<_>>())
    }

    /// The first live kernel kill whose trigger's comm is `comm`.
    fn kill_of<'a>(g: &'a mut Guest, comm: &str) -> &'a mut Value {
        g.events
            .iter_mut()
            .find(|e| live_kernel_kill(e) && e["trigger"]["comm"] == comm)
            .unwrap_or_else(|| panic!("no kill triggered by {comm}"))
    }

    #[test]
    fn the_real_guests_stacks_pass() {
        let c = run(&guest());
        assert!(c.ok, "{}", c.detail);
        assert!(
            c.detail
                .contains(" alloc_threads leaky_cache_insert <- serve_request")
                && c.detail
                    .contains("busybox+0x… (stripped), 1 kernel threads"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn each_wrong_stack_fails_with_its_reason() {
        type Mutation = fn(&mut Guest);
        let cases: [(&str, Mutation); 6] = [
            ("no trigger.stack", |g| {
                kill_of(g, "dd")["trigger"]["stack"] = Value::Null
            }),
            ("without mem_cgroup_out_of_memory", |g| {
                let k = &mut kill_of(g, "dd")["trigger"]["stack"]["kernel"];
                let frames = k.as_array_mut().unwrap();
                frames.retain(|f| f["symbol"] != "mem_cgroup_out_of_memory");
            }),
            ("is not in the guest's kallsyms", |g| {
                g.kallsyms.retain(|l| !l.ends_with(" oom_kill_process"));
            }),
            ("no leaky_cache_insert <- serve_request", |g| {
                let u = &mut kill_of(g, "alloc_threads")["trigger"]["stack"]["user"];
                let frames = u.as_array_mut().unwrap();
                frames.retain(|f| {
                    !f["symbol"]
                        .as_str()
                        .unwrap_or("")
                        .ends_with("serve_request")
                });
            }),
            ("expected busybox+0x… frames", |g| {
                let u = &mut kill_of(g, "dd")["trigger"]["stack"]["user"];
                u[0]["symbol"] = "main".into();
            }),
            ("with user frames", |g| {
                let t = g.events.iter_mut().find(|e| {
                    live_kernel_kill(e)
                        && e["trigger"]["comm"]
                            .as_str()
                            .is_some_and(|c| c.starts_with("kworker/"))
                });
                t.unwrap()["trigger"]["stack"]["user"] =
                    serde_json::json!([{"symbol": "x", "module": "y", "offset": 1}]);
            }),
        ];
        for (reason, mutate) in cases {
            let mut g = guest();
            mutate(&mut g);
            let c = run(&g);
            assert!(!c.ok && c.detail.contains(reason), "{reason}: {}", c.detail);
        }
    }

    /// An alloc_threads thread that faulted inside the C library (no frame pointers there:
    /// one frame) is accepted while another alloc_threads stack is named; not when none is.
    #[test]
    fn a_fault_in_the_c_library_is_accepted_beside_named_stacks() {
        let libc_leaf =
            serde_json::json!([{"symbol": null, "module": "libc.so.6", "offset": 614219}]);
        let mut g = guest();
        kill_of(&mut g, "alloc_threads")["trigger"]["stack"]["user"] = libc_leaf.clone();
        let c = run(&g);
        assert!(
            c.ok && c.detail.contains("(1 more fault in the C library"),
            "{}",
            c.detail
        );
        for e in g
            .events
            .iter_mut()
            .filter(|e| e["trigger"]["comm"] == "alloc_threads")
        {
            e["trigger"]["stack"]["user"] = libc_leaf.clone();
        }
        let c = run(&g);
        assert!(
            !c.ok && c.detail.contains("no alloc_threads stack named"),
            "{}",
            c.detail
        );
    }

    /// Without a `mark_victim` program no stack may appear; these events have them.
    #[test]
    fn stacks_without_a_mark_victim_program_fail() {
        let mut g = guest();
        g.log.clear();
        let c = run(&g);
        assert!(!c.ok && c.detail.contains("a stack without a mark_victim program"));
    }
}
