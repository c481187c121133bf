//! Kills rebuilt from real kernel-log fixtures.
use super::*;
use crate::source::kmsg::fixture_tests::load;

fn kills(name: &str) -> Vec<LoggedKill> {
    let mut b = LogKills::new("node-1".into());
    load(name).iter().flat_map(|r| b.push(r)).collect()
}

#[test]
fn a_memcg_kill_carries_the_reports_context_and_cgroup() {
    let k = kills("oom-memcg-v6.1.kmsg");
    assert_eq!(k.len(), 1);
    let ev = &k[0].event;
    assert!(ev.replayed);
    assert_eq!(ev.oom.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert!(ev.oom.gfp_mask.is_some() && ev.oom.order.is_some());
    assert!(ev.cgroup.is_some(), "task_memcg of the summary");
    assert_eq!(ev.cgroup, ev.victim.cgroup);
    assert!(ev.anon_rss.is_some_and(|b| b % 1024 == 0));
    assert_eq!(ev.sources.get("oom"), Some(&Source::Kmsg));
    assert_eq!(ev.sources.get("memory"), Some(&Source::Kmsg));
    assert!(ev.trigger.is_none(), "the report names no trigger pid");
    assert!(ev.oom_id.is_some());
}

#[test]
fn a_group_kill_gives_one_event_per_member_sharing_the_invocation() {
    let k = kills("oom-memcg-group-v6.6.kmsg");
    assert_eq!(k.len(), 2);
    let (a, b) = (&k[0].event, &k[1].event);
    assert_eq!((a.pid, b.pid), (483880, 483881));
    assert_eq!(a.oom_id, b.oom_id);
    assert_eq!(a.cgroup.as_deref(), Some("/app.slice/job, with, commas"));
    // Only the summary's victim has a known cgroup.
    assert_eq!(b.cgroup, None);
    assert_eq!(b.oom.group_kill, Some(true));
    assert_eq!(a.oom_score_adj, Some(200));
    assert_eq!(b.pgtables, Some(48 * 1024));
    assert!(k[0].seq < k[1].seq);
}

#[test]
fn every_fixture_kill_line_gives_exactly_one_event() {
    let dir: std::path::PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/kmsg"]
        .iter()
        .collect();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("Killed process"))
            .count();
        let k = kills(&name);
        assert_eq!(k.len(), lines, "{name}");
        for lk in &k {
            assert!(lk.event.replayed && lk.event.comm.is_some(), "{name}");
            assert_eq!(lk.event.victim.pid, lk.event.pid);
        }
    }
}

#[test]
fn the_reports_memory_lines_give_the_domain_at_the_kill() {
    // cgroup v1: page counters in kB, then `Memory cgroup stats` (total_* are hierarchical).
    let k = kills("oom-memcg-v6.18-host-tail.kmsg");
    let d = k[0].event.domain_memory.as_ref().expect("domain_memory");
    assert_eq!(d.source, "kmsg:oom_report");
    assert_eq!(d.cgroup.as_deref(), Some("/kmsgfix"));
    assert_eq!((d.limit, d.usage), (Some(64 << 20), Some(64 << 20)));
    assert_eq!(d.kernel, Some(192 * 1024));
    assert_eq!(d.swap_limit, None, "memory+swap unlimited");
    assert_eq!(d.anon, d.stat.get("total_rss").copied());
    assert!(d.anon.unwrap() > 60 << 20, "{d:?}");
    assert!(d.stat.keys().all(|k| k.starts_with("total_")));
    // A global OOM: Mem-Info pages.
    let g = kills("oom-global-v6.12.kmsg");
    let d = g[0].event.domain_memory.as_ref().expect("domain_memory");
    assert_eq!(d.cgroup, None);
    assert!(d.anon.is_some() && d.limit.is_none());
}

#[test]
fn v2_statistics_printed_as_one_record_are_split_into_lines() {
    let mut p = crate::source::kmsg::oom::OomReportParser::new();
    assert!(p.push_line("Memory cgroup stats for /t:").is_empty());
    assert!(p
        .push_line("anon 66846720\nfile 4096\nkernel 196608\nshmem 0\npgfault 12\n")
        .is_empty());
    let items = p.push_line("Tasks state (memory values in pages):");
    let crate::source::kmsg::oom::OomItem::MemcgStats { cgroup, stats } = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(cgroup, "/t");
    assert_eq!(stats.len(), 5);
    let d = crate::record::domain_memory::from_report(Some("/t"), &[], stats);
    assert_eq!(
        (d.anon, d.file, d.kernel),
        (Some(66846720), Some(4096), Some(196608))
    );
    assert!(!d.stat.contains_key("pgfault"));
}
