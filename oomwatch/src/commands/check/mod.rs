//! `oomwatch check`: a preflight. Can the agent run here, what will it capture, and which host
//! settings are risky; one report (text or JSON) and an exit code.
//!
//! The sections, each gathered by its module:
//!
//! | Section       | Module           | Looks at                                                 |
//! |---------------|------------------|----------------------------------------------------------|
//! | Privileges    | [`privileges`]   | effective capabilities, `kernel.dmesg_restrict`          |
//! | Kernel        | [`kernel`]       | release, BTF, tracefs, kprobes, memory cgroup, /dev/kmsg |
//! | Capture       | [`capture`]      | the probe table, really loaded (then detached)           |
//! | Host settings | [`settings`]     | [`HostCollectors::snapshot`], `oom_score_adj=-1000` RSS  |
//! | Run time      | [`silent`]       | probes a running agent found silent after an OOM kill    |
pub mod capture;
pub mod kernel;
pub mod privileges;
pub mod report;
pub mod settings;
pub mod silent;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::host::{HostCollectors, HostSnapshot, Warning};
use crate::record::ProbeId;
use capture::Capture;
use kernel::Kernel;
use privileges::Privileges;
use report::{Section, Status};
use settings::Protected;
use silent::Silent;

/// Preflight: can the agent run here, what will it capture, which settings are risky.
///
/// One line per check (`ok`, `info`, `warn`, `FAIL`) under the headers Privileges, Kernel,
/// Capture and Host settings; every warn and FAIL line says why and how to fix it. The probes
/// are really loaded and attached as `oomwatch run` would, then detached at once.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct CheckArgs {
    /// Print one JSON object (the same items, plus the values behind them) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The host's root filesystem: `/proc` and `/sys/fs/cgroup` are read below it (`/host` in
    /// a pod that mounts the host's directories there).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Do not load the probes; check privileges, kernel and host settings only. What would stop
    /// the agent (missing privileges, no BTF nor tracefs) is then a warning, not a failure, so
    /// a host root can be checked without privileges.
    #[arg(long)]
    pub no_probes: bool,
    /// Check as `oomwatch run --disable-probe PROBE` would run (repeatable).
    #[arg(long = "disable-probe", value_name = "PROBE", value_enum)]
    pub disable_probe: Vec<ProbeId>,
    /// The agent's `--state-dir`: the probes a running agent found attached but silent after
    /// an OOM kill are read from it (section Run time).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/oomwatch")]
    pub state_dir: PathBuf,
}

/// The exit statuses, as `--help` shows them.
pub const EXIT_STATUS: &str = "Exit status:
  0  the agent can run here and nothing risky was found
  1  the agent cannot run here (missing privileges, no probe could attach, bad --host-root)
  2  usage error
  3  the agent can run here, with warnings (risky host settings, reduced capture)";

/// Everything found: the items and the values behind them.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// 0, 1 or 3; see [`EXIT_STATUS`].
    pub exit_code: u8,
    /// `ok`, `warnings` or `cannot_run`.
    pub verdict: &'static str,
    pub host_root: PathBuf,
    pub sections: Vec<Section>,
    pub privileges: Privileges,
    pub kernel: Kernel,
    pub capture: Capture,
    pub host: HostReport,
    /// The probes a running agent found silent (see [`silent`]).
    pub silent: Silent,
}

/// The host settings' values and the snapshot's warnings.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub values: HostSnapshot,
    /// Exactly [`HostSnapshot::warnings`].
    pub warnings: Vec<Warning>,
    /// Processes with `oom_score_adj=-1000`.
    pub protected: Protected,
}

/// Runs `oomwatch check`: prints the report and returns 0, 1 or 3 (see [`EXIT_STATUS`]).
pub fn main(args: CheckArgs) -> ExitCode {
    let report = gather(&args);
    let text = if args.json {
        // Serializing plain data cannot fail; an object keeps the output valid anyway.
        let mut s = serde_json::to_string_pretty(&report)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
        s.push('\n');
        s
    } else {
        report::render_text(&report.sections)
    };
    // Not println!: a closed stdout must not turn into a panic. The exit code is the report's.
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::from(report.exit_code)
}

