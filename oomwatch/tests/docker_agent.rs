//! The agent as a container of Docker 20.10, run with the command `deploy/README.md` documents
//! (read from it, so the two cannot drift): Docker 20.10 knows no `BPF`/`PERFMON` capability
//! names, so the documented command grants `SYS_ADMIN` and `SYSLOG` after dropping all. The
//! agent must attach, record a real OOM kill in another container with its Docker name, image
//! and the kernel's OOM context (checked against `memory.oom_control` and `docker inspect`),
//! serve `/metrics`, and exit 0 on `docker stop`.
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::runtime::{kernel_oom_kills, output, tools_or_skip, Docker, RuntimeCli, IMAGE};
use common::{free_port, http_get, real_kernel_or_skip};
use serde_json::Value;

/// The image name the documented command uses.
const AGENT_IMAGE: &str = "ghcr.io/oomwatch/oomwatch:0.1.0";

/// The root file system `cargo xtask image` builds (the OCI archive's only layer).
fn rootfs() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image/rootfs");
    if dir.join("usr/local/bin/oomwatch").is_file() {
        return Some(dir);
    }
    oomwatch_testkit::skip(format!(
        "needs the agent's image root {} (cargo xtask image; cargo xtask test builds it)",
        dir.display()
    ));
    None
}

/// The `docker run` command of deploy/README.md's Docker section, as words.
fn documented_command() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/README.md");
    let text = fs::read_to_string(path).unwrap();
    let section = text
        .split("## Plain Docker, and Docker 20.10")
        .nth(1)
        .expect("deploy/README.md has the Docker section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its sh block");
    block
        .replace("\\\n", " ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The documented command with this test's paths: Docker's data root, the state directory,
/// the port.
fn localized(words: Vec<String>, data_root: &str, state: &Path, port: u16) -> Vec<String> {
    let mut out: Vec<String> = words
        .into_iter()
        .map(|w| {
            w.replace(
                "/var/lib/docker:/host/var/lib/docker",
                &format!("{data_root}:/host{data_root}"),
            )
            .replace(
                "/var/lib/oomwatch:/var/lib/oomwatch",
                &format!("{}:/var/lib/oomwatch", state.display()),
            )
        })
        .collect();
    if let Some(i) = out.iter().position(|w| w == "--docker-root") {
        out[i + 1] = data_root.to_owned();
    }
    out.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
    assert_eq!(&out[..2], ["docker", "run"], "{out:?}");
    out.drain(..1);
    out
}

fn logs(d: &Docker) -> String {
    let o = d.cli().args(["logs", "oomwatch"]).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for<T>(what: &str, d: &Docker, mut f: impl FnMut(&str) -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let l = logs(d);
        if let Some(v) = f(&l) {
            return v;
        }
        assert!(Instant::now() < end, "{what} not in the agent's log:\n{l}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_agent_runs_under_docker_20_10_as_documented() {
    if !real_kernel_or_skip() || !tools_or_skip(&["containerd", "dockerd", "docker", "runc"]) {
        return;
    }
    let Some(root) = rootfs() else { return };
    let d = Docker::start();
    let import = format!(
        "tar -C {} -c . | {} import --change 'ENTRYPOINT [\"/usr/local/bin/oomwatch\"]' \
         --change 'CMD [\"run\"]' - {AGENT_IMAGE}",
        root.display(),
        docker_cli(&d)
    );
    output(Command::new("sh").args(["-c", &import]));
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let data_root = d.data_root().to_str().unwrap().to_owned();
    let cmd = localized(documented_command(), &data_root, state.path(), port);
    d.run(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("probes ready", &d, |l| {
        l.contains("probes ready; waiting for OOM kills")
            .then_some(())
    });
    let victim = d.run(&[
        "run",
        "-d",
        "--name",
        "victim",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        IMAGE,
        "sh",
        "-c",
        "tail /dev/zero; exec sleep 600",
    ]);
    let ev = wait_for("the victim's event", &d, |l| {
        l.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|v| v["type"].is_null() && v["container_id"] == victim.as_str())
    });
    let cg = format!("/docker/{victim}");
    assert_eq!(kernel_oom_kills(&cg), 1, "the kernel's count in {cg}");
    let ins = d.inspect(&victim);
    for (k, want) in [
        ("container_name", "victim"),
        ("container_runtime", "docker"),
        ("constraint", "CONSTRAINT_MEMCG"),
        ("oom_domain", "container"),
    ] {
        assert_eq!(ev[k], want, "{k}: {ev}");
    }
    assert_eq!(ev["container_image"], ins["Config"]["Image"], "{ev}");
    assert_eq!(ev["oom_memcg"], cg.as_str(), "{ev}");
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains("oomwatch_oom_kills_total{"), "{metrics}");
    eprintln!(
        "TABLE | docker 20.10 (agent in a container, deploy/README.md) | kill in container victim | container_name={} image={} constraint={} domain={} | docker inspect Name=/victim; kernel oom_kill=1 | PASS",
        ev["container_name"], ev["container_image"], ev["constraint"], ev["oom_domain"]
    );
    d.run(&["stop", "oomwatch"]);
    let code = d.inspect("oomwatch")["State"]["ExitCode"].clone();
    assert_eq!(code, 0, "exit on docker stop:\n{}", logs(&d));
}

/// The harness's docker command line, for a shell pipe.
fn docker_cli(d: &Docker) -> String {
    let c = d.cli();
    let mut words = vec![c.get_program().to_string_lossy().into_owned()];
    words.extend(c.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
