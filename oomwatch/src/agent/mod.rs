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
mod error;
pub mod event_loop;
pub mod sink;
pub mod startup;

pub use error::RunError;

use std::io::{self, IsTerminal};

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};
use crate::sys::steer::LoopSteer;

/// Sets up the agent's own log on stderr. aya-log records from the eBPF side arrive through the
/// `log` crate and are bridged into `tracing` (by `try_init`'s tracing-log feature).
pub fn init_logging(cfg: &Config) -> Result<(), RunError> {
    let level_error =
        |e: &dyn std::fmt::Display| RunError::LogLevel(cfg.log_level.clone(), e.to_string());
    let filter = EnvFilter::try_new(&cfg.log_level).map_err(|e| level_error(&e))?;
    // Colour codes only for a terminal: a file, a pipe or a container runtime's log gets text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    match cfg.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| level_error(&e))
}

/// Runs the agent until SIGINT or SIGTERM.
/// `steer`: the event loop's watchers (`sys::steer`), when this thread has more than one CPU.
pub async fn run(cfg: Config, steer: Option<LoopSteer>) -> Result<(), RunError> {
    let mut agent = startup::start(&cfg, steer).await?;
    let result = agent.run().await;
    agent.finish(result).await
}
