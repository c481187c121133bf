//! Golden test for the `/metrics` exposition: a fixed scenario rendered to text, compared
//! with `tests/golden/metrics.prom` (regenerate with `UPDATE_GOLDEN=1`) and linted with
//! `promtool check metrics`, which must report nothing.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oomwatch::kill_outcome::sigkill;
use oomwatch::record::OomDomain;
use oomwatch::record::{ContainerInit, ContainerKill, OomEvent, ProbeId, Source, Workload};
use oomwatch::sink::metrics::EbpfCounters;
use oomwatch::source::probe::silence::Silence;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics.prom")
}

fn event(pid: i32, comm: &str, cgroup: &str, time: SystemTime) -> OomEvent {
    let mut sources = BTreeMap::new();
    sources.insert("comm", Source::MarkVictimTracepoint);
    sources.insert("cgroup", Source::Cgroupfs);
    OomEvent {
        tgid: Some(pid),
        comm: Some(comm.into()),
        uid: Some(1000),
        total_vm: Some(1 << 30),
        anon_rss: Some(512 << 20),
        file_rss: Some(0),
        shmem_rss: Some(0),
        pgtables: Some(4096),
        oom_score_adj: Some(0),
        cgroup: Some(cgroup.into()),
        cgroup_id: Some(1234),
        oom_id: Some(u64::try_from(pid).unwrap()),
        oom: oomwatch::record::OomContext {
            constraint: Some("CONSTRAINT_MEMCG".into()),
            badness: Some(i64::from(pid) * 100),
            ..Default::default()
        },
        sources,
        workload: Workload {
            oom_domain: Some(OomDomain::System),
            systemd_unit: Some("app.service".into()),
            ..Workload::default()
        },
        ..OomEvent::new(pid, 1_000_000, time, "node-1".into())
    }
}

/// Two kills, one probe attached and one not, eBPF counters from a fake reader.
fn scenario() -> String {
    let m = common::metrics_sink(100, "0123456789ab");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_763_760_000);
    // A Kubernetes victim: keyed by namespace/pod/container, its cgroup label left empty.
    let mut pod = event(
        4242,
        "python3",
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100.scope",
        t0,
    );
    pod.workload.namespace = Some("shop".into());
    pod.workload.pod = Some("cart-7d9f8b6c5-x2x4q".into());
    pod.workload.container = Some("worker".into());
    pod.workload.oom_domain = Some(OomDomain::Container);
    // A worker killed while the container's init lives: a partial kill.
    pod.container_kill = ContainerKill {
        partial_kill: Some(true),
        container_init: Some(ContainerInit {
            pid: 4200,
            comm: Some("sh".into()),
        }),
        oom_group: None,
        at_kill: None,
    };
    m.observe(&pod);
    m.observe(&event(
        4343,
        "java",
        "/system.slice/app.service",
        t0 + Duration::from_millis(2_500),
    ));
    m.set_probe_attached(ProbeId::MarkVictimTp, true);
    m.set_probe_attached(ProbeId::MarkVictimBtf, false);
    // The tracepoint attached but gave nothing for one kill (on a kernel where it fires
    // nowhere useful): counted, the other rows listed at 0.
    let silence = Silence::new();
    silence.observe(ProbeId::MarkVictimTp, "a record", "the kill line");
    m.set_probe_silence(silence);
    m.set_ebpf_counters_reader(Box::new(|| EbpfCounters {
        ringbuf_drops: 3,
        read_errors: 1,
    }));
    m.add_collector(sigkill::collector(sigkill_stats(), None));
    m.render()
}

/// SIGKILL attribution: a runtime's kill of a pod's container (which ended it), a shell's kill
/// of a plain Docker container's worker.
fn sigkill_stats() -> Arc<Mutex<sigkill::SigkillStats>> {
    let party =
        |ns: Option<&str>, pod: Option<&str>, c: Option<&str>, name: Option<&str>| sigkill::Party {
            pid: 10,
            namespace: ns.map(Into::into),
            pod: pod.map(Into::into),
            container: c.map(Into::into),
            container_name: name.map(Into::into),
            ..sigkill::Party::default()
        };
    let line = |target: sigkill::Party, kind| sigkill::SigkillLine {
        kind: "sigkill",
        time: String::new(),
        ktime_ns: 1,
        host: "node-1".into(),
        sigkill_id: 0,
        target,
        container_init: Some(true),
        sender: sigkill::SenderParty::default(),
        sender_kind: kind,
        oom_id: None,
        si_code: Some(0),
        delivered: Some(true),
        sources: BTreeMap::new(),
    };
    let mut s = sigkill::SigkillStats::new(100);
    let pod = line(
        party(
            Some("shop"),
            Some("cart-7d9f8b6c5-x2x4q"),
            Some("worker"),
            None,
        ),
        sigkill::SenderKind::Runtime,
    );
    s.observe(&pod);
    s.observe(&line(
        party(None, None, None, Some("web-1")),
        sigkill::SenderKind::Other,
    ));
    s.container_ended(&sigkill::ContainerKilledLine {
        kind: "container_killed",
        time: String::new(),
        ktime_ns: 2,
        host: "node-1".into(),
        init: pod.target.clone(),
        sigkill_id: 0,
        sender_kind: sigkill::SenderKind::Runtime,
        sender: sigkill::SenderParty::default(),
        oom_id: None,
        kill_to_exit_ns: Some(1),
        partial_oom_kills_before: 1,
        last_partial_oom_id: Some(4242),
        cgroup_oom_kills: Some(1),
        runtime_reason: "OOMKilled",
        exit_code: 137,
        explanation: String::new(),
    });
    Arc::new(Mutex::new(s))
}

#[test]
fn metrics_text_matches_golden_file() {
    let got = scenario();
    common::check_golden(&golden_path(), &got, "metrics_golden");
}

#[test]
fn promtool_check_metrics_reports_nothing() {
    // Lint what is actually rendered (identical to the golden file when that test passes).
    let text = scenario();
    if let Some(report) = common::promtool_report(&text) {
        panic!("promtool check metrics: {report}\n--- input ---\n{text}");
    }
}
