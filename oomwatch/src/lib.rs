//! oomwatch: every Linux OOM kill, one exact record per victim.
//!
//! Data flows one way: kernel → [`probe`] (eBPF programs, ring buffer) → [`correlate`] (one
//! record per victim) → [`event`] → sinks ([`sink::json`], [`sink::metrics`]) → [`server`].
pub mod candidates;
pub mod caps;
pub mod cgroup;
pub mod commands;
pub mod correlate;
pub mod enrich;
pub mod event;
pub mod gfp;
pub mod gfp_table;
pub mod host;
pub mod invocation;
pub mod kmsg;
pub mod kmsg_context;
pub mod lifecycle;
pub mod marks;
pub mod probe;
pub mod procfs;
pub mod recovery;
pub mod replay;
pub mod scored;
pub mod server;
pub mod sink;
pub mod state;
