//! The guest's `/init` (`init.sh`, the same for every architecture): it starts the three
//! [`AGENTS`](crate::agent::AGENTS), causes the OOM kills and prints the results between
//! `@@OWVM BEGIN name@@` / `@@OWVM END name@@` markers on the serial console; and the numbers
//! the checks expect of it.

use crate::agent::AGENTS;

/// Number of single-task OOM victims in `/sys/fs/cgroup/t` (the last one has oom_score_adj 300).
pub const T_VICTIMS: usize = 3;
/// `memory.max` of both test cgroups (the `mkcg` of [`INIT_TEMPLATE`]).
pub const MEMORY_MAX: i64 = 64 << 20;
/// Tasks in the `memory.oom.group=1` cgroup `/sys/fs/cgroup/g`: two sleepers (the second with
/// oom_score_adj 500, ranked between the hog and the first) and one hog.
pub const G_VICTIMS: usize = 3;

/// Allocating threads of each multi-threaded victim in `/sys/fs/cgroup/m` (two runs: leader
/// alive, leader exited).
pub const M_THREADS: usize = 4;
/// Runs of the multi-threaded victim.
pub const M_VICTIMS: usize = 2;

/// Seconds `/init` waits for every agent to be ready before the first victim. About 10 s
/// suffice when every program loads; an older kernel's verifier that explores a program to
/// its 1M-instruction limit before refusing it (E2BIG) takes over a minute per agent under TCG
/// (`qemu::boot_timeout` leaves room for that and the rest of the run).
pub const READY_SECS: u64 = 360;

/// `/init` (`init.sh`), with `@START_AGENTS@`, `@SUFFIXES@`, `@READY_SECS@` and `@THREADS@`
/// filled in by [`init_script`]. No `set -e`: whatever fails, the results are still printed
/// and the guest powers off.
const INIT_TEMPLATE: &str = include_str!("init.sh");

/// `/init` for the agents of [`AGENTS`]: one `start_agent` line each, and their file suffixes
/// (`"" -kprobe -kmsg`) for the loops that wait for them, stop them and print their sections.
pub fn init_script() -> String {
    let start: Vec<String> = AGENTS
        .iter()
        .map(|a| {
            let line = format!(
                "start_agent {} \"{}\" {}",
                a.port,
                a.suffix,
                a.disable_args()
            );
            line.trim_end().to_string()
        })
        .collect();
    let suffixes: Vec<String> = AGENTS.iter().map(|a| format!("\"{}\"", a.suffix)).collect();
    INIT_TEMPLATE
        .replace("@THREADS@", &M_THREADS.to_string())
        .replace("@READY_SECS@", &READY_SECS.to_string())
        .replace("@START_AGENTS@", &start.join("\n"))
        .replace("@SUFFIXES@", &suffixes.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_uses_the_memory_limit_the_check_expects() {
        assert_eq!(MEMORY_MAX, 64 << 20);
        assert!(init_script().contains("echo $((64 << 20)) > $CG/$1/memory.max"));
    }

    #[test]
    fn init_script_starts_each_agent_and_prints_every_section_the_check_reads() {
        let script = init_script();
        for tag in ["@START_AGENTS@", "@SUFFIXES@", "@READY_SECS@", "@THREADS@"] {
            assert!(!script.contains(tag), "{tag} left in /init");
        }
        assert!(script.contains(
            "start_agent 9838 \"-kprobe\" --disable-probe fentry:oom_kill_process \
             --disable-probe fexit:oom_badness\n"
        ));
        assert!(script.contains(
            "start_agent 9839 \"-kmsg\" --disable-probe fentry:oom_kill_process \
             --disable-probe kprobe:oom_kill_process --disable-probe fexit:oom_badness \
             --disable-probe kretprobe:oom_badness\n"
        ));
        assert!(script.contains("start_agent 9837 \"\"\n"));
        assert_eq!(
            script
                .matches("for s in \"\" \"-kprobe\" \"-kmsg\"; do")
                .count(),
            5
        );
        for name in crate::console::BOOT_SECTIONS {
            assert!(
                script.contains(&format!("begin {name};"))
                    || script.contains(&format!("begin {name}\n")),
                "init script lacks section {name}"
            );
        }
        for name in crate::console::AGENT_SECTIONS {
            assert!(
                script.contains(&format!("begin {name}$s;")),
                "init script lacks section {name}$s"
            );
        }
    }
}
