//! oomwatch: every Linux OOM kill, one exact record per victim.
//!
//! The modules are the stages of one pipeline; data flows down this table, and a module imports
//! only modules of its own row or of rows above it (see `docs/architecture.md`).
//!
//! | stage | module | holds |
//! |---|---|---|
//! | system | [`sys`] | capabilities, the memory cgroup tree, `/proc`, clocks, text helpers |
//! | record | [`record`] | the OOM record (`OomEvent`) and its parts, `Source` |
//! | sources | [`source`] | probe table and ring buffers, kernel log and OOM report, GFP names, BTF, tracefs |
//! | model | [`explain`] | the kernel's `oom_badness()` (once), candidates, ranking, the explanation sentence |
//! | correlation | [`correlate`] | one record per victim: invocations, marks, kernel-log context, scored tasks |
//! | enrichment | [`enrich`] | cgroup → container/pod/QoS/runtime, bundle names, OOM domain, domain memory |
//! | sinks | [`sink`] | JSON lines, metrics (bounded label sets), recent ring, missed kills |
//! | beside | [`host`], [`kill_outcome`], [`recovery`] | host collectors; what followed each kill; no kill lost across restarts |
//! | server | [`server`] | HTTP: `/`, `/events`, `/metrics`, `/healthz` |
//! | agent | [`config`], [`agent`] | validated settings; start-up steps and the event loop |
//! | CLI | [`commands`] | `run`, `top`, `check`, `history`: parse and call |
pub mod sys;

pub mod record;

pub mod source;

pub mod explain;

pub mod correlate;

pub mod enrich;

pub mod sink;

pub mod host;
pub mod kill_outcome;
pub mod recovery;

pub mod server;

pub mod config;

pub mod agent;

pub mod commands;
