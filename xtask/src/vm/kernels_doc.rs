//! `docs/kernels.md`, generated at the end of every `vm-test` from the last console of each
//! kernel under `target/vm/<release>/console.log` (the run that booted it last): kernel ×
//! architecture × hook → attached / fallback / unavailable (with the agent's own reason), the
//! event fields each kernel filled and where from, and each agent's verdict. Never written by
//! hand.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};
use serde_json::Value;

use oomwatch_guest::{
    agent::{Agent, AGENTS},
    check::check_console,
    console::{probe_status, reason_summary, Console, DISABLED},
};

use super::arch::Arch;

/// The hooks, in the table's order, and the family each belongs to: a row attached while an
/// earlier row of its family is unavailable is a fallback.
const HOOKS: [(&str, &str); 13] = [
    ("tp_btf:mark_victim", "victim"),
    ("tracepoint:oom/mark_victim", "victim"),
    ("fentry:oom_kill_process", "oom"),
    ("kprobe:oom_kill_process", "oom"),
    ("kmsg:oom_report", "oom"),
    ("fexit:oom_badness", "candidates"),
    ("kretprobe:oom_badness", "candidates"),
    ("tp_btf:signal_generate", "signal"),
    ("tracepoint:signal/signal_generate", "signal"),
    ("tracepoint:oom/reaper", "reaper"),
    ("tracepoint:sched/sched_process_exit", "exit"),
    ("tracepoint:oom/reclaim_retry_zone", "reclaim"),
    ("tracepoint:oom/compact_retry", "compact"),
];

/// One kernel's last run.
struct Run {
    release: String,
    arch: Arch,
    /// Hook → (state, the agent's words).
    hooks: BTreeMap<&'static str, (&'static str, String)>,
    /// Event field → the `sources` values seen for it (empty: filled without a source group),
    /// or absent: never filled.
    fields: BTreeMap<String, Vec<String>>,
    never: Vec<String>,
    verdicts: Vec<(&'static str, usize, usize)>,
}

/// Rewrites `doc` from every `vm_dir/*/console.log`.
pub fn write(vm_dir: &Path, doc: &Path) -> Result<()> {
    let mut runs = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(vm_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("console.log").is_file())
        .collect();
    // x86-64's kernels, then arm64's, each by version.
    dirs.sort_by_key(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        (Arch::of_release(&name), version_key(&name))
    });
    for dir in dirs {
        let text = fs::read_to_string(dir.join("console.log"))?;
        let release = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        runs.push(run(release, &text));
    }
    fs::write(doc, render(&runs)).with_context(|| format!("[vm] cannot write {}", doc.display()))
}

fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|d| d.parse().ok())
        .collect()
}

fn run(release: String, text: &str) -> Run {
    let console = Console::parse(text);
    let report = check_console(text);
    let verdicts = report
        .agents
        .iter()
        .map(|(a, cs)| (a.name, cs.iter().filter(|c| c.ok).count(), cs.len()))
        .collect();
    let (fields, never) = fields(&console, &AGENTS[0]);
    Run {
        arch: Arch::of_release(&release),
        release,
        hooks: hooks(&console),
        fields,
        never,
        verdicts,
    }
}

/// Each hook's state as the first agent that did not disable it logged it.
fn hooks(console: &Console) -> BTreeMap<&'static str, (&'static str, String)> {
    let status: Vec<_> = AGENTS
        .iter()
        .map(|a| probe_status(console.section(&a.section("agent-log"))))
        .collect();
    let mut out = BTreeMap::new();
    for (hook, family) in HOOKS {
        let seen = status
            .iter()
            .filter_map(|s| s.get(hook))
            .find(|(_, d)| d != DISABLED);
        let Some((attached, detail)) = seen else {
            continue;
        };
        // A fallback: the first row of its family that attached, after rows that could not.
        let earlier: Vec<&str> = HOOKS
            .iter()
            .take_while(|(h, _)| *h != hook)
            .filter(|(_, f)| *f == family)
            .map(|(h, _)| *h)
            .collect();
        let unavailable = |h: &&str| out.get(h).is_some_and(|(s, _)| *s == "unavailable");
        let earlier_failed = !earlier.is_empty() && earlier.iter().all(unavailable);
        let state = match (attached, earlier_failed) {
            (true, false) => "attached",
            (true, true) => "fallback",
            (false, _) => "unavailable",
        };
        out.insert(hook, (state, detail.clone()));
    }
    out
}

/// The agent's events: each top-level field filled in any event, with the `sources` of its
/// group, and the fields no event filled.
fn fields(console: &Console, agent: &Agent) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let events: Vec<Value> = console
        .section(&agent.section("events"))
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        // SIGKILL attribution's lines have fields of their own (target, sender).
        .filter(|e| {
            !matches!(
                e.get("type").and_then(Value::as_str),
                Some("sigkill" | "container_killed")
            )
        })
        .collect();
    let mut filled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all: Vec<String> = Vec::new();
    for e in &events {
        let Some(obj) = e.as_object() else { continue };
        let sources = obj.get("sources").and_then(Value::as_object);
        for (k, v) in obj {
            if k == "sources" {
                continue;
            }
            if !all.contains(k) {
                all.push(k.clone());
            }
            if v.is_null() {
                continue;
            }
            let entry = filled.entry(k.clone()).or_default();
            let group = source_group(k);
            if let Some(s) = sources.and_then(|s| s.get(group)).and_then(Value::as_str) {
                if !entry.iter().any(|x| x == s) {
                    entry.push(s.to_string());
                }
            }
        }
    }
    let never = all
        .into_iter()
        .filter(|k| !filled.contains_key(k))
        .collect();
    (filled, never)
}

