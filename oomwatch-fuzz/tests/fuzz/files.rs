//! Parsers reached through files: OCI runtime bundle files, the state file, whole host trees
//! (`/proc`, `/sys`) for the host collectors, and `/proc/<pid>` and memcg limit files for
//! `oomwatch top`. Files that never end, or are huge, stay within the readers' caps.
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use oomwatch::enrich::bundle::{self, BundleConfig, BundleReader, BundleSource};
use oomwatch::explain::domain::{memcg, Domain, HostMemory};
use oomwatch::explain::rank;
use oomwatch::host::{HostCollectors, MAX_FILE_BYTES};
use oomwatch::recovery::position::{StateFile, Tracker, FILE};
use oomwatch::sys::cgroup::Version;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::json;

use crate::harness::{self, bounded, check, Bytes, Edit};

const JSON_ALPHABET: &[u8] = b"{}[]\":,\\u0123456789abcdefnull-.eE ";
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"annotations\"",
    "\"Config\"",
    "\"Labels\"",
    "\"io.kubernetes.cri.sandbox-name\"",
    "\"io.kubernetes.cri.container-type\"",
    "\"io.kubernetes.pod.name\"",
    "\"io.kubernetes.container.name\"",
    "\"io.kubernetes.docker.type\"",
    "\"sandbox\"",
    "\"podsandbox\"",
    "\"POD\"",
    "\"web\"",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "null",
    "true",
    "1e999",
    "-0",
    "\"boot_id\"",
    "\"seq\"",
    "\"recent\"",
];

const CID: &str = "8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f";

fn bundle_corpus() -> Vec<Vec<u8>> {
    let annotations = json!({
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-name": "web-7d4b9c",
        "io.kubernetes.cri.sandbox-uid": "6f1c2a8e-3b4d-4e5f-9a0b-1c2d3e4f5a6b",
        "io.kubernetes.cri.container-name": "web",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.name": "web-7d4b9c",
        "io.kubernetes.pod.uid": "6f1c2a8e-3b4d-4e5f-9a0b-1c2d3e4f5a6b",
        "io.kubernetes.container.name": "web",
        "io.kubernetes.cri-o.ContainerType": "container",
    });
    let oci = json!({"ociVersion": "1.1.0", "process": {"args": ["nginx"], "env": ["A=b"]},
        "root": {"path": "rootfs"}, "annotations": annotations});
    let docker = json!({"ID": CID, "Name": "/shop-web-1", "Config": {"Hostname": "web",
        "Image": "shop/web:1", "Env": ["SECRET=x"], "Labels": annotations}});
    [oci, docker, json!({"annotations": {}})]
        .iter()
        .map(|v| serde_json::to_vec_pretty(v).unwrap())
        .collect()
}

fn check_names(source: BundleSource, bytes: &[u8]) {
    let parsed = bounded("bundle::parse_names", bytes.len(), 64, || {
        bundle::parse_names(source, bytes)
    });
    if let Ok(Some(n)) = parsed {
        let fields = [
            &n.namespace,
            &n.pod,
            &n.pod_uid,
            &n.container,
            &n.name,
            &n.image,
        ];
        for f in fields.into_iter().flatten() {
            assert!(!f.is_empty() && f.len() <= bytes.len());
        }
        assert_eq!(n.source, source);
    }
}

#[test]
fn bundle_config_json() {
    let sources = [
        BundleSource::Containerd,
        BundleSource::Crio,
        BundleSource::Docker,
        BundleSource::Podman,
    ];
    let strategy = (
        prop_oneof![
            3 => harness::mutated(bundle_corpus(), JSON_ALPHABET, 8),
            1 => harness::soup(JSON_TOKENS, 60),
        ],
        any::<Index>(),
    );
    check("bundle_config_json", 1, strategy, |(bytes, which)| {
        check_names(sources[which.index(sources.len())], &bytes.0);
    });
}

#[test]
fn bundle_deep_nesting_and_huge_files() {
    for open in ["[", "{\"a\":", "{\"annotations\":"] {
        let doc = open.repeat(100_000);
        for source in [BundleSource::Containerd, BundleSource::Docker] {
            check_names(source, doc.as_bytes());
        }
    }
    // A config.json larger than the cap (sparse: no disk used) is skipped, never read.
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir
        .path()
        .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
        .join(CID);
    fs::create_dir_all(&tasks).unwrap();
    let f = fs::File::create(tasks.join("config.json")).unwrap();
    let config = BundleConfig {
        host_root: dir.path().to_path_buf(),
        ..BundleConfig::default()
    };
    for len in [1 << 30, bundle::MAX_FILE_BYTES + 1] {
        f.set_len(len).unwrap();
        let mut reader = BundleReader::new(config.clone());
        let found = bounded("BundleReader::lookup", 0, 1, || reader.lookup(CID, None));
        assert!(found.is_none());
    }
}