/// Gathers every section.
pub fn gather(args: &CheckArgs) -> Report {
    let privileges = Privileges::gather();
    let kernel = Kernel::gather(&args.btf, &args.host_root);
    let host_root_error = host_root_error(&args.host_root);
    let capture = if args.no_probes {
        Capture::not_tried("--no-probes")
    } else if let Some(missing) = privileges.missing.as_deref() {
        Capture::not_tried(format!("missing {missing}"))
    } else if host_root_error.is_some() {
        Capture::not_tried("--host-root has no proc/ (the agent stops before loading)")
    } else {
        capture::load(
            args.btf.clone(),
            &args.disable_probe,
            kernel.kmsg_error.as_deref(),
        )
    };
    let collectors = HostCollectors::new(&args.host_root);
    let values = collectors.snapshot();
    let warnings = values.warnings();
    let protected = Protected::gather(&args.host_root, values.mem_total_bytes);
    let host = HostReport {
        values,
        warnings,
        protected,
    };
    let silent = Silent::gather(&args.state_dir, &args.host_root);
    let mut sections = sections(
        args,
        &privileges,
        &kernel,
        &capture,
        &host,
        host_root_error.as_deref(),
    );
    sections.push(Section {
        name: "run_time",
        title: "Run time",
        items: silent::items(&silent),
    });
    let exit_code = report::exit_code(&sections);
    Report {
        exit_code,
        verdict: report::verdict(exit_code),
        host_root: args.host_root.clone(),
        sections,
        privileges,
        kernel,
        capture,
        host,
        silent,
    }
}

fn host_root_error(root: &Path) -> Option<String> {
    (!root.join("proc").is_dir()).then(|| {
        format!(
            "--host-root {} has no proc/ directory: the agent refuses to start",
            root.display()
        )
    })
}

