//! `oomwatch top` (being written).

/// Options of `oomwatch top`.
#[derive(Clone, Debug, clap::Args)]
pub struct TopArgs {}

/// Runs `oomwatch top`; prints a one-line error and returns failure on bad input.
pub fn main(_args: TopArgs) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
