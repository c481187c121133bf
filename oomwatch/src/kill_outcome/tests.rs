use std::fs;
use std::time::SystemTime;

use oomwatch_common::{signal_field, SignalRecord};
use serde_json::Value;

use super::records::parse_state;
use super::*;

const SEC: Duration = Duration::from_secs(1);

fn tracker(proc_root: &std::path::Path, exits: bool) -> Lifecycle {
    Lifecycle::new("h".into(), 10 * SEC, exits).with_proc_root(proc_root.to_path_buf())
}

fn kill(pid: i32, ktime_ns: u64) -> OomEvent {
    OomEvent {
        tgid: Some(pid),
        comm: Some("tail".into()),
        cgroup: Some("/t".into()),
        oom_id: Some(7),
        ..OomEvent::new(pid, ktime_ns, SystemTime::now(), "h".into())
    }
}

fn rec(kind: RecordKind, pid: i32, ktime_ns: u64) -> Record {
    let mut r = LifecycleRecord::zeroed();
    r.kind = kind as u32;
    r.present = lifecycle_field::PID;
    r.pid = pid;
    r.ktime_ns = ktime_ns;
    Record::Lifecycle(r)
}

fn lines(outs: Vec<Output>) -> Vec<Value> {
    outs.into_iter()
        .map(|o| match o {
            Output::Line(l) => serde_json::from_str(&l).unwrap(),
            Output::Kill(ev) => panic!("unexpected kill {ev:?}"),
        })
        .collect()
}

fn json(l: &[String]) -> Vec<Value> {
    l.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn exit_after_the_event_gives_kill_to_exit() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    assert!(lc.on_event(&kill(10, 1_000), now).is_empty());
    assert_eq!(lc.tracked(), 1);
    let out = lines(lc.push(&rec(RecordKind::VictimExit, 10, 6_000), now));
    assert_eq!(out.len(), 1);
    let v = &out[0];
    assert_eq!(v["type"], "oom_kill_lifecycle");
    assert_eq!(
        (v["pid"].as_i64(), v["oom_id"].as_u64()),
        (Some(10), Some(7))
    );
    assert_eq!(v["kill_to_exit_ns"], 5_000);
    assert_eq!(v["exit_ktime_ns"], 6_000);
    assert_eq!(v["reaper"], "none");
    assert!(v["kill_to_reaped_ns"].is_null());
    assert_eq!(
        (v["killer"].as_str(), v["stuck"].as_bool()),
        (Some("kernel"), Some(false))
    );
    assert_eq!(lc.tracked(), 0);
    let stats = lc.stats();
    let s = stats.lock().unwrap();
    assert_eq!(s.to_exit["kernel"].count(), 1);
    assert_eq!(s.to_reaped.count(), 0);
}

#[test]
fn exit_before_the_event_is_kept_until_the_event_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    // The event waits in the correlator (kernel-log context) while the victim already exited.
    assert!(lc
        .push(&rec(RecordKind::VictimExit, 11, 9_000), now)
        .is_empty());
    // An older exit of the same pid (before this kill) must not be taken.
    assert!(lc
        .push(&rec(RecordKind::VictimExit, 12, 500), now)
        .is_empty());
    let out = json(&lc.on_event(&kill(11, 4_000), now));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["kill_to_exit_ns"], 5_000);
    assert!(
        lc.on_event(&kill(12, 1_000), now).is_empty(),
        "stale exit taken"
    );
}

#[test]
fn exit_waits_for_the_reaper_at_work_and_records_reaping() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    lc.on_event(&kill(20, 1_000), now);
    assert!(lc
        .push(&rec(RecordKind::WakeReaper, 20, 2_000), now)
        .is_empty());
    assert!(lc
        .push(&rec(RecordKind::StartReaping, 20, 2_100), now)
        .is_empty());
    assert!(lc
        .push(&rec(RecordKind::VictimExit, 20, 2_200), now)
        .is_empty());
    let out = lines(lc.push(&rec(RecordKind::FinishReaping, 20, 2_300), now));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["reaper"], "reaped");
    assert_eq!(out[0]["kill_to_reaper_woken_ns"], 1_000);
    assert_eq!(out[0]["kill_to_reaped_ns"], 1_300);
    assert_eq!(out[0]["kill_to_exit_ns"], 1_200);
    assert_eq!(lc.stats().lock().unwrap().to_reaped.count(), 1);
}

