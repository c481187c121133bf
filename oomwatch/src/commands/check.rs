//! `oomwatch check` (being written).

/// Options of `oomwatch check`.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {}

/// Runs `oomwatch check`.
pub fn main(_args: CheckArgs) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
