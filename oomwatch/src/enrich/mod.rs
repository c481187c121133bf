//! Enrichment: who a victim is beyond its pid. Cgroup path → container/pod/QoS
//! ([`identity`]), runtime bundle files → Kubernetes names ([`bundle`]), and which memory limit
//! the OOM hit ([`domain`]).
pub mod bundle;
pub mod domain;
pub mod identity;