/// The `sources` group of a top-level field (docs/events.md, "Sources").
fn source_group(field: &str) -> &str {
    match field {
        "total_vm" | "anon_rss" | "file_rss" | "shmem_rss" => "memory",
        "oom_id" | "constraint" | "gfp_mask" | "gfp_flags" | "order" | "totalpages" | "badness"
        | "chosen" | "oom_memcg" | "oom_memcg_id" | "group_kill" | "message" => "oom",
        "container_init" => "partial_kill",
        f => f,
    }
}

/// The page's title and first paragraph.
const INTRO: &str =
    "# Kernels\n\n<!-- Generated by `cargo xtask vm-test` from the last console of each \
         kernel (target/vm/<release>/console.log); do not edit. -->\n\nWhat the agent attached, \
         and what its events carried, on each kernel `cargo xtask vm-test` booted last (x86_64 \
         and aarch64 guests, QEMU TCG; see the README's \"Tests on other kernels\"). A hook's \
         state is the one logged \
         by the first of the three guest agents that did not disable it (`fentry`, then \
         `kprobe`, then `kmsg`): **attached** (the first choice of its family), **fallback** \
         (attached because an earlier row of its family could not be), **unavailable** (the \
         agent's reason), **not tried** (an earlier row of its family attached in every agent). \
         The development host (Linux 6.18, cgroup v1) is not booted here: \
         there fentry is refused (EPERM) and kprobes are absent, so OOM context comes from \
         `kmsg:oom_report` (see `oomwatch check` on a host).\n";

fn render(runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{INTRO}");
    let _ = writeln!(s, "## Hooks\n");
    let mut header = "| hook |".to_string();
    let mut rule = "|---|".to_string();
    for r in runs {
        let _ = write!(header, " {} |", r.release);
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    let arches: String = runs.iter().map(|r| format!(" {} |", r.arch)).collect();
    let _ = writeln!(s, "| architecture |{arches}");
    let mut notes = Vec::new();
    for (hook, _) in HOOKS {
        let mut row = format!("| `{hook}` |");
        for r in runs {
            let cell = match r.hooks.get(hook) {
                Some(("attached", _)) => "attached".to_string(),
                Some((state, why)) => {
                    let why = reason_summary(why);
                    notes.push(format!("{} `{hook}` ({state}): {why}", r.release));
                    format!("{state} [{}]", notes.len())
                }
                None => "not tried".to_string(),
            };
            let _ = write!(row, " {cell} |");
        }
        let _ = writeln!(s, "{row}");
    }
    if !notes.is_empty() {
        let _ = writeln!(s);
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(s, "{}. {n}", i + 1);
        }
    }
    let _ = writeln!(
        s,
        "\n## Event fields (agent 1, `fentry`)\n\nEach field its events filled on the kernel, \
         with the `sources` of its group; then the fields no event filled.\n"
    );
    for r in runs {
        let filled: Vec<String> = r
            .fields
            .iter()
            .map(|(f, src)| match src.is_empty() {
                true => format!("`{f}`"),
                false => format!("`{f}` ({})", src.join(", ")),
            })
            .collect();
        let never: Vec<String> = r.never.iter().map(|f| format!("`{f}`")).collect();
        let _ = writeln!(s, "### {}\n\nFilled: {}.\n", r.release, filled.join(", "));
        let _ = writeln!(
            s,
            "Never filled: {}.\n",
            if never.is_empty() {
                "none".to_string()
            } else {
                never.join(", ")
            }
        );
    }
    let _ = writeln!(
        s,
        "## Checks\n\n| kernel | agent | checks passed |\n|---|---|---|"
    );
    for r in runs {
        for (agent, ok, all) in &r.verdicts {
            let _ = writeln!(s, "| {} | {agent} | {ok}/{all} |", r.release);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    // The consoles `oomwatch-guest`'s checks are tested on.
    const FIXTURE: &str = include_str!("../../../oomwatch-guest/tests/fixtures/vm-console-7.2.log");
    const ARM64_FIXTURE: &str =
        include_str!("../../../oomwatch-guest/tests/fixtures/vm-console-arm64-6.1.log");

    #[test]
    fn the_fixture_console_gives_a_row_per_hook_and_its_fields() {
        let r = run("7.2.13+deb14-cloud-amd64".into(), FIXTURE);
        assert_eq!(
            r.hooks.get("fentry:oom_kill_process").map(|h| h.0),
            Some("attached")
        );
        assert!(r.fields.contains_key("anon_rss"), "{:?}", r.fields);
        let doc = render(&[r]);
        assert!(
            doc.contains("| `fentry:oom_kill_process` | attached |"),
            "{doc}"
        );
        assert!(doc.contains("### 7.2.13+deb14-cloud-amd64"), "{doc}");
    }

    #[test]
    fn on_arm64_6_1_the_kprobe_is_the_fallback_and_the_kernel_log_stays_attached() {
        let r = run("6.1.0-57-cloud-arm64".into(), ARM64_FIXTURE);
        assert_eq!(r.arch, Arch::Arm64);
        let state = |hook: &str| r.hooks.get(hook).map(|h| h.0);
        assert_eq!(state("fentry:oom_kill_process"), Some("unavailable"));
        assert_eq!(state("kprobe:oom_kill_process"), Some("fallback"));
        assert_eq!(state("kmsg:oom_report"), Some("attached"));
        assert_eq!(state("fexit:oom_badness"), Some("unavailable"));
        assert_eq!(state("kretprobe:oom_badness"), Some("fallback"));
        let doc = render(&[run("7.2.13+deb14-cloud-amd64".into(), FIXTURE), r]);
        assert!(doc.contains("| architecture | x86_64 | aarch64 |"), "{doc}");
    }
}
