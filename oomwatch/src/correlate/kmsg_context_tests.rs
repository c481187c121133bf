use super::*;
use crate::source::kmsg::record::parse_record;

fn feed(ctxs: &mut KmsgContexts, fixture: &str) -> Vec<i32> {
    let now = Instant::now();
    let mut ready = Vec::new();
    for line in fixture
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let rec = parse_record(line.as_bytes()).unwrap();
        ready.extend(ctxs.push_record(&rec, now));
    }
    ready
}

#[test]
fn real_report_from_this_host_gives_the_invocation_context() {
    let mut c = KmsgContexts::new();
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kmsg/oom-memcg-v6.18-host-tail.kmsg"
    ));
    let ready = feed(&mut c, text);
    assert_eq!(ready.len(), 1, "{ready:?}");
    let (id, ctx) = c.take(ready[0]).unwrap();
    assert_eq!(id, 1);
    assert_eq!(ctx.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert_eq!(ctx.gfp_mask.as_deref(), Some("0xcc0"));
    assert_eq!(ctx.order, Some(0));
    assert_eq!(ctx.oom_memcg.as_deref(), Some("/kmsgfix"));
    assert_eq!(
        ctx.trigger_cgroup, None,
        "the report names the victim's memcg, not the trigger's"
    );
    assert_eq!(ctx.chosen.as_ref().map(|t| t.pid), Some(ready[0]));
    assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
    assert!(ctx.badness.is_some_and(|p| p > 16_000), "{ctx:?}");
    assert!(c.take(ready[0]).is_none(), "taken once");
}

#[test]
fn group_kill_victims_share_the_invocation() {
    let mut c = KmsgContexts::new();
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kmsg/oom-memcg-group-v6.6.kmsg"
    ));
    let ready = feed(&mut c, text);
    assert!(ready.len() >= 2, "{ready:?}");
    let ids: Vec<u64> = ready.iter().map(|&p| c.take(p).unwrap().0).collect();
    assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
}

#[test]
fn a_killed_line_without_its_header_gets_only_what_it_says() {
    let mut c = KmsgContexts::new();
    let line = "3,9,100,-;Memory cgroup out of memory: Killed process 77 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0";
    let ready = c.push_record(&parse_record(line.as_bytes()).unwrap(), Instant::now());
    assert_eq!(ready, vec![77]);
    let (_, ctx) = c.take(77).unwrap();
    assert_eq!(ctx.constraint, None);
    assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
}

#[test]
fn kept_contexts_are_bounded() {
    let mut c = KmsgContexts::new();
    for pid in 0..(KEPT as i32 + 50) {
        let line = format!("3,{pid},100,-;Out of memory: Killed process {pid} (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0");
        c.push_record(&parse_record(line.as_bytes()).unwrap(), Instant::now());
    }
    assert_eq!(c.by_pid.len(), KEPT);
}

#[test]
fn group_members_get_the_chosen_tasks_points() {
    let mut c = KmsgContexts::new();
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kmsg/oom-memcg-group-v6.6.kmsg"
    ));
    let ready = feed(&mut c, text);
    let ctxs: Vec<OomContext> = ready.iter().map(|&p| c.take(p).unwrap().1).collect();
    assert!(ctxs
        .iter()
        .all(|x| x.badness == ctxs[0].badness && x.chosen == ctxs[0].chosen));
    assert!(
        ctxs.iter().all(|x| x.trigger_cgroup.is_none()),
        "the report does not name it"
    );
}

#[test]
fn a_second_kill_without_a_header_is_a_new_invocation_with_only_its_message() {
    let mut c = KmsgContexts::new();
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kmsg/oom-memcg-v6.18-host-tail.kmsg"
    ));
    let first = feed(&mut c, text)[0];
    // The next report's header was rate-limited: only its "Killed process" line arrives.
    let ready = c.push_record(
        &parse_record(killed(4242).as_bytes()).unwrap(),
        Instant::now(),
    );
    assert_eq!(ready, vec![4242]);
    let (id1, _) = c.take(first).unwrap();
    let (id2, ctx) = c.take(4242).unwrap();
    assert_ne!(id1, id2);
    assert_eq!(ctx.constraint, None);
    assert_eq!(ctx.chosen, None);
    assert_eq!(ctx.message.as_deref(), Some("Memory cgroup out of memory"));
}

fn killed(pid: i32) -> String {
    format!("3,99999,100,-;Memory cgroup out of memory: Killed process {pid} (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0")
}
