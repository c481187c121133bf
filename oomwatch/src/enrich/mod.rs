//! Enrichment: who a victim is beyond its pid. Cgroup path → container/pod/QoS
//! ([`identity`]), runtime bundle files → Kubernetes names ([`bundle`]), and which memory limit
//! the OOM hit ([`domain`]).
pub mod boltdb;
pub mod bundle;
pub mod container_kill;
pub mod domain;
pub mod domain_memory;
pub mod identity;
pub mod podman;
pub mod stack;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::record::DomainMemory;
use crate::record::{ContainerKill, OomEvent, Source, Workload};
use crate::sys::cgroup::MemoryHierarchy;
use crate::sys::procfs;
use bundle::{BundleConfig, BundleReader, BundleSource, Names};
use identity::Identity;

/// Fills an event's [`Workload`] and the Kubernetes fields of `victim` and `trigger`.
#[derive(Debug)]
pub struct Enricher {
    bundles: BundleReader,
    proc_root: PathBuf,
    hierarchy: Option<MemoryHierarchy>,
}

impl Enricher {
    /// Reads runtime bundles and `/proc` under `host_root` (`/` on the host, `/host` in a pod),
    /// and caches the names of every container present now.
    pub fn new(host_root: &Path) -> Self {
        Self::with_bundles(BundleConfig {
            host_root: host_root.to_path_buf(),
            ..BundleConfig::default()
        })
    }

    /// Like [`Enricher::new`], with the runtimes' state directories of `config` (all under its
    /// `host_root`).
    pub fn with_bundles(config: BundleConfig) -> Self {
        let host_root = config.host_root.clone();
        let mut bundles = BundleReader::new(config);
        let n = bundles.warm();
        tracing::debug!(containers = n, "runtime bundles read");
        Self {
            bundles,
            proc_root: host_root.join("proc"),
            hierarchy: None,
        }
    }

    /// Reads the limiting memory cgroup's files (`domain_memory`) in this hierarchy.
    pub fn with_hierarchy(mut self, hierarchy: Option<MemoryHierarchy>) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// Containers whose names are cached now.
    pub fn cached(&self) -> usize {
        self.bundles.cached()
    }

    /// Cache entries dropped to stay within the bound.
    pub fn evicted(&self) -> u64 {
        self.bundles.evicted()
    }

    /// The identity a cgroup path names (container, pod, runtime names); no OOM domain.
    pub fn workload_of(&mut self, cgroup: &str) -> Workload {
        let id = identity::parse(cgroup);
        let names = self.names(&id);
        let mut w = Workload::default();
        fill(&mut w, &id, names.as_deref());
        w
    }

    pub fn enrich(&mut self, ev: &mut OomEvent) {
        let victim = ev.cgroup.as_deref().map(identity::parse);
        let names = victim.as_ref().and_then(|id| self.names(id));
        let mut w = Workload::default();
        if let Some(id) = &victim {
            fill(&mut w, id, names.as_deref());
        }
        // The trigger's cgroup: the probe gives it; else it is the victim's when the victim
        // itself allocated (the usual memcg OOM), else /proc while the trigger is alive.
        if let Some(t) = ev.trigger.as_mut() {
            if t.cgroup.is_none() {
                if Some(t.tgid) == ev.tgid || t.pid == ev.pid {
                    t.cgroup.clone_from(&ev.cgroup);
                    t.cgroup_id = t.cgroup_id.or(ev.cgroup_id);
                } else {
                    t.cgroup = procfs::read(&self.proc_root, t.pid)
                        .cgroup
                        .or_else(|| procfs::kernel_thread_cgroup(&self.proc_root, t.pid));
                }
            }
        }
        w.oom_domain = domain::classify(
            ev.oom.constraint.as_deref(),
            ev.oom.oom_memcg.as_deref(),
            ev.cgroup.as_deref(),
        );
        let trigger_cgroup = ev.trigger.as_ref().and_then(|t| t.cgroup.clone());
        w.noisy_neighbour = domain::noisy_neighbour(
            w.oom_domain,
            ev.cgroup.as_deref(),
            trigger_cgroup.as_deref(),
        );
        if let (Some(t), Some(cg)) = (ev.trigger.as_mut(), trigger_cgroup.as_deref()) {
            let id = identity::parse(cg);
            let tn = self.names(&id);
            let mut tw = Workload::default();
            fill(&mut tw, &id, tn.as_deref());
            t.namespace = tw.namespace;
            t.pod = tw.pod;
            t.pod_uid = tw.pod_uid;
        }
        self.candidates(ev);
        ev.oom.explanation = crate::explain::sentence::explain(ev);
        // The domain as the kill left it; not for a kill recorded later from the log (the
        // files would describe now, not then).
        if !ev.replayed && ev.domain_memory.is_none() {
            ev.domain_memory = self.domain_memory(ev);
        }
        if !ev.replayed {
            self.container_kill(ev, w.container_id.is_some());
        }
        ev.victim.namespace = w.namespace.clone();
        ev.victim.pod = w.pod.clone();
        ev.victim.pod_uid = w.pod_uid.clone();
        ev.workload = w;
    }

