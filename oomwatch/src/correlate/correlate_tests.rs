use super::*;
use crate::sys::clock::monotonic_ns;
use oomwatch_common::COMM_LEN;

fn rec(kind: RecordKind, pid: i32, present: u32) -> VictimRecord {
    let mut r = VictimRecord::zeroed();
    r.kind = kind as u32;
    r.pid = pid;
    r.present = present | field::PID;
    r.ktime_ns = monotonic_ns();
    r.comm[..4].copy_from_slice(b"hog\0");
    r.trigger_pid = 9;
    r.trigger_tgid = 9;
    r.trigger_comm[..3].copy_from_slice(b"sh\0");
    r
}

fn tp(pid: i32) -> VictimRecord {
    let mut r = rec(
        RecordKind::MarkVictimTracepoint,
        pid,
        field::COMM
            | field::TOTAL_VM
            | field::ANON_RSS
            | field::FILE_RSS
            | field::SHMEM_RSS
            | field::UID
            | field::PGTABLES
            | field::OOM_SCORE_ADJ,
    );
    r.total_vm_kb = 100;
    r.anon_rss_kb = 64;
    r.file_rss_kb = 2;
    r.shmem_rss_kb = 1;
    r.pgtables_kb = 8;
    r.uid = 1000;
    r.oom_score_adj = 500;
    r
}

fn btf(pid: i32) -> VictimRecord {
    let mut r = rec(
        RecordKind::MarkVictimBtf,
        pid,
        field::TGID | field::COMM | field::OOM_SCORE_ADJ | field::MEMCG_ID,
    );
    r.tgid = pid - 1;
    r.oom_score_adj = 499; // the tracepoint's value must win
    r.memcg_id = 12345;
    r
}

// A pid that cannot exist (above pid_max), so the /proc fill finds nothing.
const GONE: i32 = 1 << 30;

fn correlator(tp: bool, btf: bool) -> Correlator {
    Correlator::new(tp, btf, DEFAULT_WINDOW, "h".into(), None)
}

#[test]
fn pair_merges_into_one_event_with_sources() {
    let mut c = correlator(true, true);
    let now = Instant::now();
    assert!(c.push_victim(tp(GONE), now).is_empty());
    let evs = c.push_victim(btf(GONE), now);
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e.pid, GONE);
    assert_eq!(e.tgid, Some(GONE - 1));
    assert_eq!(e.comm.as_deref(), Some("hog"));
    assert_eq!(e.total_vm, Some(100 * 1024));
    assert_eq!(e.anon_rss, Some(64 * 1024));
    assert_eq!(e.file_rss, Some(2 * 1024));
    assert_eq!(e.shmem_rss, Some(1024));
    assert_eq!(e.pgtables, Some(8 * 1024));
    assert_eq!(e.uid, Some(1000));
    assert_eq!(e.oom_score_adj, Some(500));
    assert_eq!(e.cgroup_id, Some(12345));
    assert_eq!(
        e.cgroup, None,
        "no resolver and no /proc entry: absent, not invented"
    );
    assert_eq!(e.trigger.as_ref().unwrap().comm, "sh");
    assert_eq!(e.sources["memory"], Source::MarkVictimTracepoint);
    assert_eq!(e.sources["tgid"], Source::MarkVictimBtf);
    assert_eq!(e.sources["oom_score_adj"], Source::MarkVictimTracepoint);
    assert!(c.next_deadline().is_none());
}

#[test]
fn lone_record_waits_then_is_emitted_with_the_rest_absent() {
    let mut c = correlator(true, true);
    let now = Instant::now();
    assert!(c.push_victim(btf(GONE), now).is_empty());
    let deadline = c.next_deadline().unwrap();
    assert_eq!(deadline, now + DEFAULT_WINDOW);
    assert!(c.flush_expired(now).is_empty());
    let evs = c.flush_expired(deadline);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].anon_rss, None);
    assert_eq!(evs[0].uid, None);
    assert!(!evs[0].sources.contains_key("memory"));
}

#[test]
fn only_tracepoint_attached_completes_at_once() {
    let mut c = correlator(true, false);
    let evs = c.push_victim(tp(GONE), Instant::now());
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].tgid, None);
}

#[test]
fn two_kills_of_one_pid_are_never_merged() {
    let mut c = correlator(true, true);
    let now = Instant::now();
    assert!(c.push_victim(tp(GONE), now).is_empty());
    let evs = c.push_victim(tp(GONE), now);
    assert_eq!(
        evs.len(),
        1,
        "the first kill is emitted when a second one arrives"
    );
    assert_eq!(c.flush_all().len(), 1);
}

#[test]
fn interleaved_victims_pair_by_pid() {
    let mut c = correlator(true, true);
    let now = Instant::now();
    assert!(c.push_victim(tp(GONE), now).is_empty());
    assert!(c.push_victim(tp(GONE + 1), now).is_empty());
    let a = c.push_victim(btf(GONE + 1), now);
    let b = c.push_victim(btf(GONE), now);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].pid, GONE + 1);
    assert_eq!(a[0].tgid, Some(GONE));
    assert_eq!(b[0].tgid, Some(GONE - 1));
}

