//! `oomwatch check`: the preflight's verdict, its probe table against a running agent's, and
//! the host warnings against the collectors' own rules.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{real_kernel_or_skip, Agent};
use serde_json::Value;

fn check(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oomwatch"));
    c.arg("check").args(args);
    c
}

/// Runs as nobody (uid/gid 65534), without any capability.
fn unprivileged(mut c: Command) -> Output {
    // SAFETY: setuid/setgid between fork and exec are async-signal-safe system calls.
    unsafe {
        c.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Every item of every section.
fn items(v: &Value) -> Vec<&Value> {
    v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["items"].as_array().unwrap())
        .collect()
}

fn host_warning_codes(v: &Value) -> Vec<String> {
    v["host"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect()
}

/// Every warning is an item of the host section with status warn, its code and a fix.
fn assert_warned(v: &Value, codes: &[String]) {
    let host = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "host")
        .unwrap();
    for code in codes {
        let item = host["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["code"] == code.as_str())
            .unwrap_or_else(|| panic!("no item {code}: {host}"));
        assert_eq!(item["status"], "warn", "{item}");
        assert!(item["fix"].is_string(), "{item}");
    }
}

/// Whether `KERN_ERR` lines reach a serial console here: `kernel.printk`'s first field above
/// 3, and an enabled `ttyS*`/`ttyAMA*`/`hvc*`... line in `/proc/consoles` (the rule written
/// out apart from the collector's).
fn kill_lines_reach_a_console() -> bool {
    let printk = fs::read_to_string("/proc/sys/kernel/printk").unwrap();
    let level: i64 = printk.split_whitespace().next().unwrap().parse().unwrap();
    let consoles = fs::read_to_string("/proc/consoles").unwrap_or_default();
    let serial = [
        "ttyS", "ttyAMA", "ttyUSB", "ttySAC", "ttymxc", "ttyPS", "ttyMSM", "hvc",
    ];
    level > 3
        && consoles.lines().any(|l| {
            let enabled = l.split(['(', ')']).nth(1).is_none_or(|f| f.contains('E'));
            enabled && serial.iter().any(|p| l.trim_start().starts_with(p))
        })
}

/// The exit code agrees with the items: 1 with a FAIL, else 3 with a warn, else 0.
fn assert_exit_matches_items(o: &Output, v: &Value) {
    let statuses: Vec<&str> = items(v)
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    let expect = if statuses.contains(&"fail") {
        1
    } else if statuses.contains(&"warn") {
        3
    } else {
        0
    };
    assert_eq!(o.status.code(), Some(expect), "{v}");
    assert_eq!(v["exit_code"], expect);
}

/// (probe, attached) of the rows a running agent logged.
fn agent_rows(log: &str) -> Vec<(String, bool)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let f = &v["fields"];
            let probe = f["probe"].as_str()?.to_string();
            let msg = f["message"].as_str()?;
            if msg.starts_with("probe attached but silent") {
                // What the row delivered, not whether it attached.
                None
            } else if msg.starts_with("probe attached") {
                Some((probe, true))
            } else if msg.starts_with("probe unavailable") {
                Some((probe, false))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn on_this_host_the_agent_can_run_and_check_lists_the_agents_probe_table() {
    if !real_kernel_or_skip() {
        return;
    }
    let o = check(&["--json"]).output().unwrap();
    let v = json(&o);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{v}");
    assert_exit_matches_items(&o, &v);
    let cap = &v["capture"];
    assert_eq!(cap["tried"], true, "{cap}");
    let rows: Vec<(String, bool)> = cap["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let probe = r["probe"].as_str().unwrap().to_string();
            (probe, r["attached"].as_bool().unwrap())
        })
        .collect();

    // The same rows, in the same order, with the same outcome as a running agent's log.
    let agent = Agent::start(&[]);
    let logged = agent_rows(&agent.log_text());
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
    assert_eq!(rows, logged, "check: {cap}");

    // The OOM context source is the agent's choice: fentry, else kprobe, else the kernel log.
    let attached = |p: &str| rows.iter().any(|(n, a)| n == p && *a);
    let expect = if attached("fentry:oom_kill_process") {
        "fentry:oom_kill_process"
    } else if attached("kprobe:oom_kill_process") {
        "kprobe:oom_kill_process"
    } else {
        "kmsg:oom_report"
    };
    assert_eq!(cap["oom_context"], expect, "{cap}");
    assert!(
        attached("tp_btf:mark_victim") || attached("tracepoint:oom/mark_victim"),
        "{cap}"
    );

    // The text report has a line for each row.
    let o = check(&[]).output().unwrap();
    let text = stdout(&o);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{text}");
    for (probe, ok) in &rows {
        let line = if *ok {
            format!("ok   {probe}: attached")
        } else {
            format!("info {probe}: unavailable")
        };
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line}:\n{text}"
        );
    }
    for header in ["Privileges", "Kernel", "Capture", "Host settings"] {
        assert!(text.lines().any(|l| l == header), "{header}:\n{text}");
    }
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");

    // The host warnings: each one an item with a fix; the plain sysctls' ones follow from
    // /proc/sys as read here (the rules written out, independently of the collectors).
    let codes = host_warning_codes(&v);
    assert_warned(&v, &codes);
    let vm = |name: &str| -> i64 {
        let path = format!("/proc/sys/vm/{name}");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim().parse().unwrap()
    };
    let (panic_on_oom, overcommit) = (vm("panic_on_oom"), vm("overcommit_memory"));
    for (code, on) in [
        ("panic_on_oom_always", panic_on_oom == 2),
        ("panic_on_oom", panic_on_oom == 1),
        (
            "oom_kill_allocating_task",
            vm("oom_kill_allocating_task") != 0,
        ),
        ("overcommit_always", overcommit == 1),
        ("oom_dump_tasks_off", vm("oom_dump_tasks") == 0),
        ("oom_kill_lines_on_console", kill_lines_reach_a_console()),
    ] {
        assert_eq!(codes.iter().any(|c| c == code), on, "{code}: {codes:?}");
    }
    // The rest depend on memory sizes: only the known codes, and the near-limit one only with
    // overcommit_memory=2.
    for code in &codes {
        assert!(
            [
                "panic_on_oom_always",
                "panic_on_oom",
                "oom_kill_allocating_task",
                "overcommit_near_limit",
                "overcommit_always",
                "min_free_kbytes_high",
                "min_free_kbytes_low",
                "oom_dump_tasks_off",
                "oom_kill_lines_on_console",
            ]
            .contains(&code.as_str()),
            "unknown warning {code}"
        );
    }
    if codes.iter().any(|c| c == "overcommit_near_limit") {
        assert_eq!(overcommit, 2, "{codes:?}");
    }
}

