//! `oomwatch check`: a preflight. Can the agent run here, what will it capture, and which host
//! settings are risky; one report (text or JSON) and an exit code.
//!
//! The sections, each gathered by its module:
//!
//! | Section       | Module           | Looks at                                                 |
//! |---------------|------------------|----------------------------------------------------------|
//! | Privileges    | [`privileges`]   | effective capabilities, `kernel.dmesg_restrict`          |
//! | Kernel        | [`kernel`]       | release, BTF, tracefs, kprobes, memory cgroup, /dev/kmsg |
//! | Capture       | [`capture`]      | the probe table, really loaded (then detached)           |
//! | Host settings | [`settings`]     | [`HostCollectors::snapshot`], `oom_score_adj=-1000` RSS  |
pub mod capture;
pub mod kernel;
pub mod privileges;
pub mod report;
pub mod settings;
#[cfg(test)]
mod tests;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::host::{HostCollectors, HostSnapshot, Warning};
use crate::record::ProbeId;
use capture::Capture;
use kernel::Kernel;
use privileges::Privileges;
use report::{Section, Status};
use settings::Protected;

/// Preflight: can the agent run here, what will it capture, which settings are risky.
///
/// One line per check (`ok`, `info`, `warn`, `FAIL`) under the headers Privileges, Kernel,
/// Capture and Host settings; every warn and FAIL line says why and how to fix it. The probes
/// are really loaded and attached as `oomwatch run` would, then detached at once.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = EXIT_STATUS)]
pub struct CheckArgs {
    /// Print one JSON object (the same items, plus the values behind them) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The host's root filesystem: `/proc` and `/sys/fs/cgroup` are read below it (`/host` in
    /// a pod that mounts the host's directories there).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub host_root: PathBuf,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, value_name = "PATH", default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Do not load the probes; check privileges, kernel and host settings only. What would stop
    /// the agent (missing privileges, no BTF nor tracefs) is then a warning, not a failure, so
    /// a host root can be checked without privileges.
    #[arg(long)]
    pub no_probes: bool,
    /// Check as `oomwatch run --disable-probe PROBE` would run (repeatable).
    #[arg(long = "disable-probe", value_name = "PROBE", value_enum)]
    pub disable_probe: Vec<ProbeId>,
}

/// The exit statuses, as `--help` shows them.
pub const EXIT_STATUS: &str = "Exit status:
  0  the agent can run here and nothing risky was found
  1  the agent cannot run here (missing privileges, no probe could attach, bad --host-root)
  2  usage error
  3  the agent can run here, with warnings (risky host settings, reduced capture)";

/// Everything found: the items and the values behind them.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// 0, 1 or 3; see [`EXIT_STATUS`].
    pub exit_code: u8,
    /// `ok`, `warnings` or `cannot_run`.
    pub verdict: &'static str,
    pub host_root: PathBuf,
    pub sections: Vec<Section>,
    pub privileges: Privileges,
    pub kernel: Kernel,
    pub capture: Capture,
    pub host: HostReport,
}

/// The host settings' values and the snapshot's warnings.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub values: HostSnapshot,
    /// Exactly [`HostSnapshot::warnings`].
    pub warnings: Vec<Warning>,
    /// Processes with `oom_score_adj=-1000`.
    pub protected: Protected,
}

/// Runs `oomwatch check`: prints the report and returns 0, 1 or 3 (see [`EXIT_STATUS`]).
pub fn main(args: CheckArgs) -> ExitCode {
    let report = gather(&args);
    let text = if args.json {
        // Serializing plain data cannot fail; an object keeps the output valid anyway.
        let mut s = serde_json::to_string_pretty(&report)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
        s.push('\n');
        s
    } else {
        report::render_text(&report.sections)
    };
    // Not println!: a closed stdout must not turn into a panic. The exit code is the report's.
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::from(report.exit_code)
}

/// Gathers every section.
pub fn gather(args: &CheckArgs) -> Report {
    let privileges = Privileges::gather();
    let kernel = Kernel::gather(&args.btf, &args.host_root);
    let host_root_error = host_root_error(&args.host_root);
    let capture = if args.no_probes {
        Capture::not_tried("--no-probes")
    } else if let Some(missing) = privileges.missing.as_deref() {
        Capture::not_tried(format!("missing {missing}"))
    } else if host_root_error.is_some() {
        Capture::not_tried("--host-root has no proc/ (the agent stops before loading)")
    } else {
        capture::load(
            args.btf.clone(),
            &args.disable_probe,
            kernel.kmsg_error.as_deref(),
        )
    };
    let collectors = HostCollectors::new(&args.host_root);
    let values = collectors.snapshot();
    let warnings = values.warnings();
    let protected = Protected::gather(&args.host_root, values.mem_total_bytes);
    let host = HostReport {
        values,
        warnings,
        protected,
    };
    let sections = sections(
        args,
        &privileges,
        &kernel,
        &capture,
        &host,
        host_root_error.as_deref(),
    );
    let exit_code = report::exit_code(&sections);
    Report {
        exit_code,
        verdict: report::verdict(exit_code),
        host_root: args.host_root.clone(),
        sections,
        privileges,
        kernel,
        capture,
        host,
    }
}

fn host_root_error(root: &Path) -> Option<String> {
    (!root.join("proc").is_dir()).then(|| {
        format!(
            "--host-root {} has no proc/ directory: the agent refuses to start",
            root.display()
        )
    })
}

/// Judges what was found: the items of every section.
pub fn sections(
    args: &CheckArgs,
    privileges: &Privileges,
    kernel: &Kernel,
    capture: &Capture,
    host: &HostReport,
    host_root_error: Option<&str>,
) -> Vec<Section> {
    // Under --no-probes nothing is tried, so nothing that would stop the agent is a failure.
    let fatal = if args.no_probes {
        Status::Warn
    } else {
        Status::Fail
    };
    let kmsg = if capture.kmsg_needed(&args.disable_probe) {
        Status::Warn
    } else {
        Status::Info
    };
    let judge = kernel::Judge {
        fatal,
        kmsg,
        may_mount: privileges.cap_sys_admin,
        probes_tried: capture.tried,
    };
    vec![
        Section {
            name: "privileges",
            title: "Privileges",
            items: privileges::items(privileges, fatal, kmsg),
        },
        Section {
            name: "kernel",
            title: "Kernel",
            items: kernel::items(kernel, &args.host_root, &judge),
        },
        Section {
            name: "capture",
            title: "Capture",
            items: capture::items(capture, fatal),
        },
        Section {
            name: "host",
            title: "Host settings",
            items: settings::items(
                &host.values,
                &host.warnings,
                &host.protected,
                host_root_error,
            ),
        },
    ]
}
