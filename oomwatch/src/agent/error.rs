//! Why the agent stopped.
use std::io;

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
    #[error("cannot start the HTTP server's thread: {0}")]
    ServerThread(io::Error),
    #[error(transparent)]
    WebConfig(#[from] server::WebConfigError),
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
    #[error("could not drop capabilities after start-up: {0}; refusing to run privileged (--allow-cap-drop-failure runs anyway)")]
    DropPrivileges(io::Error),
    #[error("invalid --log-level {0:?}: {1}")]
    LogLevel(String, String),
}
