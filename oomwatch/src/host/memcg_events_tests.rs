use super::*;

#[test]
fn parses_v2_memory_events() {
    let c = parse_memory_events(
        "low 0\nhigh 12\nmax 40\noom 2\noom_kill 3\noom_group_kill 1\nsock_throttled 0\n",
    );
    assert_eq!(
        c,
        MemcgCounts {
            oom: Some(2),
            oom_kill: Some(3),
            oom_group_kill: Some(1),
            max: Some(40),
            high: Some(12),
            under_oom: None,
            oom_kill_disable: None,
        }
    );
}

#[test]
fn parses_v1_oom_control() {
    let c = parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 5\n");
    assert_eq!(c.oom_kill, Some(5));
    assert_eq!(c.under_oom, Some(1));
    assert_eq!(c.oom_kill_disable, Some(0));
    assert_eq!(c.oom, None);
}

#[test]
fn malformed_lines_are_ignored_and_first_wins() {
    let c = parse_memory_events("oom x\noom 1 2\noom\noom 4\noom 5\n\u{0}\n");
    assert_eq!(c.oom, Some(4));
}

#[test]
fn lru_evicts_least_recently_watched() {
    let mut m = MemcgEvents::new("/", 2);
    m.watch("/a".into(), "a".into());
    m.watch("/b".into(), "b".into());
    m.watch("/a2".into(), "a".into()); // refresh a (new dir)
    m.watch("/c".into(), "c".into()); // evicts b
    assert_eq!(m.evicted(), 1);
    let w = m.watched();
    assert_eq!(
        w,
        vec![("a", Path::new("/a2")), ("c", Path::new("/c"))],
        "b was least recent"
    );
    assert!(m.unwatch("a"));
    assert!(!m.unwatch("a"));
    assert_eq!(m.len(), 1);
    assert_eq!(MemcgEvents::new("/", 0).capacity(), 1);
}

#[test]
fn relative_dirs_resolve_under_root_and_gone_cgroups_are_dropped() {
    let root = tempfile::tempdir().unwrap();
    let v2 = root.path().join("sys/fs/cgroup/pod");
    fs::create_dir_all(&v2).unwrap();
    fs::write(v2.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
    let v1 = root.path().join("v1/job");
    fs::create_dir_all(&v1).unwrap();
    fs::write(v1.join("memory.oom_control"), "under_oom 0\noom_kill 2\n").unwrap();
    let not_memcg = root.path().join("sys/fs/cgroup/cpu-only");
    fs::create_dir_all(&not_memcg).unwrap();

    let mut m = MemcgEvents::new(root.path(), 8);
    m.watch("sys/fs/cgroup/pod".into(), "/pod".into());
    m.watch(v1.clone(), "/job".into());
    m.watch("sys/fs/cgroup/gone".into(), "/gone".into());
    m.watch(not_memcg, "/cpu-only".into());
    let r = m.read();
    let labels: Vec<_> = r
        .rows
        .iter()
        .map(|r| (r.label.as_str(), r.version))
        .collect();
    assert_eq!(labels, vec![("/job", Version::V1), ("/pod", Version::V2)]);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].0, "/cpu-only");
    assert_eq!(m.len(), 3, "/gone is no longer watched");

    let fams = m.families(&r);
    let kills = fams
        .iter()
        .find(|f| f.name() == "oomwatch_memcg_oom_kill_events_total")
        .unwrap();
    assert_eq!(kills.get_metric().len(), 2);
    assert_eq!(kills.get_metric()[0].get_counter().get_value(), 2.0);
}
