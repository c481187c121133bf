//! Probe-table rows of the kill lifecycle and of userspace killers: the victim's exit, the OOM
//! reaper's steps, the near-OOM counters, and SIGKILLs from userspace OOM killers. None of them
//! is needed for the OOM events themselves: each row is attached or says why not, and the agent
//! runs without it.
use oomwatch_common::{
    comm_words, KillerComms, LifecycleOffsets, SignalOffsets, COMM_LEN, MAX_KILLERS, OFFSET_ABSENT,
};

use super::attach;
use super::table::{self, ProbeId, ProbeStatus};
use crate::source::btf::Btf;
use crate::source::tracefs;

/// Userspace OOM killers recognised by default, by the comm their kills come from: earlyoom,
/// systemd-oomd, Meta's oomd, nohang (a script: its comm is the script's name) and Android's lmkd.
pub const DEFAULT_KILLERS: [&str; 5] = ["earlyoom", "systemd-oomd", "oomd", "nohang", "lmkd"];

/// The OOM reaper's four events, with the eBPF program of each.
const REAPER_EVENTS: [(&str, &str); 4] = [
    ("wake_reaper", "wake_reaper"),
    ("start_task_reaping", "start_task_reaping"),
    ("finish_task_reaping", "finish_task_reaping"),
    ("skip_task_reaping", "skip_task_reaping"),
];

/// What [`prepare`] resolved before the object is loaded (the globals), and why a row cannot
/// attach.
pub struct Prepared {
    pub lifecycle: LifecycleOffsets,
    pub signal: SignalOffsets,
    pub killers: KillerComms,
    killer_names: Vec<String>,
    exit: Result<&'static str, String>,
    reaper: Result<(), String>,
    signal_tp: Result<(), String>,
    signal_btf: Result<(), String>,
}

/// Resolves the trace-record offsets (tracefs) and `kernel_siginfo.si_code` (BTF), and builds
/// the killer table from [`DEFAULT_KILLERS`] plus `extra_killers`. `task` is whether the
/// `task_struct` offsets resolved (the tp_btf program reads the target through them).
pub fn prepare(
    btf: Result<&Btf, String>,
    task: Result<(), String>,
    extra_killers: &[String],
) -> Prepared {
    let root = tracefs::ensure_mounted()
        .map(|(r, _)| r)
        .map_err(|e| e.to_string());
    let format = |cat: &str, name: &str| {
        root.clone()
            .and_then(|r| tracefs::read_format(r, cat, name).map_err(|e| e.to_string()))
    };
    let mut lifecycle = LifecycleOffsets::ABSENT;
    let exit = exit_offsets(&format, &mut lifecycle, btf.clone(), task.clone());
    let reaper = reaper_offsets(&format, &mut lifecycle);
    let mut signal = SignalOffsets::ABSENT;
    let (signal_tp, signal_btf) = signal_offsets(&format, &mut signal, btf, task);
    let (killers, killer_names, signal_tp, signal_btf) = match killer_table(extra_killers) {
        Ok((k, names)) => (k, names, signal_tp, signal_btf),
        Err(e) => (KillerComms::EMPTY, Vec::new(), Err(e.clone()), Err(e)),
    };
    Prepared {
        lifecycle,
        signal,
        killers,
        killer_names,
        exit,
        reaper,
        signal_tp,
        signal_btf,
    }
}

/// A trace record's format by category and name, or why it cannot be read.
type FormatOf<'a> = &'a dyn Fn(&str, &str) -> Result<tracefs::Format, String>;

/// `sched_process_exit`'s offsets; the row's detail says how a process's last exit is told.
fn exit_offsets(
    format: FormatOf<'_>,
    lifecycle: &mut LifecycleOffsets,
    btf: Result<&Btf, String>,
    task: Result<(), String>,
) -> Result<&'static str, String> {
    // The exit program needs to know when a process's last thread exits: `group_dead` in the
    // record (6.16+), else `signal_struct.live` through the task offsets (BTF).
    let live = task.and(btf).and_then(|b| {
        b.member_offset("signal_struct", "live")
            .map_err(|e| e.to_string())
    });
    format("sched", "sched_process_exit").map(|f| {
        if let Some(g) = f.field("group_dead").filter(|g| g.size == 1) {
            lifecycle.exit_group_dead = g.offset;
            "exit of killed processes (group_dead of the trace record)"
        } else if let Ok(off) = live {
            lifecycle.signal_live = off;
            "exit of killed processes (signal_struct.live from BTF)"
        } else {
            "exit of killed processes (of the leader thread: no group_dead field, no BTF)"
        }
    })
}

