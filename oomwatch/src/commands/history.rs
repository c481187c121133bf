//! `oomwatch history` (being written).

/// Options of `oomwatch history`.
#[derive(Clone, Debug, clap::Args)]
pub struct HistoryArgs {}

/// Runs `oomwatch history`.
pub fn main(_args: HistoryArgs) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
