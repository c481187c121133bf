use std::fs;

use super::*;

const MIB: u64 = 1 << 20;
const UNLIMITED_4K: &str = "9223372036854771712";
const POD_UID: &str = "7c3d8a6e-2f41-4b9a-8e5d-0c1f2a3b4d5e";
const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn limits() {
    assert_eq!(parse_limit("max\n", 4096), Some(Limit::Unlimited));
    assert_eq!(parse_limit(UNLIMITED_4K, 4096), Some(Limit::Unlimited));
    assert_eq!(
        parse_limit(&u64::MAX.to_string(), 4096),
        Some(Limit::Unlimited)
    );
    assert_eq!(
        parse_limit("67108864\n", 4096),
        Some(Limit::Bytes(64 * MIB))
    );
    assert_eq!(parse_limit("0", 0), Some(Limit::Bytes(0)));
    for bad in ["", "-1", "12 kB", "max max", "\u{0}"] {
        assert_eq!(parse_limit(bad, 4096), None, "{bad:?}");
    }
}

#[test]
fn inactive_file_prefers_the_hierarchical_v1_total() {
    let v1 = "cache 10\ninactive_file 5\ntotal_cache 30\ntotal_inactive_file 20\n";
    assert_eq!(parse_inactive_file(v1), Some(20));
    assert_eq!(parse_inactive_file("anon 1\ninactive_file 7\n"), Some(7));
    assert_eq!(
        parse_inactive_file("inactive_file x\ninactive_file 3\n"),
        Some(3)
    );
    assert_eq!(parse_inactive_file("inactive_file 1 2\nanon 3"), None);
}

#[test]
fn ratio_and_headroom() {
    let c = |limit, usage| Candidate {
        path: "/a".into(),
        dir: "/a".into(),
        limit,
        usage,
    };
    assert_eq!(c(100, 90).ratio(), 0.9);
    assert_eq!(c(100, 90).headroom(), 10.0);
    assert_eq!(c(100, 120).headroom(), -20.0);
    assert_eq!(c(0, 0).ratio(), 1.0);
}