/// The `pid` offset of each of the OOM reaper's events; all four or an error naming those
/// that failed.
fn reaper_offsets(format: FormatOf<'_>, lifecycle: &mut LifecycleOffsets) -> Result<(), String> {
    let mut reaper_errors = Vec::new();
    for (event, _) in REAPER_EVENTS {
        match format("oom", event).and_then(|f| int_field(&f, "pid")) {
            Ok(off) => match event {
                "wake_reaper" => lifecycle.wake_reaper_pid = off,
                "start_task_reaping" => lifecycle.start_reaping_pid = off,
                "finish_task_reaping" => lifecycle.finish_reaping_pid = off,
                _ => lifecycle.skip_reaping_pid = off,
            },
            Err(e) => reaper_errors.push(format!("oom/{event}: {e}")),
        }
    }
    match reaper_errors.is_empty() {
        true => Ok(()),
        false => Err(reaper_errors.join("; ")),
    }
}

/// The SIGKILL-attribution rows (`--sigkills`): programs of their own on `signal_generate`,
/// each verified on its own, so one the kernel refuses takes nothing from the others.
fn attach_sigkills(
    ebpf: &mut aya::Ebpf,
    p: &Prepared,
    off: &dyn Fn(ProbeId) -> Result<(), String>,
    kernel_btf: Result<&aya::Btf, String>,
    sigkills: bool,
) -> Vec<ProbeStatus> {
    let on = |probe| match sigkills {
        true => off(probe),
        false => Err("off: --sigkills false".to_string()),
    };
    let btf = on(ProbeId::SigkillBtf)
        .and(p.signal_btf.clone())
        .and(kernel_btf)
        .and_then(|kbtf| attach::btf_tracepoint(ebpf, "sigkill_btf", "signal_generate", kbtf));
    let btf_ok = btf.is_ok();
    let mut rows = vec![table::row(
        ProbeId::SigkillBtf,
        btf,
        "every SIGKILL to a task in a memory cgroup: the target's task_struct (tgid, memory \
         cgroup, pid namespace), the sender's executable",
    )];
    if !btf_ok {
        let tp = on(ProbeId::SigkillTp)
            .and(p.signal_tp.clone())
            .and_then(|()| attach::tracepoint(ebpf, "sigkill_tp", "signal", "signal_generate"));
        rows.push(table::row(
            ProbeId::SigkillTp,
            tp,
            "every SIGKILL: the trace record's target pid and comm, the sender's executable",
        ));
    }
    rows
}

/// `signal_generate`'s record offsets (tracepoint row) and `si_code` (tp_btf row).
fn signal_offsets(
    format: FormatOf<'_>,
    signal: &mut SignalOffsets,
    btf: Result<&Btf, String>,
    task: Result<(), String>,
) -> (Result<(), String>, Result<(), String>) {
    let signal_tp = format("signal", "signal_generate").and_then(|f| {
        signal.sig = int_field(&f, "sig")?;
        signal.pid = int_field(&f, "pid")?;
        // Optional fields: absent ones are left out of the record, never misread.
        signal.code = int_field(&f, "code").unwrap_or(OFFSET_ABSENT);
        signal.group = int_field(&f, "group").unwrap_or(OFFSET_ABSENT);
        signal.result = int_field(&f, "result").unwrap_or(OFFSET_ABSENT);
        signal.comm = f
            .field("comm")
            .filter(|c| c.size == COMM_LEN as u32)
            .map_or(OFFSET_ABSENT, |c| c.offset);
        Ok(())
    });
    let signal_btf = task.and(btf).and_then(|btf| {
        signal.si_code = signal_btf_layout(btf)?;
        Ok(())
    });
    (signal_tp, signal_btf)
}

/// The offset of a 4-byte integer field of a trace record.
fn int_field(f: &tracefs::Format, name: &str) -> Result<u32, String> {
    match f.field(name) {
        Some(x) if x.size == 4 => Ok(x.offset),
        Some(x) => Err(format!("field `{name}` has size {}, not 4", x.size)),
        None => Err(format!("tracepoint format has no field `{name}`")),
    }
}

