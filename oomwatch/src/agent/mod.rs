//! The running agent, in one screen:
//!
//! ```text
//! startup::start     privileges → port → probes → metrics → correlator → kernel log → server
//!                    → rings → replay of kills missed while down → drop capabilities
//! Agent::run         ring buffers → correlate → enrich/explain → sinks; kernel log; deadlines
//! Agent::finish      flush what waits, save the kernel-log position, stop the server
//! ```
//!
//! [`sink`] writes each finished record out (JSON, metrics, recent ring, position).
pub mod event_loop;
pub mod sink;
pub mod startup;

use std::io;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::server;
use crate::source::kmsg::KmsgError;
use crate::source::probe::loader;
use crate::sys::caps;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Probe(#[from] loader::ProbeError),
    #[error("cannot install the {0} signal handler: {1}")]
    Signal(&'static str, io::Error),
    #[error("ring buffer: {0}")]
    RingBuf(io::Error),
    #[error("writing events to stdout failed: {0}")]
    Stdout(io::Error),
    #[error("--host-root {0:?} has no proc/ directory: give the directory where the host's / is mounted (e.g. /host with /proc at /host/proc)")]
    HostRoot(std::path::PathBuf),
    #[error(transparent)]
    State(#[from] crate::recovery::position::StateError),
    #[error("kernel log: {0}")]
    Kmsg(#[from] KmsgError),
    #[error("invalid --log-level {0:?}: {1}")]
    LogLevel(String, String),
}

/// Sets up the agent's own log on stderr. aya-log records from the eBPF side arrive through the
/// `log` crate and are bridged into `tracing` (by `try_init`'s tracing-log feature).
pub fn init_logging(cfg: &Config) -> Result<(), RunError> {
    let level_error =
        |e: &dyn std::fmt::Display| RunError::LogLevel(cfg.log_level.clone(), e.to_string());
    let filter = EnvFilter::try_new(&cfg.log_level).map_err(|e| level_error(&e))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match cfg.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| level_error(&e))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), RunError> {
    let mut agent = startup::start(&cfg).await?;
    let result = agent.run().await;
    agent.finish(result).await
}