/// A v1 tree under `<root>/sys/fs/cgroup/memory`.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let t = Tree {
            root: tempfile::tempdir().unwrap(),
        };
        t.cgroup("/", None, 0);
        t
    }

    fn mount(&self) -> PathBuf {
        self.root.path().join("sys/fs/cgroup/memory")
    }

    fn hierarchy(&self, version: Version) -> MemoryHierarchy {
        MemoryHierarchy {
            version,
            mount: self.mount(),
        }
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A v1 cgroup: `None` = unlimited.
    fn cgroup(&self, path: &str, limit: Option<u64>, usage: u64) -> PathBuf {
        let dir = self.mount().join(path.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let limit = limit.map_or(UNLIMITED_4K.to_string(), |l| l.to_string());
        fs::write(dir.join("memory.limit_in_bytes"), limit).unwrap();
        fs::write(dir.join("memory.usage_in_bytes"), format!("{usage}\n")).unwrap();
        dir
    }

    /// A process: memory in kB, in cgroup `cg`.
    fn process(&self, pid: i32, comm: &str, anon_kb: u64, adj: i16, cg: &str, score: u32) {
        let d = format!("proc/{pid}");
        self.write(
            &format!("{d}/status"),
            &format!(
                "Name:\t{comm}\nRssAnon:\t{anon_kb} kB\nRssFile:\t0 kB\nRssShmem:\t0 kB\n\
                 VmPTE:\t0 kB\nVmSwap:\t0 kB\n"
            ),
        );
        self.write(&format!("{d}/oom_score_adj"), &format!("{adj}\n"));
        self.write(&format!("{d}/oom_score"), &format!("{score}\n"));
        self.write(
            &format!("{d}/stat"),
            &format!("{pid} ({comm}) S 1 1 1 0 -1 4194560 0"),
        );
        self.write(&format!("{d}/cgroup"), &format!("4:memory:{cg}\n0::/\n"));
    }
}

#[test]
fn walk_keeps_the_k_closest_and_counts_everything() {
    let t = Tree::new();
    t.cgroup("/a", Some(100 * MIB), 50 * MIB);
    t.cgroup("/a/near", Some(10 * MIB), 9 * MIB);
    t.cgroup("/b", None, 500 * MIB);
    t.cgroup("/b/full", Some(MIB), MIB);
    t.cgroup("/b/same-ratio", Some(2 * MIB), 2 * MIB);
    t.cgroup("/c", Some(MIB), 0);
    fs::create_dir_all(t.mount().join("not-memcg")).unwrap();
    let w = walk(&t.hierarchy(Version::V1), 3, MAX_DIRS, 4096).unwrap();
    let paths: Vec<&str> = w.selected.iter().map(|c| c.path.as_str()).collect();
    // Same ratio: less headroom first (both 0 here: then by path).
    assert_eq!(paths, ["/b/full", "/b/same-ratio", "/a/near"]);
    assert_eq!((w.scanned, w.limited, w.truncated), (8, 5, false));
    assert_eq!(w.selected[2].limit, 10 * MIB);
    assert_eq!(w.selected[2].usage, 9 * MIB);

    // Breadth first: the bound leaves out the deepest level.
    let w = walk(&t.hierarchy(Version::V1), 10, 5, 4096).unwrap();
    let paths: Vec<&str> = w.selected.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/c"]);
    assert_eq!((w.scanned, w.truncated), (5, true));
}

#[test]
fn unreadable_root_fails_and_missing_hierarchy_does_not() {
    let t = Tree::new();
    let gone = MemoryHierarchy {
        version: Version::V2,
        mount: t.root.path().join("nope"),
    };
    assert!(matches!(
        walk(&gone, 3, 10, 4096),
        Err(HostError::Read { .. })
    ));
    let mut m = MemcgHeadroom::new(t.root.path().join("empty"), 5);
    let fams = m.collect(4096).unwrap();
    let scanned = fams
        .iter()
        .find(|f| f.name() == "oomwatch_memcg_headroom_cgroups_scanned")
        .unwrap();
    assert_eq!(scanned.get_metric()[0].get_gauge().get_value(), 0.0);
}

#[test]
fn v2_detail_and_pressure() {
    let t = Tree::new();
    let dir = t.mount().join("x");
    t.write(
        "sys/fs/cgroup/memory/x/memory.events",
        "low 0\nhigh 4\nmax 7\noom 1\noom_kill 1\n",
    );
    t.write(
        "sys/fs/cgroup/memory/x/memory.pressure",
        "some avg10=12.50 avg60=2.00 avg300=0.50 total=99\n\
         full avg10=1.00 avg60=0.00 avg300=0.00 total=9\n",
    );
    t.write(
        "sys/fs/cgroup/memory/x/memory.stat",
        "anon 5\ninactive_file 3\n",
    );
    let d = read_detail(Version::V2, &dir);
    assert_eq!(
        (d.max_events, d.high_events, d.inactive_file),
        (Some(7), Some(4), Some(3))
    );
    assert_eq!(d.psi.unwrap().some.unwrap().avg10, 12.5);
    // PSI disabled (or garbage): no pressure; v1 reads failcnt.
    t.write("sys/fs/cgroup/memory/x/memory.pressure", "");
    t.write("sys/fs/cgroup/memory/x/memory.failcnt", "3\n");
    assert_eq!(read_detail(Version::V2, &dir).psi, None);
    let d = read_detail(Version::V1, &dir);
    assert_eq!((d.max_events, d.high_events, d.psi), (Some(3), None, None));
    assert_eq!(
        read_detail(Version::V1, &t.mount().join("gone")),
        Detail::default()
    );
}

#[test]
fn next_victim_is_ranked_against_the_cgroup_limit() {
    let t = Tree::new();
    t.write("proc/meminfo", "MemTotal: 8388608 kB\nSwapTotal: 0 kB\n");
    let a = t.cgroup("/a", Some(256 * MIB), 200 * MIB);
    let b = t.cgroup("/b", Some(64 * MIB), 0);
    t.cgroup("/a/c", None, 0);
    fs::write(a.join("memory.swappiness"), "0").unwrap();
    // In /a's subtree: 48 MiB at adj 0 vs 8 MiB at adj 500 (+32768 points of 65536 pages):
    // the small one wins, as in `oomwatch top --cgroup`.
    t.process(10, "big", 48 * 1024, 0, "/a", 40);
    t.process(11, "small", 8 * 1024, 500, "/a/c", 700);
    t.process(12, "protected", 100 * 1024, -1000, "/a", 0);
    t.process(13, "outside", 900 * 1024, 1000, "/", 1900);
    let got = next_victims(
        t.root.path(),
        Version::V1,
        &[("/a", &a), ("/b", &b), ("/a/c", &t.mount().join("a/c"))],
        4096,
    );
    let small = Victim {
        pid: 11,
        comm: "small".into(),
        oom_score: 700,
    };
    // /a/c has no limit of its own: its limit file says unlimited, and it is still ranked.
    assert_eq!(got, [Some(small.clone()), None, Some(small)]);
    // Without /proc/meminfo nothing is ranked.
    fs::remove_file(t.root.path().join("proc/meminfo")).unwrap();
    assert_eq!(
        next_victims(t.root.path(), Version::V1, &[("/a", &a)], 4096),
        [None]
    );
}

#[test]
fn kubernetes_labels_from_the_path_and_bundle() {
    let t = Tree::new();
    let pod = format!("/kubepods/burstable/pod{POD_UID}");
    let pod_dir = t.cgroup(&pod, Some(128 * MIB), 100 * MIB);
    let ctr = format!("{pod}/{CID}");
    let ctr_dir = t.cgroup(&ctr, Some(64 * MIB), 60 * MIB);
    // containerd's bundle of the container.
    t.write(
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json"),
        &format!(
            r#"{{"annotations":{{"io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"app","io.kubernetes.cri.sandbox-name":"web-0",
            "io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"{POD_UID}"}}}}"#
        ),
    );
    let mut bundles = BundleReader::new(BundleConfig {
        host_root: t.root.path().to_owned(),
        ..BundleConfig::default()
    });
    let c = who(&ctr, &ctr_dir, &mut bundles);
    assert_eq!(
        c,
        Who {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "app".into(),
            pod_uid: POD_UID.into(),
        }
    );
    let p = who(&pod, &pod_dir, &mut bundles);
    assert_eq!((p.pod.as_str(), p.container.as_str()), ("web-0", ""));
    assert_eq!(
        who("/system.slice/x.service", &t.mount(), &mut bundles),
        Who::default()
    );
}

/// As `HostCollectors::collect` renders: empty families left out.
fn text(fams: &[MetricFamily]) -> String {
    let fams: Vec<MetricFamily> = fams
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .cloned()
        .collect();
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&fams, &mut out)
        .unwrap();
    out
}