/// Checks that `signal_generate` passes (sig, siginfo *, task_struct *, group, result) and
/// returns `si_code`'s offset in the siginfo struct it names.
fn signal_btf_layout(btf: &Btf) -> Result<u32, String> {
    let params = btf
        .tracepoint_params("signal_generate")
        .map_err(|e| e.to_string())?;
    let info = params.get(1).map(String::as_str);
    let info_struct = match info {
        Some("struct kernel_siginfo *") => "kernel_siginfo",
        Some("struct siginfo *") => "siginfo",
        _ => "",
    };
    let ok = params.len() == 5
        && !info_struct.is_empty()
        && params[0] == "int"
        && params[2] == "struct task_struct *";
    if !ok {
        return Err(format!(
            "this kernel's signal_generate passes ({}), not (int, siginfo *, task_struct *, int, int)",
            params.join(", ")
        ));
    }
    btf.member_offset(info_struct, "si_code")
        .map_err(|e| e.to_string())
}

/// The killer table for the eBPF side: defaults plus `extra`, deduplicated, each matched
/// exactly (names of 15+ bytes: on their first 15 bytes, as the kernel keeps comms).
pub fn killer_table(extra: &[String]) -> Result<(KillerComms, Vec<String>), String> {
    let mut names: Vec<String> = Vec::new();
    for n in DEFAULT_KILLERS
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
    {
        let bytes = n.as_bytes();
        if bytes.is_empty() || bytes.contains(&0) {
            return Err(format!("invalid --userspace-killer name {n:?}"));
        }
        let kept = String::from_utf8_lossy(&bytes[..bytes.len().min(COMM_LEN - 1)]).into_owned();
        if !names.contains(&kept) {
            names.push(kept);
        }
    }
    if names.len() > MAX_KILLERS {
        return Err(format!(
            "{} userspace killers named; at most {MAX_KILLERS} are supported",
            names.len()
        ));
    }
    let mut table = KillerComms::EMPTY;
    for (i, name) in names.iter().enumerate() {
        let bytes = name.as_bytes();
        let mut value = [0u8; COMM_LEN];
        let mut mask = [0u8; COMM_LEN];
        value[..bytes.len()].copy_from_slice(bytes);
        // The name and its NUL terminator must match; a 15-byte name fills the whole comm.
        let covered = (bytes.len() + 1).min(COMM_LEN);
        mask[..covered].fill(0xff);
        let (v0, v1) = comm_words(&value);
        let (m0, m1) = comm_words(&mask);
        table.entries[i] = [v0, v1, m0, m1];
    }
    table.count = names.len() as u32;
    Ok((table, names))
}

