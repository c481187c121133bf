//! `cargo xtask fuzz [--secs N]`: the property tests of the `oomwatch-fuzz` package (every
//! parser of outside input fed arbitrary and mutated-real input), optimised, each target running
//! for up to N seconds with a fresh random seed instead of the 256 fixed-seed cases of a plain
//! `cargo test -p oomwatch-fuzz`. A failure prints the minimal input and the seed
//! (`OOMWATCH_FUZZ_SEED=…` reproduces it). The targets are a package of their own so that this
//! optimised build compiles the agent's library and the targets, not the agent's whole test
//! suite with its gRPC client.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result};

use crate::util::{self, run};

/// The package whose tests are the fuzz targets (`cargo xtask test` runs them here, not in its
/// `cargo test --workspace` step).
pub const PACKAGE: &str = "oomwatch-fuzz";

pub fn fuzz(secs: u64) -> Result<()> {
    let started = Instant::now();
    run("fuzz", &mut command(secs))
        .context("[fuzz] a fuzz target failed (its minimal input is above)")?;
    eprintln!(
        "[fuzz] every target passed ({secs}s bound each) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo test -p oomwatch-fuzz --release`, each target bounded to `secs` seconds.
pub fn command(secs: u64) -> Command {
    let mut cmd = Command::new(util::host_cargo());
    cmd.args(["test", "-p", PACKAGE, "--release"])
        .args(["--", "--show-output"])
        .env("OOMWATCH_FUZZ_SECS", secs.to_string())
        .env_remove("OOMWATCH_FUZZ_CASES")
        .env_remove("RUST_TEST_THREADS")
        .current_dir(util::repo_root());
    cmd
}
