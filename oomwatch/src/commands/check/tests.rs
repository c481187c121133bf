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