/// Mutated bundle files read through the reader, as the agent does, from each runtime's place.
#[test]
fn bundle_files_through_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let files = [
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/{}/config.json",
        "var/lib/containers/storage/overlay-containers/{}/userdata/config.json",
        "var/lib/docker/containers/{}/config.v2.json",
    ];
    let strategy = (
        harness::mutated(bundle_corpus(), JSON_ALPHABET, 8),
        any::<Index>(),
    );
    check("bundle_files", 8, strategy, |(bytes, which)| {
        let rel = files[which.index(files.len())].replace("{}", CID);
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &bytes.0).unwrap();
        let config = BundleConfig {
            host_root: root.to_path_buf(),
            ..BundleConfig::default()
        };
        let mut reader = BundleReader::new(config);
        let _ = bounded("BundleReader::lookup", bytes.0.len(), 64, || {
            reader.lookup(CID, None)
        });
        let _ = reader.warm();
        fs::remove_file(&path).unwrap();
    });
}

#[test]
fn state_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::open(dir.path()).unwrap();
    let path = dir.path().join(FILE);
    let recent: Vec<i32> = (0..300).collect();
    let corpus = vec![
        br#"{"boot_id":"5d3c0a2e-1b4f-4e6a-9c8d-7f6e5d4c3b2a","seq":1234,"recent":[1,2,3]}"#
            .to_vec(),
        serde_json::to_vec(&json!({"boot_id": "b", "seq": u64::MAX, "recent": recent})).unwrap(),
    ];
    let strategy = (
        prop_oneof![
            3 => harness::mutated(corpus, JSON_ALPHABET, 8),
            1 => harness::soup(JSON_TOKENS, 40),
        ],
        proptest::collection::vec((any::<u64>(), any::<i32>(), any::<u8>()), 0..200),
    );
    check("state_file", 4, strategy, |(bytes, ops)| {
        fs::write(&path, &bytes.0).unwrap();
        let Some(pos) = bounded("StateFile::load", bytes.0.len(), 16, || file.load()) else {
            return;
        };
        let mut t = Tracker::new(&pos.recent, Some(pos.seq));
        for (seq, pid, op) in ops {
            match op % 4 {
                0 => t.record(seq),
                1 => drop(t.killed(seq, pid)),
                2 => t.recorded(pid),
                _ => drop(t.take_pending_through(seq)),
            }
        }
        if let Some(p) = t.position(&pos.boot_id) {
            assert!(p.recent.len() <= 64, "{} recent pids kept", p.recent.len());
        }
    });
}

/// A copy of a fixture host tree in a temporary directory.
fn copy_tree(from: &Path, to: &Path) -> Vec<PathBuf> {
    let files = harness::files_below(from);
    for (rel, data) in &files {
        let p = to.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    files.into_iter().map(|(rel, _)| rel).collect()
}

/// Whole host trees with random edits to random files, collected as at a scrape.
#[test]
fn host_trees() {
    let dir = tempfile::tempdir().unwrap();
    let trees: Vec<(PathBuf, Vec<PathBuf>)> = ["basic", "numa-risky"]
        .iter()
        .map(|t| {
            let to = dir.path().join(t);
            let files = copy_tree(&harness::fixtures("host").join(t), &to);
            (to, files)
        })
        .collect();
    let one = (any::<Index>(), harness::edits(b" \t\n:=[]0123456789kB", 6));
    let strategy = (any::<Index>(), proptest::collection::vec(one, 1..6));
    check(
        "host_trees",
        8,
        strategy,
        |(tree, edits): (Index, Vec<(Index, Vec<Edit>)>)| {
            let (root, files) = &trees[tree.index(trees.len())];
            let mut saved = Vec::new();
            for (file, edits) in &edits {
                let p = root.join(&files[file.index(files.len())]);
                let mut data = fs::read(&p).unwrap();
                saved.push((p.clone(), data.clone()));
                for e in edits {
                    harness::apply(&mut data, e);
                }
                fs::write(&p, data).unwrap();
            }
            let host = HostCollectors::new(root.as_path()).with_page_size(4096);
            host.watch_memcg(
                "sys/fs/cgroup/system.slice/app.service".into(),
                "/app".into(),
            );
            host.watch_memcg("sys/fs/cgroup/memory/batch/job-7".into(), "/job".into());
            let fams = host.collect();
            let mut out = String::new();
            prometheus::TextEncoder::new()
                .encode_utf8(&fams, &mut out)
                .unwrap();
            let _ = host.snapshot().warnings();
            for (p, data) in saved.into_iter().rev() {
                fs::write(p, data).unwrap();
            }
        },
    );
}

/// Files that never end (`/dev/zero`) or are huge (sparse) fail their collector after at most
/// `MAX_FILE_BYTES`; the scrape goes on and its heap stays near the cap.
#[test]
fn host_endless_files_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&harness::fixtures("host/basic"), root);
    fs::remove_file(root.join("proc/meminfo")).unwrap();
    symlink("/dev/zero", root.join("proc/meminfo")).unwrap();
    let f = fs::File::create(root.join("proc/zoneinfo")).unwrap();
    f.set_len(1 << 30).unwrap();
    let host = HostCollectors::new(root);
    // The read buffer doubles up to twice the cap.
    let limit = 3 * MAX_FILE_BYTES as usize + harness::SLACK;
    let (snap, peak) = harness::peak_heap(|| host.snapshot());
    assert!(peak <= limit, "{peak} bytes (limit {limit})");
    assert!(snap.collector_errors.contains_key("meminfo"), "{snap:?}");
    assert!(snap.collector_errors.contains_key("sysctl"), "{snap:?}");
    let (_, peak) = harness::peak_heap(|| host.collect());
    assert!(peak <= limit, "{peak} bytes (limit {limit})");
}