#[test]
fn families_of_a_v1_tree() {
    let t = Tree::new();
    t.write("proc/meminfo", "MemTotal: 8388608 kB\nSwapTotal: 0 kB\n");
    let a = t.cgroup("/a", Some(64 * MIB), 56 * MIB);
    fs::write(a.join("memory.failcnt"), "5\n").unwrap();
    fs::write(a.join("memory.stat"), "total_inactive_file 1048576\n").unwrap();
    t.cgroup("/b", Some(64 * MIB), 0);
    t.process(7, "helper", 56 * 1024, 0, "/a", 12);
    let mut m = MemcgHeadroom::new(t.root.path(), 20).with_hierarchy(t.hierarchy(Version::V1));
    let fams = m.collect(4096).unwrap();
    let out = text(&fams);
    let l = r#"cgroup="/a",container="",namespace="",pod="",pod_uid="""#;
    for want in [
        format!("oomwatch_memcg_limit_bytes{{{l}}} 67108864"),
        format!("oomwatch_memcg_usage_bytes{{{l}}} 58720256"),
        format!("oomwatch_memcg_working_set_bytes{{{l}}} 57671680"),
        format!("oomwatch_memcg_headroom_bytes{{{l}}} 8388608"),
        format!("oomwatch_memcg_usage_ratio{{{l}}} 0.875"),
        format!("oomwatch_memcg_headroom_max_events_total{{{l}}} 5"),
        r#"oomwatch_memcg_next_victim_info{cgroup="/a",comm="helper",container="",namespace="",oom_score="12",pid="7",pod="",pod_uid=""} 1"#.into(),
        r#"oomwatch_memcg_usage_ratio{cgroup="/b",container="",namespace="",pod="",pod_uid=""} 0"#.into(),
        "oomwatch_memcg_headroom_cgroups_scanned 3".into(),
        "oomwatch_memcg_headroom_cgroups_limited 2".into(),
        "oomwatch_memcg_headroom_scans_truncated_total 0".into(),
    ] {
        assert!(out.lines().any(|x| x == want), "no {want:?} in\n{out}");
    }
    assert!(!out.contains("oomwatch_memcg_pressure_ratio{"), "{out}");
    // K = 1 keeps /a only; a truncated walk counts.
    let mut m = MemcgHeadroom::new(t.root.path(), 1)
        .with_hierarchy(t.hierarchy(Version::V1))
        .with_max_dirs(2);
    m.collect(4096).unwrap();
    let out = text(&m.collect(4096).unwrap());
    assert!(
        out.contains("oomwatch_memcg_headroom_scans_truncated_total 2"),
        "{out}"
    );
    assert!(!out.contains("cgroup=\"/b\""), "{out}");
    // K = 0: no walk at all.
    let mut m = MemcgHeadroom::new(t.root.path(), 0).with_hierarchy(t.hierarchy(Version::V1));
    let out = text(&m.collect(4096).unwrap());
    assert!(
        out.contains("oomwatch_memcg_headroom_cgroups_scanned 0"),
        "{out}"
    );
}

