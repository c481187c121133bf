//! Which row an agent's data must come from, read from what the agent itself reported (its
//! probe rows in the console), never from the architecture or the kernel's name.
//!
//! Each agent has a first choice per family of rows: the OOM context (`fentry`, then `kprobe`,
//! then the kernel log) and the candidates (`fexit:oom_badness`, then `kretprobe:oom_badness`,
//! then the task dump of the kernel log). Where the kernel lacks the first choice's hook the
//! agent takes the next row, and the checks accept that, naming the reason, only when the
//! agent's log says the row is unavailable because the kernel refused or lacks the hook:
//!
//! - the program loaded but the kernel refused to attach it (`attach: ...`; arm64 6.1 has no
//!   ftrace direct calls, so neither fentry nor fexit attaches);
//! - the function the hook would need is a compiler-split copy without BTF (`GCC split`; the
//!   OOM killer of Debian 11's 5.10 calls `oom_badness.part.0`).
//!
//! Any other reason (the verifier refused the program, the row is not mentioned, it was
//! disabled) leaves the first choice as the expected source, and the checks fail on it.

use crate::{
    agent::{Agent, FENTRY, KMSG, KPROBE},
    check::candidates::{FEXIT, KRETPROBE},
    console::{reason_summary, ProbeStatus},
};

/// The rows that can give an event's OOM context, in the agent's order.
pub const OOM_ROWS: [&str; 3] = [FENTRY, KPROBE, KMSG];
/// The rows that can give an event's candidates, in the agent's order.
pub const CANDIDATES_ROWS: [&str; 3] = [FEXIT, KRETPROBE, KMSG];

/// The row a family's data must come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub probe: &'static str,
    /// The rows passed over and the agent's reasons: `fentry:oom_kill_process unavailable
    /// (attach: ...)`; `None` when the first choice is the source.
    pub fallback: Option<String>,
}

/// Whether the agent's reason says the kernel lacks the hook (see the module's doc).
pub fn kernel_lacks_hook(reason: &str) -> bool {
    reason.starts_with("attach: ") || reason.contains(": attach: ") || reason.contains("GCC split")
}

