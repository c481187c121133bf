//! Bad input gets one clear line and a non-zero exit; signals detach cleanly.
mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::{real_kernel_or_skip, Agent};

fn oomwatch(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oomwatch"));
    c.args(args);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = oomwatch(&["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unexpected argument '--no-such-flag'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn out_of_range_values_are_rejected() {
    let o = oomwatch(&["--oom-score-adj", "-2000"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--oom-score-adj"), "{}", stderr(&o));
    let o = oomwatch(&["--listen", "nonsense"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--listen"));
    let o = oomwatch(&["--log-level", "loud=[", "--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid --log-level"), "{}", stderr(&o));
    // docs/metrics.md: the label-set cap is 1..=1,000,000; 0 is refused, not taken as 1.
    let o = oomwatch(&["--max-label-sets", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--max-label-sets"), "{}", stderr(&o));
}

#[test]
fn missing_capability_is_named() {
    if !real_kernel_or_skip() {
        return;
    }
    let mut c = oomwatch(&["--listen", "127.0.0.1:0"]);
    // SAFETY: setuid/setgid between fork and exec are async-signal-safe system calls.
    unsafe {
        c.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("missing capability CAP_BPF"), "{err}");
    assert!(err.contains("run oomwatch as root"), "{err}");
}

#[test]
fn port_in_use_is_a_clear_error_and_attaches_nothing() {
    if !real_kernel_or_skip() {
        return;
    }
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let o = oomwatch(&["--listen", &addr]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.contains(&format!("cannot listen on {addr}: address already in use")),
        "{err}"
    );
    assert!(last.contains("--listen"), "{err}");
    assert!(
        !err.contains("probe attached"),
        "bind happens before any probe: {err}"
    );
}

#[test]
fn sigterm_and_sigint_exit_zero() {
    if !real_kernel_or_skip() {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let agent = Agent::start(&[]);
        let log = agent.log.clone();
        assert_eq!(agent.stop(sig), Some(0));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("probes detached")));
    }
}

#[test]
fn missing_btf_falls_back_to_the_tracepoint_with_a_warning() {
    if !real_kernel_or_skip() {
        return;
    }
    let agent = Agent::start(&["--btf", "/nonexistent/vmlinux"]);
    let log = agent.log_text();
    let warn = log
        .lines()
        .find(|l| l.contains("probe unavailable") && l.contains("tp_btf:mark_victim"))
        .unwrap_or_else(|| panic!("no fallback warning:\n{log}"));
    assert!(warn.contains("/nonexistent/vmlinux"), "{warn}");
    assert!(
        log.contains("\"probe\":\"tracepoint:oom/mark_victim\""),
        "{log}"
    );
    let metrics = agent.get("/metrics");
    assert!(
        metrics.contains("oomwatch_probe_attached{probe=\"tp_btf:mark_victim\"} 0"),
        "{metrics}"
    );
    assert_eq!(agent.stop(libc::SIGTERM), Some(0));
}

#[test]
fn disable_probe_takes_known_names_only() {
    let o = oomwatch(&["--disable-probe", "kprobe:nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--disable-probe"), "{}", stderr(&o));
    // The probe table is the one list of names: every row is accepted, and the error lists
    // them all.
    for name in oomwatch::record::ProbeId::ALL.map(|p| p.name()) {
        assert!(
            stderr(&o).contains(name),
            "{name} not listed: {}",
            stderr(&o)
        );
        let o = oomwatch(&["check", "--no-probes", "--disable-probe", name])
            .output()
            .unwrap();
        assert!(
            !stderr(&o).contains("invalid value"),
            "{name}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn with_every_victim_probe_disabled_the_agent_says_so_and_exits_1() {
    if !real_kernel_or_skip() {
        return;
    }
    let o = oomwatch(&[
        "--listen",
        "127.0.0.1:0",
        "--disable-probe",
        "tp_btf:mark_victim",
        "--disable-probe",
        "tracepoint:oom/mark_victim",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let last = err.trim().lines().last().unwrap();
    assert!(last.contains("no OOM probe could attach"), "{err}");
    assert!(last.contains("disabled by --disable-probe"), "{err}");
}

/// The text log written to a pipe (a container runtime's log, a file, journald) carries no ANSI
/// colour codes; the warnings the start-up logs before binding the port are enough to see it.
#[test]
fn text_log_to_a_pipe_has_no_colour_codes() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let o = oomwatch(&["run", "--log-format", "text", "--log-level", "debug"])
        .args(["--listen", &addr, "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        err.lines().any(|l| l.contains("oomwatch::agent")),
        "no log line from the agent: {err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in a piped log: {err:?}"
    );
}
