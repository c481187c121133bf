//! `cargo xtask fuzz [--secs N]`: the property tests of `oomwatch/tests/fuzz.rs` (every parser
//! of outside input fed arbitrary and mutated-real input), optimised, each target running for
//! up to N seconds with a fresh random seed instead of the 256 fixed-seed cases of a plain
//! `cargo test`. A failure prints the minimal input and the seed (`OOMWATCH_FUZZ_SEED=…`
//! reproduces it).

use std::{process::Command, time::Instant};

use anyhow::{Context, Result};

use crate::util::{self, run};

pub fn fuzz(secs: u64) -> Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new(util::host_cargo());
    cmd.args(["test", "-p", "oomwatch", "--test", "fuzz", "--release"])
        .args(["--", "--show-output"])
        .env("OOMWATCH_FUZZ_SECS", secs.to_string())
        .env_remove("OOMWATCH_FUZZ_CASES")
        .env_remove("RUST_TEST_THREADS")
        .current_dir(util::repo_root());
    run("fuzz", &mut cmd).context("[fuzz] a fuzz target failed (its minimal input is above)")?;
    eprintln!(
        "[fuzz] every target passed ({secs}s bound each) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