#[test]
fn pid_only_kernel_fills_from_proc_when_the_process_is_there() {
    let me = std::process::id() as i32;
    let mut c = correlator(true, false);
    let evs = c.push_victim(rec(RecordKind::MarkVictimTracepoint, me, 0), Instant::now());
    let e = &evs[0];
    assert_eq!(e.tgid, Some(me));
    assert!(e.anon_rss.is_some());
    assert!(e.cgroup.is_some());
    assert_eq!(e.sources["memory"], Source::Procfs);
    assert_eq!(e.sources["cgroup"], Source::ProcCgroup);
    assert_eq!(e.sources["pid"], Source::MarkVictimTracepoint);
}

#[test]
fn unknown_kinds_are_ignored() {
    let mut c = correlator(true, true);
    let mut r = tp(GONE);
    r.kind = 99;
    assert!(c.push_victim(r, Instant::now()).is_empty());
    assert!(c.next_deadline().is_none());
}

#[test]
fn comm_stops_at_nul() {
    let mut c = [0u8; COMM_LEN];
    c[..5].copy_from_slice(b"abc\0d");
    assert_eq!(comm_str(&c), "abc");
    assert_eq!(comm_str(&[b'x'; COMM_LEN]), "x".repeat(16));
}

fn kmsg(line: &str) -> crate::source::kmsg::KmsgRecord {
    crate::source::kmsg::parse_record(line.as_bytes()).unwrap()
}

fn killed_line(pid: i32) -> String {
    format!("3,9,100,-;Memory cgroup out of memory: Killed process {pid} (hog) total-vm:100kB, anon-rss:64kB, file-rss:2kB, shmem-rss:1kB, UID:1000 pgtables:8kB oom_score_adj:500")
}

#[test]
fn kernel_log_context_is_attached_whichever_arrives_first() {
    let now = Instant::now();
    // Event first, then the kernel's lines.
    let mut c = correlator(true, false).with_kmsg();
    assert!(
        c.push_victim(tp(GONE), now).is_empty(),
        "held for its context"
    );
    assert_eq!(c.next_deadline(), Some(now + KMSG_WAIT));
    let inv =
        "4,7,90,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500";
    assert!(c.push_kmsg(&kmsg(inv), now).is_empty());
    let evs = c.push_kmsg(&kmsg(&killed_line(GONE)), now);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].sources["oom"], Source::Kmsg);
    assert_eq!(evs[0].oom.gfp_mask.as_deref(), Some("0xcc0"));
    assert_eq!(evs[0].oom_id, Some(1));
    // The kernel's lines first, then the event.
    let mut c = correlator(true, false).with_kmsg();
    assert!(c.push_kmsg(&kmsg(&killed_line(GONE)), now).is_empty());
    let evs = c.push_victim(tp(GONE), now);
    assert_eq!(evs.len(), 1);
    assert!(evs[0].oom_id.is_some() && evs[0].oom.message.is_some());
}

#[test]
fn without_kernel_log_context_the_event_goes_out_after_the_bound() {
    let now = Instant::now();
    let mut c = correlator(true, false).with_kmsg();
    assert!(c.push_victim(tp(GONE), now).is_empty());
    assert!(c.flush_expired(now + KMSG_WAIT / 2).is_empty());
    let evs = c.flush_expired(now + KMSG_WAIT);
    assert_eq!(evs.len(), 1);
    assert!(evs[0].oom == OomContext::default() && evs[0].oom_id.is_none());
    assert!(c.next_deadline().is_none());
}

#[test]
fn a_task_marked_without_a_kill_gets_no_event() {
    // Without a signal_generate program: the first mark of a process is its kill.
    let mut c = correlator(false, true);
    let now = Instant::now();
    let mut killed = btf(GONE - 10);
    killed.tgid = GONE - 10;
    killed.present |= field::SIGNALS | field::SIGKILL_PENDING;
    assert_eq!(c.push_victim(killed, now).len(), 1);
    // Another thread of the process just killed, marked when it allocated again.
    let mut thread = killed;
    thread.pid = GONE - 9;
    thread.ktime_ns += 1_000_000;
    assert!(c.push_victim(thread, now).is_empty(), "same process");
    assert_eq!(c.marks_without_kill(), 1);

    // With one: only a mark right after its SIGKILL is a kill.
    let mut c = correlator(false, true).with_kill_signals_since(0);
    let mut thread = btf(GONE);
    thread.present |= field::SIGNALS | field::SIGKILL_PENDING;
    assert!(c.push_victim(thread, now).is_empty());
    thread.present |= field::KILL_SENT;
    assert_eq!(c.push_victim(thread, now).len(), 1);
    assert_eq!(c.marks_without_kill(), 1);
}