/// `/proc/<pid>` files and memcg limit files with random edits, ranked as `oomwatch top` does.
#[test]
fn top_proc_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    let pid_dir = proc.join("42");
    fs::create_dir_all(&pid_dir).unwrap();
    let cg = dir.path().join("cg");
    fs::create_dir_all(&cg).unwrap();
    let corpus = vec![
        b"Name:\tweb\nTgid:\t42\nUid:\t0\t0\t0\t0\nVmSize:\t 1000 kB\nRssAnon:\t 100 kB\nRssFile:\t 10 kB\nRssShmem:\t 0 kB\nVmPTE:\t 8 kB\nVmSwap:\t 4 kB\nKthread:\t0\n".to_vec(),
        b"42 (web) S 1 42 42 0 -1 4194560 1 0 0 0\n".to_vec(),
        b"0::/kubepods/burstable/pod1/abc\n".to_vec(),
        b"667\n".to_vec(),
        b"-999\n".to_vec(),
        b"max\n".to_vec(),
        b"9223372036854771712\n".to_vec(),
    ];
    let names = [
        "status",
        "stat",
        "cgroup",
        "oom_score",
        "oom_score_adj",
        "memory.max",
        "memory.swap.max",
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.swappiness",
    ];
    let strategy = proptest::collection::vec(
        harness::mutated(corpus, b":\t\n 0123456789kB()-max", 6),
        names.len(),
    );
    check("top_proc_and_limits", 4, strategy, |files: Vec<Bytes>| {
        for (name, data) in names.iter().zip(&files) {
            let base = if name.starts_with("memory.") {
                &cg
            } else {
                &pid_dir
            };
            fs::write(base.join(name), &data.0).unwrap();
        }
        let host = HostMemory {
            ram_pages: 1 << 22,
            swap_pages: 1 << 20,
        };
        for version in [Version::V1, Version::V2] {
            let m = memcg(version, "/cg".into(), cg.clone(), host, dir.path(), 4096);
            let domain = Domain {
                page_size: 4096,
                host,
                memcg: m.ok(),
            };
            let _ = domain.total_pages();
            if let Some(s) = rank::read_sample(&proc, 42) {
                let _ = rank::classify(s, &domain, &|_| None);
            }
            let _ = rank::rank(&proc, &domain, &|c| Some(c.to_string()));
        }
    });
}

/// podman 4.3's own BoltDB state (Debian 12), with container `lab1` labelled
/// `com.docker.compose.project=shop`, `com.docker.compose.service=web`.
const PODMAN_DB: &[u8] = include_bytes!("../../../oomwatch/tests/fixtures/podman/bolt_state.db");
const PODMAN_LAB1: &str = "d657790fed6e5c8d718fca48ff0d01a0f6616a3e7d985a18102a15b65b14529d";

#[test]
fn podman_bolt_state_as_podman_wrote_it() {
    let labels = oomwatch::enrich::podman::labels(PODMAN_DB, PODMAN_LAB1).expect("labels");
    assert_eq!(labels["com.docker.compose.project"], "shop");
    assert_eq!(labels["com.docker.compose.service"], "web");
}

#[test]
fn podman_bolt_state_mutated() {
    let strategy = harness::mutated(vec![PODMAN_DB.to_vec()], b"\x00\x01\x02\x04\xff{}\"", 16);
    check("podman_bolt_state", 1, strategy, |bytes| {
        bounded("podman::labels", bytes.0.len(), 2, || {
            let _ = oomwatch::enrich::podman::labels(&bytes.0, PODMAN_LAB1);
        });
    });
}

#[test]
fn podman_container_list_mutated() {
    let list = format!(
        r#"[{{"id":"{CID}","names":["web"],"image":"0b88dc99","metadata":"{{\"image-name\":\"localhost/web:1\",\"name\":\"web\"}}"}}]"#
    );
    let strategy = prop_oneof![
        3 => harness::mutated(vec![list.into_bytes()], JSON_ALPHABET, 8),
        1 => harness::soup(JSON_TOKENS, 60),
    ];
    check("podman_container_list", 1, strategy, |bytes| {
        let parsed = bounded("podman::parse", bytes.0.len(), 64, || {
            oomwatch::enrich::podman::parse(&bytes.0)
        });
        for c in parsed.into_iter().flatten() {
            assert!(c.name.is_none_or(|n| !n.is_empty()));
        }
    });
}