#[test]
fn an_exit_whose_reaper_never_finishes_is_written_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    lc.on_event(&kill(21, 1_000), now);
    lc.push(&rec(RecordKind::WakeReaper, 21, 2_000), now);
    assert!(lc
        .push(&rec(RecordKind::VictimExit, 21, 3_000), now)
        .is_empty());
    let at = lc.next_deadline().unwrap();
    assert!(at <= now + 10 * SEC);
    let out = lines(lc.due(at));
    assert_eq!(out[0]["reaper"], "woken");
    assert_eq!(out[0]["kill_to_exit_ns"], 2_000);
    assert!(lc.next_deadline().is_none());
}

#[test]
fn reaper_skips_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    lc.on_event(&kill(30, 1_000), now);
    lc.push(&rec(RecordKind::WakeReaper, 30, 2_000), now);
    lc.push(&rec(RecordKind::SkipReaping, 30, 2_500), now);
    // A skip of a task the agent does not follow still counts.
    lc.push(&rec(RecordKind::SkipReaping, 31, 2_600), now);
    let out = lines(lc.push(&rec(RecordKind::VictimExit, 30, 4_000), now));
    assert_eq!(out[0]["reaper"], "skipped");
    assert!(out[0]["kill_to_reaped_ns"].is_null());
    assert_eq!(lc.stats().lock().unwrap().reaper_skips, 2);
}

#[test]
fn a_victim_alive_after_the_bound_is_stuck_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    // The leader has exited (a zombie); another thread is blocked in the kernel.
    for (tid, state) in [(40, "Z"), (41, "D"), (42, "S")] {
        let task = dir.path().join(format!("40/task/{tid}"));
        fs::create_dir_all(&task).unwrap();
        fs::write(
            task.join("stat"),
            format!("{tid} (a) b) {state} 1 40 40 0 -1\n"),
        )
        .unwrap();
        fs::write(task.join("wchan"), "request_wait_answer").unwrap();
    }
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    lc.on_event(&kill(40, 1_000), now);
    assert!(lc.due(now + 9 * SEC).is_empty(), "not yet");
    let out = lines(lc.due(now + 10 * SEC));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "oom_kill_stuck");
    assert_eq!(out[0]["state"], "D");
    assert_eq!(out[0]["tid"], 41);
    assert_eq!(out[0]["wchan"], "request_wait_answer");
    assert_eq!(out[0]["oom_id"], 7);
    {
        let s = lc.stats();
        let s = s.lock().unwrap();
        assert_eq!((s.stuck_now, s.stuck_total), (1, 1));
    }
    // Reported once; checked again later.
    assert!(lc.due(now + 20 * SEC).is_empty());
    let out = lines(lc.push(&rec(RecordKind::VictimExit, 40, 60_000_000_000), now));
    assert_eq!(out[0]["stuck"], true);
    let s = lc.stats();
    let s = s.lock().unwrap();
    assert_eq!((s.stuck_now, s.stuck_total), (0, 1));
}

#[test]
fn a_victim_gone_without_an_exit_record_has_no_exit_time() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut lc = tracker(dir.path(), true);
    lc.on_event(&kill(50, 1_000), now);
    let out = lines(lc.due(now + 10 * SEC));
    assert_eq!(out[0]["type"], "oom_kill_lifecycle");
    assert!(out[0]["kill_to_exit_ns"].is_null());
    assert_eq!(lc.stats().lock().unwrap().to_exit.len(), 0);
    // Without the exit probe nothing is claimed about it.
    let mut lc = tracker(dir.path(), false);
    lc.on_event(&kill(50, 1_000), now);
    assert!(lc.due(now + 10 * SEC).is_empty());
    assert_eq!(lc.tracked(), 0);
}

#[test]
fn replayed_kills_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let ev = OomEvent {
        replayed: true,
        ..kill(60, 1_000)
    };
    lc.on_event(&ev, Instant::now());
    assert_eq!(lc.tracked(), 0);
}

fn sigkill(sender: &str) -> SignalRecord {
    let mut s = SignalRecord::zeroed();
    s.kind = RecordKind::SignalTracepoint as u32;
    s.present = signal_field::TARGET_PID
        | signal_field::TARGET_COMM
        | signal_field::CODE
        | signal_field::RESULT;
    s.ktime_ns = crate::sys::clock::monotonic_ns();
    s.sig = 9;
    s.sender_pid = 900;
    s.sender_tgid = 899;
    s.target_pid = 70;
    s.sender_comm[..sender.len()].copy_from_slice(sender.as_bytes());
    s.target_comm[..4].copy_from_slice(b"java");
    s
}