/// From `first` on in `rows`: the first row the log reports attached, past only rows the kernel
/// lacks; else `first`.
pub fn source(rows: &[&'static str], first: &'static str, status: &ProbeStatus) -> Source {
    let first_choice = Source {
        probe: first,
        fallback: None,
    };
    let start = rows.iter().position(|r| *r == first).unwrap_or(rows.len());
    let mut passed = Vec::new();
    for row in &rows[start..] {
        match status.get(*row) {
            Some((true, _)) if passed.is_empty() => return first_choice,
            Some((true, _)) => {
                return Source {
                    probe: row,
                    fallback: Some(format!("{} -> {row}", passed.join("; "))),
                }
            }
            Some((false, why)) if kernel_lacks_hook(why) => {
                passed.push(format!("{row} unavailable ({})", reason_summary(why)));
            }
            _ => return first_choice,
        }
    }
    first_choice
}

/// Where `agent`'s OOM context must come from.
pub fn oom(agent: &Agent, status: &ProbeStatus) -> Source {
    source(&OOM_ROWS, agent.oom_probe, status)
}

/// Where `agent`'s candidates must come from.
pub fn candidates(agent: &Agent, status: &ProbeStatus) -> Source {
    source(&CANDIDATES_ROWS, agent.candidates_probe, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AGENTS;

    fn status(rows: &[(&str, bool, &str)]) -> ProbeStatus {
        rows.iter()
            .map(|(p, ok, d)| (p.to_string(), (*ok, d.to_string())))
            .collect()
    }

    #[test]
    fn the_first_choice_attached_is_the_source() {
        let s = status(&[(FENTRY, true, "all"), (KPROBE, true, "all")]);
        assert_eq!(
            oom(&AGENTS[0], &s),
            Source {
                probe: FENTRY,
                fallback: None
            }
        );
    }

    #[test]
    fn a_hook_the_kernel_refused_to_attach_falls_back_with_the_reason() {
        // arm64 6.1: no ftrace direct calls.
        let s = status(&[
            (FENTRY, false, "attach: `bpf_raw_tracepoint_open` failed"),
            (KPROBE, true, "constraint, ..."),
            (
                FEXIT,
                false,
                "oom_scope_fentry on out_of_memory: attach: `bpf_raw_tracepoint_open` failed",
            ),
            (KRETPROBE, true, "candidates"),
        ]);
        let fentry_agent = oom(&AGENTS[0], &s);
        assert_eq!(fentry_agent.probe, KPROBE);
        assert_eq!(
            fentry_agent.fallback.as_deref(),
            Some(
                "fentry:oom_kill_process unavailable (attach: `bpf_raw_tracepoint_open` failed) \
                 -> kprobe:oom_kill_process"
            )
        );
        assert_eq!(candidates(&AGENTS[0], &s).probe, KRETPROBE);
        // The kprobe agent's own choices attached.
        assert_eq!(oom(&AGENTS[1], &s).fallback, None);
    }

    #[test]
    fn a_split_oom_badness_falls_back_to_the_kretprobe() {
        let why = "this kernel's OOM killer calls oom_badness.part.0 (GCC split oom_badness; \
                   /proc/kallsyms), which has no BTF for fexit";
        let s = status(&[
            (FEXIT, false, why),
            (KRETPROBE, true, "on oom_badness.part.0"),
        ]);
        assert_eq!(candidates(&AGENTS[0], &s).probe, KRETPROBE);
    }

    #[test]
    fn other_reasons_keep_the_first_choice() {
        for why in [
            "load: the BPF_PROG_LOAD syscall failed. Verifier output: invalid mem access",
            "disabled by --disable-probe",
        ] {
            let s = status(&[(FENTRY, false, why), (KPROBE, true, "all")]);
            assert_eq!(oom(&AGENTS[0], &s).probe, FENTRY, "{why}");
        }
        // Not mentioned at all, or nothing attached after it.
        assert_eq!(
            oom(&AGENTS[0], &status(&[(KPROBE, true, "all")])).probe,
            FENTRY
        );
        let refused = "attach: EPERM";
        let s = status(&[(FENTRY, false, refused), (KPROBE, false, refused)]);
        assert_eq!(oom(&AGENTS[0], &s).probe, FENTRY);
    }

    mod real {
        //! The fallbacks on real consoles: Debian 12's arm64 6.1 (fentry and fexit do not
        //! attach: no ftrace direct calls before 6.4) and the x86-64 sample (no fallback).

        use super::super::{FENTRY, FEXIT};
        use crate::{
            check::{
                check_console,
                fixture::{get, mutate_in, ARM64_FIXTURE, FIXTURE},
                Report,
            },
            console::{probe_status, Console},
        };

        /// `(agent, check)` of every check that passed on a fallback.
        fn fallbacks(r: &Report) -> Vec<(&str, &str)> {
            r.agents
                .iter()
                .flat_map(|(a, cs)| cs.iter().map(move |c| (a.name, c)))
                .filter(|(_, c)| c.fallback.is_some())
                .map(|(a, c)| (a, c.name))
                .collect()
        }

        #[test]
        fn the_arm64_console_passes_on_the_rows_its_fentry_agent_fell_back_to() {
            let r = check_console(ARM64_FIXTURE);
            assert!(r.failed().is_empty(), "{r:#?}");
            assert_eq!(
                fallbacks(&r),
                [
                    ("fentry", "oom context"),
                    ("fentry", "candidates"),
                    ("fentry", "metrics"),
                    ("fentry", "probes attached")
                ]
            );
            let oom = get(&r, "fentry", "oom context");
            assert!(
                oom.detail
                    .starts_with("6 events from kprobe:oom_kill_process: "),
                "{}",
                oom.detail
            );
            assert_eq!(
                oom.fallback.as_deref(),
                Some(
                    "fentry:oom_kill_process unavailable (attach: `bpf_raw_tracepoint_open` \
                     failed) -> kprobe:oom_kill_process"
                )
            );
            assert_eq!(
                get(&r, "fentry", "candidates").fallback.as_deref(),
                Some(
                    "fexit:oom_badness unavailable (oom_scope_fentry on out_of_memory: attach: \
                     `bpf_raw_tracepoint_open` failed) -> kretprobe:oom_badness"
                )
            );
            // Those two rows are the only ones of the fentry agent that did not attach.
            let c = Console::parse(ARM64_FIXTURE);
            let status = probe_status(c.section("agent-log"));
            let unavailable: Vec<&str> = status
                .iter()
                .filter(|(_, s)| !s.0)
                .map(|(p, _)| p.as_str())
                .collect();
            assert_eq!(unavailable, [FENTRY, FEXIT]);
            assert!(ARM64_FIXTURE.contains("OWVM: init running on 6.1.0-57-cloud-arm64 aarch64 "));
        }

        #[test]
        fn a_first_choice_the_verifier_refused_is_no_fallback() {
            let from = r#""reason":"attach: `bpf_raw_tracepoint_open` failed""#;
            let to = r#""reason":"load: the BPF_PROG_LOAD syscall failed: invalid mem access""#;
            let r = check_console(&mutate_in(ARM64_FIXTURE, from, to));
            assert_eq!(
                r.failed(),
                [
                    "fentry: oom context",
                    "fentry: metrics",
                    "fentry: probes attached"
                ]
            );
            assert!(get(&r, "fentry", "probes attached")
                .detail
                .contains("fentry:oom_kill_process: unavailable: load: "));
        }

        #[test]
        fn the_x86_sample_takes_no_fallback() {
            assert!(fallbacks(&check_console(FIXTURE)).is_empty());
        }
    }
}
