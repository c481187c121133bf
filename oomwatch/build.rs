//! Embeds the eBPF object built by `cargo xtask build-ebpf` as `$OUT_DIR/oomwatch.bpf.o`.
//!
//! The object comes from `OOMWATCH_EBPF_OBJECT` if set, else from
//! `../oomwatch-ebpf/target/bpfel-unknown-none/release/oomwatch`. When it is missing an empty
//! file is embedded instead (the binary then refuses to start), so `cargo check`/`cargo clippy`
//! never need the eBPF toolchain.
//!
//! Also sets `OOMWATCH_GIT_COMMIT` (short hash, or "unknown").

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-env-changed=OOMWATCH_EBPF_OBJECT");
    let object = match env::var_os("OOMWATCH_EBPF_OBJECT").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            // The default object's kprobes read the build machine's register layout: an agent
            // for another architecture needs one built for it (`cargo xtask vm-test --kernel
            // arm64-6.1` shows how: AYA_BPF_TARGET_ARCH, then OOMWATCH_EBPF_OBJECT).
            let target = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
            let host = env::consts::ARCH;
            if !target.is_empty() && target != host {
                println!(
                    "cargo:warning=building for {target} on {host} with the default eBPF object \
                     (built for {host}): its kprobes would read the wrong registers; set \
                     OOMWATCH_EBPF_OBJECT to an object built with AYA_BPF_TARGET_ARCH={target}"
                );
            }
            manifest_dir.join("../oomwatch-ebpf/target/bpfel-unknown-none/release/oomwatch")
        }
    };
    // Watching a path that does not exist yet still reruns the script once it appears.
    println!("cargo:rerun-if-changed={}", object.display());

    let dest = out_dir.join("oomwatch.bpf.o");
    if object.is_file() {
        fs::copy(&object, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", object.display(), dest.display()));
    } else {
        fs::write(&dest, b"").unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
        println!(
            "cargo:warning=eBPF object not built; run 'cargo xtask build' (this binary will refuse to start)"
        );
    }

    println!(
        "cargo:rustc-env=OOMWATCH_GIT_COMMIT={}",
        git_commit(&manifest_dir)
    );
}

/// `git rev-parse --short HEAD`, or "unknown" without git or outside a repository.
fn git_commit(dir: &Path) -> String {
    // Rerun when HEAD moves: watch .git/HEAD and the branch ref it names (best effort).
    let git_dir = dir.join("../.git");
    let head = git_dir.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(reference) = fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            for p in [git_dir.join(reference), git_dir.join("packed-refs")] {
                if p.is_file() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