#[test]
fn without_privileges_check_fails_naming_cap_bpf_and_the_fix() {
    if !real_kernel_or_skip() {
        return;
    }
    let o = unprivileged(check(&[]));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("FAIL ") && l.contains("CAP_BPF"))
        .unwrap_or_else(|| panic!("no FAIL line naming CAP_BPF:\n{text}"));
    let fix = lines[i + 1..]
        .iter()
        .find(|l| l.trim_start().starts_with("fix:"))
        .unwrap();
    assert!(fix.contains("run oomwatch as root"), "{text}");
    assert!(text.contains("setcap cap_bpf,cap_perfmon"), "{text}");
    assert!(text.contains("probes not tried: missing CAP_BPF"), "{text}");
    assert!(text.contains("result: the agent cannot run here"), "{text}");

    let o = unprivileged(check(&["--json"]));
    let v = json(&o);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["verdict"], "cannot_run");
    assert_eq!(v["privileges"]["missing"], "CAP_BPF");
    assert_eq!(v["capture"]["tried"], false);
    assert_exit_matches_items(&o, &v);
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The `numa-risky` host, plus one process with `oom_score_adj=-1000` holding 40 GB of its
/// 63 GiB.
fn risky_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/numa-risky");
    copy_tree(&fixture, dir.path());
    let pid = dir.path().join("proc/4242");
    fs::create_dir_all(&pid).unwrap();
    fs::write(
        pid.join("status"),
        "Name:\tpinned-db\nTgid:\t4242\nUid:\t0\t0\t0\t0\nRssAnon:\t40000000 kB\n\
         RssFile:\t1000 kB\nRssShmem:\t0 kB\nVmPTE:\t80000 kB\n",
    )
    .unwrap();
    fs::write(pid.join("oom_score_adj"), "-1000\n").unwrap();
    fs::write(pid.join("cgroup"), "0::/db.slice\n").unwrap();
    // Readable by nobody too.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn risky_fixture_host_warns_with_the_snapshot_codes_and_exits_3() {
    let root = risky_root();
    let root_arg = root.path().to_str().unwrap();
    // What the fixture's files say (see tests/fixtures/host/README.md): panic_on_oom=2,
    // oom_kill_allocating_task=1, overcommit_memory=2 at 96% of CommitLimit, min_free_kbytes
    // 4 GiB, oom_dump_tasks=0.
    let expected: Vec<String> = [
        "panic_on_oom_always",
        "oom_kill_allocating_task",
        "overcommit_near_limit",
        "min_free_kbytes_high",
        "oom_dump_tasks_off",
    ]
    .map(String::from)
    .to_vec();

    let args = ["--json", "--no-probes", "--host-root", root_arg];
    let mut outputs = vec![check(&args).output().unwrap()];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        outputs.push(unprivileged(check(&args)));
    }
    for o in &outputs {
        let v = json(o);
        assert_eq!(o.status.code(), Some(3), "{v}");
        assert_eq!(v["verdict"], "warnings");
        assert_exit_matches_items(o, &v);
        assert_eq!(host_warning_codes(&v), expected);
        assert_warned(&v, &expected);
        assert_warned(&v, &["protected_memory_high".to_string()]);
        assert_eq!(v["host"]["protected"]["processes"], 1);
        assert_eq!(v["host"]["protected"]["largest"][0]["comm"], "pinned-db");
        assert_eq!(v["host"]["values"]["panic_on_oom"], 2);
        assert_eq!(v["capture"]["tried"], false);
        assert_eq!(v["capture"]["not_tried"], "--no-probes");
        assert!(items(&v).iter().all(|i| i["status"] != "fail"), "{v}");
    }

    let o = check(&["--no-probes", "--host-root", root_arg])
        .output()
        .unwrap();
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{text}");
    assert!(text.contains("\nwarn vm.panic_on_oom=2: "), "{text}");
    assert!(text.contains("fix: sysctl -w vm.panic_on_oom=0"), "{text}");
    assert!(text.contains("probes not tried: --no-probes"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
}

#[test]
fn host_root_without_proc_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(&[
        "--json",
        "--no-probes",
        "--host-root",
        dir.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let v = json(&o);
    assert_eq!(o.status.code(), Some(1), "{v}");
    assert!(items(&v)
        .iter()
        .any(|i| i["code"] == "host_root" && i["status"] == "fail"));
}

#[test]
fn help_documents_the_exit_codes_and_bad_flags_are_usage_errors() {
    let o = check(&["--help"]).output().unwrap();
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0));
    for line in [
        "0  the agent can run here",
        "1  the agent cannot run here",
        "3  the agent",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    let o = check(&["--no-such-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = check(&["--disable-probe", "kprobe:nope"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}