    /// The candidates' cgroups (from `/proc` while they live; not for a replayed kill) and pods.
    fn candidates(&mut self, ev: &mut OomEvent) {
        let Some(mut list) = ev.oom.candidates.take() else {
            return;
        };
        for c in &mut list {
            if c.pid == ev.pid {
                c.cgroup.clone_from(&ev.cgroup);
            } else if !ev.replayed {
                c.cgroup = procfs::read(&self.proc_root, c.pid).cgroup;
            }
            if let Some(cg) = c.cgroup.as_deref() {
                let id = identity::parse(cg);
                let names = self.names(&id);
                let mut w = Workload::default();
                fill(&mut w, &id, names.as_deref());
                c.namespace = w.namespace;
                c.pod = w.pod;
            }
        }
        ev.oom.candidates = Some(list);
    }

    /// `partial_kill`, `container_init` and `oom_group` (see [`container_kill`]): from the pid
    /// namespace the kernel showed at the kill, else from the victim's cgroup as the kill left
    /// it; not for a kill recorded later from the log.
    fn container_kill(&self, ev: &mut OomEvent, in_container: bool) {
        let (Some(h), Some(cg)) = (self.hierarchy.as_ref(), ev.cgroup.as_deref()) else {
            return;
        };
        let domain = ev.oom.oom_memcg.as_deref();
        let oom_group = container_kill::oom_group(h, cg, domain);
        let victim = container_kill::Victim {
            tgid: ev.tgid.unwrap_or(ev.pid),
            comm: ev.comm.as_deref(),
            memcg_id: ev.cgroup_id,
        };
        let at_kill = ev.container_kill.at_kill.as_ref().filter(|_| in_container);
        let decided = at_kill.and_then(|ns| {
            container_kill::decide_at_kill(ev.oom.group_kill, oom_group, victim, ns)
        });
        let (k, source) = match decided {
            Some(k) => (k, Source::MarkVictimBtf),
            None if in_container => {
                let seen = container_kill::observe(h, &self.proc_root, cg, domain, victim.tgid);
                let k = container_kill::decide(true, ev.oom.group_kill, &seen);
                (k, Source::CgroupNspid)
            }
            // Outside containers only the group setting: no tasks to read.
            None => (
                ContainerKill {
                    oom_group,
                    ..ContainerKill::default()
                },
                Source::CgroupNspid,
            ),
        };
        if k.partial_kill.is_some() || k.container_init.is_some() {
            ev.sources.insert("partial_kill", source);
        }
        if k.oom_group.is_some() {
            ev.sources.insert("oom_group", Source::Cgroupfs);
        }
        ev.container_kill = ContainerKill {
            at_kill: ev.container_kill.at_kill.take(),
            ..k
        };
    }

    fn domain_memory(&self, ev: &OomEvent) -> Option<DomainMemory> {
        match (ev.oom.constraint.as_deref(), ev.oom.oom_memcg.as_deref()) {
            (Some("CONSTRAINT_NONE"), _) => domain_memory::meminfo(&self.proc_root),
            (Some("CONSTRAINT_MEMCG") | None, Some(cg)) => {
                domain_memory::memcg(self.hierarchy.as_ref()?, cg)
            }
            _ => None,
        }
    }

    /// Names of the identity's container from its runtime's bundle, if they agree with the
    /// pod the cgroup path names.
    fn names(&mut self, id: &Identity) -> Option<Arc<Names>> {
        let c = id.container.as_ref()?;
        let hint = c.runtime.map(BundleSource::of);
        let names = self.bundles.lookup(&c.id, hint)?;
        // Never a wrong name: a bundle that names another pod than the cgroup path is ignored.
        match (&id.pod, &names.pod_uid) {
            (Some(p), Some(uid)) if !uid.eq_ignore_ascii_case(&p.uid) => {
                tracing::debug!(container = %c.id, path_uid = %p.uid, bundle_uid = %uid,
                    "runtime bundle names another pod; names not used");
                None
            }
            _ => Some(names),
        }
    }
}

/// The workload fields an identity (and the names of its container) give.
fn fill(w: &mut Workload, id: &Identity, names: Option<&Names>) {
    if let Some(p) = &id.pod {
        w.pod_uid = Some(p.uid.clone());
        w.qos_class = Some(p.qos_class);
    }
    if let Some(c) = &id.container {
        w.container_id = Some(c.id.clone());
        w.container_runtime = c.runtime.or(names.map(|n| n.source.runtime()));
    }
    if let Some(n) = names {
        // Names from a bundle count only for a container in a pod the path identified, or a
        // plain container (Docker outside Kubernetes has no pod names anyway).
        w.namespace = n.namespace.clone();
        w.pod = n.pod.clone();
        if w.pod_uid.is_none() {
            w.pod_uid = n.pod_uid.clone();
        }
        if !n.sandbox {
            w.container = n.container.clone();
        }
        w.container_name = n.name.clone();
        w.container_image = n.image.clone();
        w.compose_project = n.compose_project.clone();
        w.compose_service = n.compose_service.clone();
    }
    w.systemd_unit = id.systemd_unit.clone();
    w.systemd_slice = id.systemd_slice.clone();
}