#[test]
fn allocating_task_kills_are_flagged_from_the_kernels_message() {
    let now = Instant::now();
    let mut c = correlator(true, false).with_kmsg();
    let line = format!("3,9,100,-;Out of memory (oom_kill_allocating_task): Killed process {GONE} (hog) total-vm:100kB, anon-rss:64kB, file-rss:2kB, shmem-rss:1kB, UID:1000 pgtables:8kB oom_score_adj:0");
    assert!(c.push_kmsg(&kmsg(&line), now).is_empty());
    let ev = c.push_victim(tp(GONE), now).remove(0);
    assert_eq!(ev.allocating_task_kill, Some(true), "{:?}", ev.oom.message);
    let ev = {
        let mut c = correlator(true, false).with_kmsg();
        c.push_kmsg(&kmsg(&killed_line(GONE)), now);
        c.push_victim(tp(GONE), now).remove(0)
    };
    assert_eq!(ev.allocating_task_kill, Some(false));
    let mut plain = correlator(true, false);
    assert_eq!(
        plain.push_victim(tp(GONE), now)[0].allocating_task_kill,
        None
    );
}

#[test]
fn the_oom_badness_probes_tasks_are_the_invocations_candidates() {
    use oomwatch_common::{candidate_field, oom_field, CandidateRecord, OomKillRecord};
    let now = Instant::now();
    let victim = tp(GONE);
    let scored = |seq: u32, pid: i32, points: i64| {
        let mut r = CandidateRecord::zeroed();
        r.kind = RecordKind::CandidateKretprobe as u32;
        r.invocation_ktime_ns = victim.ktime_ns - 10;
        r.trigger_pid = 9;
        r.seq = seq;
        r.pid = pid;
        r.tgid = pid;
        r.points = points;
        r.present = candidate_field::PID;
        r
    };
    let mut k = OomKillRecord::zeroed();
    k.kind = RecordKind::OomKill as u32;
    k.ktime_ns = victim.ktime_ns - 5;
    k.invocation_ktime_ns = victim.ktime_ns - 10;
    k.trigger_pid = 9;
    k.chosen_pid = GONE;
    k.present = oom_field::CHOSEN | oom_field::INVOCATION;
    let mut c = correlator(true, false)
        .with_oom_kill(Source::OomKillKprobe, vec![])
        .with_candidates(2);
    c.push_candidate(scored(0, 77, 10));
    c.push_candidate(scored(1, GONE, 900));
    c.push_candidate(scored(2, 78, 50));
    assert!(c.push(Record::OomKill(k), now).is_empty());
    let ev = c.push_victim(victim, now).remove(0);
    let got: Vec<(i32, i64)> = ev
        .oom
        .candidates
        .iter()
        .flatten()
        .map(|c| (c.pid, c.points))
        .collect();
    assert_eq!(got, [(GONE, 900), (78, 50)]);
    assert_eq!(ev.sources["candidates"], Source::CandidatesKretprobe);
    // The kernel log's dump then only fills what the probe could not read.
    let mut dump = ev.clone();
    let mut from_dump = dump.oom.candidates.clone().unwrap();
    from_dump[1].rss = Some(4096);
    supplement(
        &mut dump,
        OomContext {
            candidates: Some(from_dump),
            ..OomContext::default()
        },
    );
    let list = dump.oom.candidates.unwrap();
    assert_eq!((list[1].rss, list[1].points), (Some(4096), 50));
    assert_eq!(dump.sources["candidates"], Source::CandidatesKretprobe);
}

#[test]
fn a_victim_whose_cgroup_is_gone_takes_it_from_the_report() {
    // The victim is gone from /proc and has no cgroup id to look up (its directory was removed
    // right after the kill, as a runtime does for an exited container): the report names it.
    let now = Instant::now();
    let mut c = correlator(true, false).with_kmsg();
    let inv =
        "4,7,90,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500";
    let summary = format!("6,8,95,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/pod,task_memcg=/pod/gone,task=hog,pid={GONE},uid=1000");
    for line in [inv, &summary, &killed_line(GONE)] {
        c.push_kmsg(&kmsg(line), now);
    }
    let ev = c.push_victim(tp(GONE), now).remove(0);
    assert_eq!(ev.cgroup.as_deref(), Some("/pod/gone"));
    assert_eq!(ev.victim.cgroup.as_deref(), Some("/pod/gone"));
    assert_eq!(ev.sources["cgroup"], Source::Kmsg);
    // Another victim of the invocation (a memory.oom.group member) is not the chosen task:
    // the report's path is not its own.
    let mut c = correlator(true, false).with_kmsg();
    let summary = summary.replace(&format!("pid={GONE}"), &format!("pid={}", GONE - 5));
    for line in [inv, &summary, &killed_line(GONE)] {
        c.push_kmsg(&kmsg(line), now);
    }
    let ev = c.push_victim(tp(GONE), now).remove(0);
    assert_eq!(ev.cgroup, None);
}