/// Attaches this file's rows; `disabled` are the `--disable-probe` names.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    p: &Prepared,
    disabled: &[ProbeId],
    kernel_btf: Result<&aya::Btf, String>,
    sigkills: bool,
) -> Vec<ProbeStatus> {
    let off = |probe: ProbeId| table::enabled(disabled, probe);
    let mut rows = Vec::new();
    let exit_reads = p.exit.clone().unwrap_or_default();
    let exit = off(ProbeId::ProcessExit)
        .and(p.exit.clone().map(drop))
        .and_then(|()| attach::tracepoint(ebpf, "victim_exit", "sched", "sched_process_exit"));
    rows.push(table::row(ProbeId::ProcessExit, exit, exit_reads));

    let reaper = off(ProbeId::Reaper).and(p.reaper.clone()).and_then(|()| {
        let failed: Vec<String> = REAPER_EVENTS
            .iter()
            .filter_map(|(event, prog)| {
                attach::tracepoint(ebpf, prog, "oom", event)
                    .err()
                    .map(|e| format!("oom/{event}: {e}"))
            })
            .collect();
        match failed.is_empty() {
            true => Ok(()),
            false => Err(failed.join("; ")),
        }
    });
    rows.push(table::row(
        ProbeId::Reaper,
        reaper,
        "oom/wake_reaper, start_task_reaping, finish_task_reaping, skip_task_reaping",
    ));

    let killers = format!(
        "SIGKILLs sent by {}; the kernel's own OOM-kill SIGKILLs (a mark_victim without one is \
         no kill)",
        p.killer_names.join(", ")
    );
    let btf = off(ProbeId::SignalBtf)
        .and(p.signal_btf.clone())
        .and(kernel_btf.clone())
        .and_then(|kbtf| {
            attach::btf_tracepoint(ebpf, "signal_generate_btf", "signal_generate", kbtf)
        });
    let btf_ok = btf.is_ok();
    rows.push(table::row(
        ProbeId::SignalBtf,
        btf,
        &format!("{killers}, with the target's tgid and memory cgroup"),
    ));
    if !btf_ok {
        let tp = off(ProbeId::SignalTp)
            .and(p.signal_tp.clone())
            .and_then(|()| {
                attach::tracepoint(ebpf, "signal_generate_tp", "signal", "signal_generate")
            });
        rows.push(table::row(ProbeId::SignalTp, tp, &killers));
    }
    rows.extend(attach_sigkills(ebpf, p, &off, kernel_btf, sigkills));

    for (probe, prog, event, reads) in [
        (
            ProbeId::ReclaimRetry,
            "reclaim_retry_zone",
            "reclaim_retry_zone",
            "near-OOM signal: oomwatch_reclaim_retry_zone_total",
        ),
        (
            ProbeId::CompactRetry,
            "compact_retry",
            "compact_retry",
            "near-OOM signal: oomwatch_compact_retry_total",
        ),
    ] {
        let r = off(probe).and_then(|()| attach::tracepoint(ebpf, prog, "oom", event));
        rows.push(table::row(probe, r, reads));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &str) -> [u8; COMM_LEN] {
        let mut c = [0u8; COMM_LEN];
        let b = s.as_bytes();
        c[..b.len().min(COMM_LEN - 1)].copy_from_slice(&b[..b.len().min(COMM_LEN - 1)]);
        c
    }

    #[test]
    fn killers_match_exactly_and_long_names_on_the_kernels_15_bytes() {
        let (t, names) = killer_table(&["my-very-long-killer-name".into(), "oomd".into()]).unwrap();
        assert_eq!(names.len(), DEFAULT_KILLERS.len() + 1, "{names:?}");
        for k in DEFAULT_KILLERS {
            assert!(t.matches(&comm(k)), "{k}");
        }
        assert!(t.matches(&comm("my-very-long-killer-name")));
        assert!(t.matches(&comm("my-very-long-ki")));
        for other in [
            "earlyoo",
            "earlyoom2",
            "oom",
            "systemd",
            "bash",
            "",
            "my-very-long-k",
        ] {
            assert!(!t.matches(&comm(other)), "{other}");
        }
    }

    #[test]
    fn killer_table_rejects_bad_and_too_many_names() {
        assert!(killer_table(&[String::new()]).is_err());
        assert!(killer_table(&["a\0b".into()]).is_err());
        let many: Vec<String> = (0..MAX_KILLERS).map(|i| format!("k{i}")).collect();
        assert!(killer_table(&many).is_err());
        let some: Vec<String> = (0..MAX_KILLERS - DEFAULT_KILLERS.len())
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(killer_table(&some).unwrap().0.count as usize, MAX_KILLERS);
    }

    #[test]
    fn this_hosts_formats_and_btf_resolve() {
        let btf = Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux"));
        let Some(btf) = oomwatch_testkit::host_or_skip("no kernel BTF", btf) else {
            return;
        };
        let mounted = tracefs::ensure_mounted();
        if oomwatch_testkit::host_or_skip("tracefs unavailable (not root?)", mounted).is_none() {
            return;
        }
        let p = prepare(Ok(&btf), Ok(()), &[]);
        assert!(p.exit.is_ok(), "{:?}", p.exit);
        assert!(p.signal_tp.is_ok(), "{:?}", p.signal_tp);
        assert!(p.signal_btf.is_ok(), "{:?}", p.signal_btf);
        assert!(
            p.lifecycle.exit_group_dead != OFFSET_ABSENT
                || p.lifecycle.signal_live != OFFSET_ABSENT,
            "{:?}",
            p.lifecycle
        );
        assert_ne!(p.signal.si_code, OFFSET_ABSENT);
        assert_ne!(p.signal.comm, OFFSET_ABSENT);
    }
}