#[test]
fn v2_pressure_series_are_sorted_and_scaled() {
    let t = Tree::new();
    let x = t.mount().join("x");
    fs::create_dir_all(&x).unwrap();
    fs::write(x.join("memory.max"), "1000\n").unwrap();
    fs::write(x.join("memory.current"), "999\n").unwrap();
    fs::write(
        x.join("memory.pressure"),
        "some avg10=12.50 avg60=2.00 avg300=0.50 total=99\n",
    )
    .unwrap();
    let mut m = MemcgHeadroom::new(t.root.path(), 5).with_hierarchy(t.hierarchy(Version::V2));
    let fams = m.collect(4096).unwrap();
    let p = fams
        .iter()
        .find(|f| f.name() == "oomwatch_memcg_pressure_ratio")
        .unwrap();
    let got: Vec<(String, f64)> = p
        .get_metric()
        .iter()
        .map(|m| {
            let l: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
            assert_eq!(
                l,
                [
                    "cgroup",
                    "container",
                    "kind",
                    "namespace",
                    "pod",
                    "pod_uid",
                    "window"
                ]
            );
            (
                m.get_label()[6].value().to_owned(),
                m.get_gauge().get_value(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10s".into(), 0.125),
            ("300s".into(), 0.005),
            ("60s".into(), 0.02)
        ]
    );
}

#[test]
fn random_files_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const CHARS: &[u8] = b"0123456789 \nmaxsomefullavg10=.total_inactive_file-";
    for _ in 0..300 {
        let len = (next() % 80) as usize;
        let s: String = (0..len)
            .map(|_| CHARS[(next() % CHARS.len() as u64) as usize] as char)
            .collect();
        let _ = parse_limit(&s, next() % 70_000);
        let _ = parse_u64(&s);
        let _ = parse_inactive_file(&s);
        let _ = who(
            &s,
            Path::new("/nonexistent"),
            &mut BundleReader::new(BundleConfig::default()),
        );
    }
}
