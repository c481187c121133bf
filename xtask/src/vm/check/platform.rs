//! The boot checks of what the agent must get right for each architecture, applied to every
//! guest alike:
//!
//! - `seccomp`: the agent's seccomp filter is written with the architecture's system call
//!   numbers; it refused nothing the agents called (no `audit: type=1326` line in the guest's
//!   kernel log, which the filter asks for with `SECCOMP_FILTER_FLAG_LOG`), and each agent
//!   installed it;
//! - `eBPF object`: the agent embeds the eBPF object built for the guest's architecture
//!   (aya-ebpf fixes at build time which `pt_regs` layout a kprobe reads: the host's object
//!   attaches on arm64 but reads x86-64 registers).

use std::{fs, path::Path};

use crate::vm::{
    agent::AGENTS,
    check::{check, Check},
    console::Console,
    cross::GuestBinaries,
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

/// The agent binary holds the eBPF object built for its architecture, byte for byte
/// (`OOMWATCH_EBPF_OBJECT`, else the host's default object).
pub fn ebpf_object(guest: &GuestBinaries) -> Check {
    let want = crate::ebpf::object_path_for(guest.arch.uname());
    let mut problems = Vec::new();
    if guest.ebpf_object != want {
        problems.push(format!(
            "built with {}, not the object for {} ({})",
            guest.ebpf_object.display(),
            guest.arch,
            want.display()
        ));
    }
    match embeds(&guest.agent, &want) {
        Ok(true) => {}
        Ok(false) => problems.push(format!(
            "{} does not embed {}",
            guest.agent.display(),
            want.display()
        )),
        Err(e) => problems.push(e),
    }
    let size = fs::metadata(&want).map_or(0, |m| m.len() >> 10);
    check(
        "eBPF object",
        problems,
        format!(
            "the agent embeds the object built for {} ({}, {size} KiB)",
            guest.arch,
            want.display()
        ),
    )
}

/// Whether `binary` holds the bytes of `object` (`include_bytes!`).
fn embeds(binary: &Path, object: &Path) -> Result<bool, String> {
    let read = |p: &Path| fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (haystack, needle) = (read(binary)?, read(object)?);
    if needle.is_empty() {
        return Ok(false);
    }
    Ok(haystack.windows(needle.len()).any(|w| w == needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::check::{
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

    #[test]
    fn the_object_must_be_in_the_binary_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-ebpf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (binary, object) = (dir.join("agent"), dir.join("object"));
        fs::write(&object, b"\x7fELF eBPF object").unwrap();
        fs::write(&binary, b"code \x7fELF eBPF object more code").unwrap();
        assert_eq!(embeds(&binary, &object), Ok(true));
        fs::write(&object, b"\x7fELF another object").unwrap();
        assert_eq!(embeds(&binary, &object), Ok(false));
        assert!(embeds(&dir.join("missing"), &object).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
