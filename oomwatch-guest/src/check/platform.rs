//! The boot checks of what the agent must get right for each architecture, applied to every
//! guest alike:
//!
//! - `seccomp`: the agent's seccomp filter is written with the architecture's system call
//!   numbers; it refused nothing the agents called (no `audit: type=1326` line in the guest's
//!   kernel log, which the filter asks for with `SECCOMP_FILTER_FLAG_LOG`), and each agent
//!   installed it.
//!
//! (The `eBPF object` check, that the agent embeds the object built for the guest's
//! architecture, is the harness's: `xtask/src/vm/ebpf_object.rs`.)

use crate::{
    agent::AGENTS,
    check::{check, Check},
    console::Console,
};

/// No system call refused, and every agent logged its filter.
pub fn seccomp(c: &Console) -> Check {
    let refused: Vec<String> = c
        .section("dmesg")
        .iter()
        .filter(|l| l.contains("audit: type=1326"))
        .map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            format!("{} syscall={}", field("comm="), field("syscall="))
        })
        .collect();
    let mut problems = Vec::new();
    if !refused.is_empty() {
        problems.push(format!("seccomp refused: {}", refused.join(", ")));
    }
    for a in &AGENTS {
        let log = c.section(&a.section("agent-log"));
        if !log.iter().any(|l| l.contains("seccomp filter installed")) {
            problems.push(format!("agent {} logged no seccomp filter", a.name));
        }
    }
    check(
        "seccomp",
        problems,
        format!(
            "{} agents filtered, no system call refused (no audit type=1326 line)",
            AGENTS.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{
        check_console,
        fixture::{mutate_in, ARM64_FIXTURE, ARM64_HOST_EBPF_FIXTURE, FIXTURE},
    };

    #[test]
    fn a_refused_system_call_fails_the_seccomp_check() {
        let c = Console::parse(FIXTURE);
        assert!(seccomp(&c).ok, "{}", seccomp(&c).detail);
        let audit = "[   50.1] audit: type=1326 audit(1764946000.123:2): auid=4294967295 uid=0 \
            gid=0 ses=4294967295 pid=201 comm=\"oomwatch\" exe=\"/oomwatch\" sig=0 \
            arch=c00000b7 syscall=79 compat=0 ip=0xffff8a1c code=0x50000";
        let text = mutate_in(
            FIXTURE,
            "@@OWVM END dmesg@@",
            &format!("{audit}\n@@OWVM END dmesg@@"),
        );
        let bad = seccomp(&Console::parse(&text));
        assert!(!bad.ok);
        assert_eq!(bad.detail, "seccomp refused: \"oomwatch\" syscall=79");
        // arm64's system call numbers: nothing refused either.
        assert!(seccomp(&Console::parse(ARM64_FIXTURE)).ok);
    }

    /// With the host's object, arm64's kprobes read x86-64 registers: `kprobe:oom_kill_process`
    /// attaches but gives nothing, and the two agents that take their OOM context from it (the
    /// fentry one, whose fentry row arm64 6.1 lacks, and the kprobe one) fail.
    #[test]
    fn the_hosts_ebpf_object_fails_the_arm64_probe_agents() {
        let failed = check_console(ARM64_HOST_EBPF_FIXTURE).failed();
        for agent in ["fentry", "kprobe"] {
            for name in ["oom context", "candidates"] {
                let row = format!("{agent}: {name}");
                assert!(failed.contains(&row), "{row} not in {failed:?}");
            }
        }
        // That console predates the trigger-stack check (no `kallsyms` section, an
        // alloc_threads without `leaky_cache_insert`): only that check fails for the kmsg agent.
        assert!(
            failed
                .iter()
                .all(|f| !f.starts_with("kmsg: ") || f == "kmsg: trigger stacks"),
            "{failed:?}"
        );
        let c = Console::parse(ARM64_HOST_EBPF_FIXTURE);
        let silent = c.section("agent-log-kprobe").iter().any(|l| {
            l.contains("probe attached but silent")
                && l.contains(r#""probe":"kprobe:oom_kill_process""#)
        });
        assert!(silent);
    }
}