/// Judges what was found: the items of every section.
pub fn sections(
    args: &CheckArgs,
    privileges: &Privileges,
    kernel: &Kernel,
    capture: &Capture,
    host: &HostReport,
    host_root_error: Option<&str>,
) -> Vec<Section> {
    // Under --no-probes nothing is tried, so nothing that would stop the agent is a failure.
    let fatal = if args.no_probes {
        Status::Warn
    } else {
        Status::Fail
    };
    let kmsg = if capture.kmsg_needed(&args.disable_probe) {
        Status::Warn
    } else {
        Status::Info
    };
    let judge = kernel::Judge {
        fatal,
        kmsg,
        may_mount: privileges.cap_sys_admin,
        probes_tried: capture.tried,
    };
    vec![
        Section {
            name: "privileges",
            title: "Privileges",
            items: privileges::items(privileges, fatal, kmsg),
        },
        Section {
            name: "kernel",
            title: "Kernel",
            items: kernel::items(kernel, &args.host_root, &judge),
        },
        Section {
            name: "capture",
            title: "Capture",
            items: capture::items(capture, fatal),
        },
        Section {
            name: "host",
            title: "Host settings",
            items: settings::items(
                &host.values,
                &host.warnings,
                &host.protected,
                host_root_error,
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::capture::{self, Row};
    use super::privileges::{self, Privileges};
    use super::report::{self, wrap, Item, Section, Status};
    use super::settings::{self, Protected, PROTECTED_CODE};
    use crate::explain::rank;
    use crate::host::HostSnapshot;
    use crate::record::ProbeId;

    fn section(items: Vec<Item>) -> Vec<Section> {
        vec![Section {
            name: "s",
            title: "S",
            items,
        }]
    }

    #[test]
    fn exit_code_is_the_worst_status() {
        let ok = Item::ok("a", "fine");
        let info = Item::info("b", "fact");
        let warn = Item::new(Status::Warn, "c", "risky");
        let fail = Item::new(Status::Fail, "d", "broken");
        assert_eq!(
            report::exit_code(&section(vec![ok.clone(), info.clone()])),
            0
        );
        assert_eq!(
            report::exit_code(&section(vec![ok.clone(), warn.clone()])),
            3
        );
        assert_eq!(report::exit_code(&section(vec![warn, fail, ok])), 1);
        assert_eq!(report::exit_code(&[]), 0);
        assert_eq!(report::verdict(3), "warnings");
        assert_eq!(report::verdict(1), "cannot_run");
    }

    #[test]
    fn wrap_keeps_lines_within_the_width() {
        let text = "word ".repeat(100);
        let lines = wrap("warn ", "       ", &text, 40);
        assert!(lines.len() > 5);
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:?}");
        assert!(lines[0].starts_with("warn word"));
        assert!(lines[1].starts_with("       word"));
        // A word longer than the width gets a line of its own, nothing is lost.
        let long = "x".repeat(60);
        let lines = wrap("ok   ", "  ", &format!("a {long} b"), 40);
        assert_eq!(
            lines,
            vec!["ok   a".to_string(), format!("  {long}"), "  b".into()]
        );
        assert_eq!(wrap("ok   ", " ", "", 10), vec!["ok".to_string()]);
    }

    #[test]
    fn text_report_has_headers_markers_fixes_and_a_summary() {
        let sections = vec![Section {
            name: "privileges",
            title: "Privileges",
            items: vec![
                Item::ok("a", "fine"),
                Item::new(Status::Fail, "b", "missing capability CAP_BPF ".repeat(8))
                    .with_fix("run as root"),
            ],
        }];
        let text = report::render_text(&sections);
        assert!(
            text.starts_with("Privileges\nok   fine\nFAIL missing"),
            "{text}"
        );
        assert!(text.contains("\n     fix: run as root\n"), "{text}");
        assert!(
            text.lines().all(|l| l.chars().count() <= report::WIDTH),
            "{text}"
        );
        assert!(text.trim_end().ends_with("(exit 1)"), "{text}");
    }

    #[test]
    fn one_line_joins_and_cuts() {
        assert_eq!(report::one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(report::one_line("abcdef", 4), "abc…");
        assert_eq!(report::one_line("", 0), "");
    }

    #[test]
    fn missing_bpf_capability_fails_with_the_fix() {
        let p = Privileges::from_effective(Some(0), Some(1));
        assert!(!p.can_load_probes);
        let items = privileges::items(&p, Status::Fail, Status::Warn);
        let bpf = &items[0];
        assert_eq!((bpf.status, bpf.code), (Status::Fail, "caps_bpf"));
        assert!(bpf.message.contains("CAP_BPF"), "{}", bpf.message);
        assert!(bpf
            .fix
            .as_deref()
            .unwrap()
            .contains("setcap cap_bpf,cap_perfmon"));
        assert!(items.iter().all(|i| i.status != Status::Ok));
        // Under --no-probes the same problem only warns.
        let items = privileges::items(&p, Status::Warn, Status::Warn);
        assert_eq!(items[0].status, Status::Warn);
    }

    #[test]
    fn root_has_every_privilege() {
        let p = Privileges::from_effective(Some(0x1ff_ffff_ffff), Some(1));
        assert!(p.can_load_probes && p.cap_syslog && p.cap_sys_resource && p.cap_sys_admin);
        let items = privileges::items(&p, Status::Fail, Status::Warn);
        assert!(items.iter().all(|i| i.status == Status::Ok), "{items:?}");
        // CAP_PERFMON alone is not enough; the missing one is named.
        let p = Privileges::from_effective(Some(1 << 38), Some(0));
        assert_eq!(p.missing.as_deref(), Some("CAP_BPF"));
        // dmesg_restrict=0: anyone reads /dev/kmsg.
        let items = privileges::items(&p, Status::Fail, Status::Warn);
        assert_eq!(items[1].status, Status::Ok);
        let p = Privileges::from_effective(None, None);
        assert!(!p.can_load_probes);
    }

    fn row(probe: ProbeId, attached: bool, detail: &str) -> Row {
        Row {
            probe,
            attached,
            detail: detail.into(),
        }
    }

    #[test]
    fn oom_context_is_chosen_as_the_agent_does() {
        let victims = || {
            vec![
                row(ProbeId::MarkVictimBtf, true, "tgid"),
                row(ProbeId::MarkVictimTp, true, "extended format"),
            ]
        };
        let mut rows = victims();
        rows.push(row(ProbeId::OomKillFentry, true, "constraint"));
        let c = capture::from_rows(rows, None, &[], None);
        assert_eq!(c.oom_context, Some(ProbeId::OomKillFentry));
        assert!(c.probes.iter().all(|r| r.probe != ProbeId::KmsgOomReport));
        assert!(!c.kmsg_needed(&[]));

        let mut rows = victims();
        rows.push(row(ProbeId::OomKillFentry, false, "attach: EPERM"));
        rows.push(row(ProbeId::OomKillKprobe, false, "no kprobe support"));
        let c = capture::from_rows(rows.clone(), None, &[], None);
        assert_eq!(c.oom_context, Some(ProbeId::KmsgOomReport));
        assert_eq!(
            c.victim,
            vec![ProbeId::MarkVictimBtf, ProbeId::MarkVictimTp]
        );
        assert!(c
            .probes
            .last()
            .is_some_and(|r| r.probe == ProbeId::KmsgOomReport && r.attached));
        let items = capture::items(&c, Status::Fail);
        assert_eq!(report::exit_code(&section(items.clone())), 0, "{items:?}");
        assert!(items
            .iter()
            .any(|i| i.message.contains("kmsg:oom_report (kernel log)")));

        // /dev/kmsg unreadable: no context at all, which warns.
        let c = capture::from_rows(
            rows.clone(),
            None,
            &[],
            Some("cannot open /dev/kmsg: EPERM"),
        );
        assert_eq!(c.oom_context, None);
        assert!(c.kmsg_needed(&[]));
        let items = capture::items(&c, Status::Fail);
        assert_eq!(report::exit_code(&section(items)), 3);
        // Disabled by flag: the row says so.
        let c = capture::from_rows(rows, None, &[ProbeId::KmsgOomReport], None);
        assert_eq!(c.probes.last().map(|r| r.attached), Some(false));
        assert!(!c.kmsg_needed(&[ProbeId::KmsgOomReport]));
    }

    #[test]
    fn a_lost_victim_probe_warns_and_a_load_error_fails() {
        let rows = vec![
            row(ProbeId::MarkVictimBtf, false, "cannot read BTF"),
            row(ProbeId::MarkVictimTp, true, "extended format"),
            row(ProbeId::OomKillKprobe, true, "constraint"),
        ];
        let c = capture::from_rows(rows, Some("tracefs"), &[], None);
        let items = capture::items(&c, Status::Fail);
        let victim = items.iter().find(|i| i.code == "victim").unwrap();
        assert_eq!(victim.status, Status::Warn);
        assert!(victim.message.contains(ProbeId::MarkVictimBtf.name()));

        let mut c = capture::Capture::not_tried("x");
        assert_eq!(capture::items(&c, Status::Fail)[0].status, Status::Info);
        c.not_tried = None;
        c.tried = true;
        c.error = Some("no OOM probe could attach".into());
        assert_eq!(capture::items(&c, Status::Fail)[0].status, Status::Fail);
    }

    fn risky() -> HostSnapshot {
        HostSnapshot {
            panic_on_oom: Some(2),
            oom_kill_allocating_task: Some(1),
            oom_dump_tasks: Some(0),
            overcommit_memory: Some(0),
            overcommit_ratio: Some(50),
            min_free_kbytes: Some(10),
            min_free_default_kbytes: Some(11411),
            mem_total_bytes: Some(8 << 30),
            ..HostSnapshot::default()
        }
    }

    #[test]
    fn every_snapshot_warning_is_an_item_with_its_code_and_a_fix() {
        let snap = risky();
        let warnings = snap.warnings();
        assert!(warnings.len() >= 4);
        let items = settings::items(&snap, &warnings, &Protected::default(), None);
        for w in &warnings {
            let item = items.iter().find(|i| i.code == w.code).unwrap();
            assert_eq!(item.status, Status::Warn);
            assert_eq!(item.message, w.message);
            assert!(item.fix.is_some(), "{}", w.code);
        }
        let fix = settings::fix_for("min_free_kbytes_low", &snap).unwrap();
        assert!(fix.contains("vm.min_free_kbytes=11411"), "{fix}");
        assert_eq!(settings::fix_for("unknown", &snap), None);
        // The overcommit line is fine here.
        assert!(items
            .iter()
            .any(|i| i.code == "vm_overcommit" && i.status == Status::Ok));
        let sane = HostSnapshot {
            panic_on_oom: Some(0),
            oom_dump_tasks: Some(1),
            ..HostSnapshot::default()
        };
        let items = settings::items(&sane, &sane.warnings(), &Protected::default(), None);
        assert_eq!(report::exit_code(&section(items)), 0);
        let items = settings::items(&sane, &[], &Protected::default(), Some("no proc"));
        assert_eq!(report::exit_code(&section(items)), 1);
    }

    fn top_row(pid: i32, adj: i16, rss: u64) -> rank::Row {
        rank::Row {
            rank: None,
            pid,
            comm: format!("p{pid}"),
            oom_score: 0,
            host_oom_score: 0,
            kernel_oom_score: None,
            oom_score_adj: adj,
            points: None,
            share: 0.0,
            rss_anon: rss,
            rss_file: 0,
            rss_shmem: 0,
            swap: 0,
            pgtables: 0,
            domain_pages: 1,
            cgroup: None,
            pod: None,
            protected: true,
            protected_by: None,
        }
    }

    #[test]
    fn protected_processes_holding_most_memory_warn() {
        let rows = [
            top_row(1, 0, 1 << 30),
            top_row(10, -1000, 3 << 30),
            top_row(11, -1000, 2 << 30),
        ];
        let p = Protected::from_rows(&rows, Some(8 << 30));
        assert_eq!((p.processes, p.rss_bytes), (2, 5 << 30));
        assert_eq!(p.largest[0].pid, 10);
        assert!(p.too_much());
        let items = settings::items(&HostSnapshot::default(), &[], &p, None);
        let item = items.iter().find(|i| i.code == PROTECTED_CODE).unwrap();
        assert_eq!(item.status, Status::Warn);
        assert!(item.message.contains("p10 (10)"), "{}", item.message);
        // Exactly half is not more than half; unknown MemTotal never warns.
        assert!(!Protected::from_rows(&rows, Some(10 << 30)).too_much());
        assert!(!Protected::from_rows(&rows, None).too_much());
        assert!(!Protected::from_rows(&rows, Some(0)).too_much());
    }
}
