//! `cargo xtask bench [--smoke]`: the harness around the `oomwatch-bench` crate (the agent
//! under an OOM storm, idle, scraped under load, beside Debian's prometheus-node-exporter; see
//! its documentation): root checked, the agent built with its test knobs, `wrk` and
//! node_exporter installed with apt when missing, then the bench run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oomwatch_bench::Setup;

use crate::util;

pub fn bench(smoke: bool) -> Result<()> {
    if !may_run(smoke)? {
        return Ok(());
    }
    // OOMWATCH_BENCH_AGENT=PATH benchmarks that binary instead of building one.
    let binary = match std::env::var_os("OOMWATCH_BENCH_AGENT").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        // The label-set scrape bench uses the `--synthetic-label-sets` test knob.
        None => crate::build_with(smoke, &["test-knobs"]).context("[bench] build")?,
    };
    let mut notes = Vec::new();
    let (have_wrk, have_node_exporter) = install_tools(smoke, &mut notes)?;
    oomwatch_bench::bench(Setup {
        smoke,
        binary,
        out_dir: crate::target_dir().join("bench"),
        repo: util::repo_root(),
        have_wrk,
        have_node_exporter,
        notes,
    })
}

/// Whether to run: root is needed; without it the smoke run outside CI is skipped (with a
/// note), everything else fails.
fn may_run(smoke: bool) -> Result<bool> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if util::is_root() {
        return Ok(true);
    }
    if smoke && !ci {
        eprintln!(
            "[bench] note: not root, bench smoke skipped (it loads eBPF programs and \
             creates memory cgroups: run `sudo cargo xtask bench --smoke`)"
        );
        return Ok(false);
    }
    bail!("[bench] needs root (eBPF programs, memory cgroups): run it as root");
}

/// wrk (optional in --smoke) and node_exporter (installed by the full run): whether each is
/// there, with a note when not.
fn install_tools(smoke: bool, notes: &mut Vec<String>) -> Result<(bool, bool)> {
    let have_wrk = match util::ensure_packages("bench", &["wrk"]) {
        Ok(()) => true,
        Err(e) if smoke => {
            notes.push(format!("wrk could not be installed ({e:#}): wrk not run"));
            false
        }
        Err(e) => return Err(e.context("[bench] installing wrk")),
    };
    if !smoke {
        util::ensure_packages("bench", &["prometheus-node-exporter"])
            .context("[bench] installing prometheus-node-exporter")?;
    }
    let have_ne = std::path::Path::new(oomwatch_bench::NODE_EXPORTER).is_file();
    if !have_ne {
        notes.push("prometheus-node-exporter is not installed: not compared".into());
    }
    Ok((have_wrk, have_ne))
}