#[test]
fn a_userspace_killers_sigkill_is_an_event_with_killer_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    let out = lc.push(&Record::Signal(sigkill("earlyoom")), now);
    let [Output::Kill(ev)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(ev.killer.as_deref(), Some("earlyoom"));
    assert_eq!(ev.killer_pid, Some(899));
    assert_eq!((ev.pid, ev.comm.as_deref()), (70, Some("java")));
    assert_eq!(ev.trigger.as_ref().unwrap().comm, "earlyoom");
    assert!(ev.oom_id.is_none() && !ev.replayed);
    let v: Value = serde_json::from_str(&ev.to_json_line()).unwrap();
    assert_eq!(v["sources"]["killer"], "tracepoint:signal/signal_generate");
    assert_eq!(v["victim"]["comm"], "java");
    assert_eq!(lc.stats().lock().unwrap().userspace_kills["earlyoom"], 1);
    // Followed to its exit like a kernel kill.
    let ktime = ev.ktime_ns;
    lc.on_event(ev, now);
    let out = lines(lc.push(&rec(RecordKind::VictimExit, 70, ktime + 3_000), now));
    assert_eq!(
        (
            out[0]["killer"].as_str(),
            out[0]["kill_to_exit_ns"].as_u64()
        ),
        (Some("earlyoom"), Some(3_000))
    );
    assert_eq!(lc.stats().lock().unwrap().to_exit["earlyoom"].count(), 1);
}

#[test]
fn kernel_sent_and_undelivered_sigkills_are_not_userspace_kills() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    let mut by_kernel = sigkill("earlyoom");
    by_kernel.code = 0x80;
    assert!(lc.push(&Record::Signal(by_kernel), now).is_empty());
    let mut pending = sigkill("earlyoom");
    pending.result = 2;
    assert!(lc.push(&Record::Signal(pending), now).is_empty());
    let mut no_target = sigkill("earlyoom");
    no_target.present &= !signal_field::TARGET_PID;
    assert!(lc.push(&Record::Signal(no_target), now).is_empty());
}

#[test]
fn stat_state_survives_odd_comms() {
    assert_eq!(parse_state("1 (systemd) S 0 1"), Some('S'));
    assert_eq!(parse_state("7 (a) D (b) R 1"), Some('R'));
    assert_eq!(parse_state("garbage"), None);
    assert_eq!(parse_state("1 (x)"), None);
}

#[test]
fn histograms_render_cumulative_buckets() {
    let mut s = Stats::default();
    s.observe("kernel", Some(3_000_000), Some(2_000_000_000));
    s.observe("kernel", Some(20_000_000_000), None);
    s.observe("kernel", Some(100_000_000_000), None);
    let fams = s.families();
    let exit = fams
        .iter()
        .find(|f| f.name() == "oomwatch_oom_kill_to_exit_seconds")
        .unwrap();
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(std::slice::from_ref(exit), &mut text)
        .unwrap();
    assert!(
        text.contains("oomwatch_oom_kill_to_exit_seconds_bucket{killer=\"kernel\",le=\"0.005\"} 1"),
        "{text}"
    );
    assert!(text.contains("le=\"30\"} 2"), "{text}");
    assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
    assert!(
        text.contains("oomwatch_oom_kill_to_exit_seconds_count{killer=\"kernel\"} 3"),
        "{text}"
    );
}

#[test]
fn a_victim_thread_is_followed_by_its_process_and_named_by_the_reaper() {
    let dir = tempfile::tempdir().unwrap();
    let mut lc = tracker(dir.path(), true);
    let now = Instant::now();
    // The kernel picked thread 80 of process 79: the reaper names 80, the exit names 79.
    let ev = OomEvent {
        tgid: Some(79),
        ..kill(80, 1_000)
    };
    assert!(lc
        .push(&rec(RecordKind::WakeReaper, 80, 1_500), now)
        .is_empty());
    lc.on_event(&ev, now);
    lc.push(&rec(RecordKind::StartReaping, 80, 1_600), now);
    lc.push(&rec(RecordKind::FinishReaping, 80, 1_700), now);
    // An exit of another process with the victim thread's number is not this one's.
    assert!(lc
        .push(&rec(RecordKind::VictimExit, 80, 1_800), now)
        .is_empty());
    let out = lines(lc.push(&rec(RecordKind::VictimExit, 79, 2_000), now));
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0]["pid"].as_i64(), out[0]["tgid"].as_i64()),
        (Some(80), Some(79))
    );
    assert_eq!(out[0]["reaper"], "reaped");
    assert_eq!(out[0]["kill_to_reaper_woken_ns"], 500);
    assert_eq!(out[0]["kill_to_exit_ns"], 1_000);
}
