//! Tests of the Containerfile checks on the repository's own Containerfile.

use super::*;
use crate::deploy::test_support::{assert_one_failure, failures};

/// The repository's own Containerfile and the files it is checked against.
fn repo_facts() -> RepoFacts {
    let root = util::repo_root();
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    RepoFacts {
        containerfile: read("deploy/Containerfile"),
        ignore_file: Some(read("deploy/Containerfile.dockerignore")),
        setup_rs: read("xtask/src/setup.rs"),
        main_rs: read("xtask/src/main.rs"),
        agent_cargo_toml: read("oomwatch/Cargo.toml"),
        ldd: Some(
            "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n"
                .to_string(),
        ),
    }
}

#[test]
fn the_containerfile_matches_the_repository() {
    assert_eq!(
        failures(&check_containerfile(&repo_facts())),
        Vec::<String>::new()
    );
}

#[test]
fn containerfile_drift_is_reported() {
    let with = |from: &str, to: &str| {
        let mut r = repo_facts();
        assert!(
            r.containerfile.contains(from),
            "{from:?} not in the Containerfile"
        );
        r.containerfile = r.containerfile.replacen(from, to, 1);
        check_containerfile(&r)
    };
    assert_one_failure(
        &with("bpf-linker@0.13.0", "bpf-linker@0.12.0"),
        &["bpf-linker@0.13.0"],
    );
    assert_one_failure(&with("llvm-22-dev", "llvm-19-dev"), &["llvm-22-dev"]);
    assert_one_failure(
        &with("RUN cargo xtask build", "RUN cargo xtask build-all"),
        &["`cargo xtask build-all` is not a subcommand"],
    );
    assert_one_failure(
        &with(
            "ENTRYPOINT [\"/usr/local/bin/oomwatch\"]",
            "ENTRYPOINT [\"/oomwatch\"]",
        ),
        &["ENTRYPOINT"],
    );
    assert_one_failure(
        &with("FROM gcr.io/distroless/cc-debian12", "FROM alpine:3"),
        &["runtime stage is \"alpine:3\""],
    );
    assert_one_failure(
        &with("target/release/oomwatch", "target/release/agent"),
        &["target/release/oomwatch"],
    );

    let mut no_ignore = repo_facts();
    no_ignore.ignore_file = None;
    assert_one_failure(&check_containerfile(&no_ignore), &["dockerignore"]);

    let mut openssl = repo_facts();
    openssl.ldd = Some(
        "\tlibssl.so.3 => /lib/libssl.so.3 (0x1)\n\tlibc.so.6 => /lib/libc.so.6 (0x2)\n".into(),
    );
    assert_one_failure(&check_containerfile(&openssl), &["libssl.so.3"]);

    let mut unbuilt = repo_facts();
    unbuilt.ldd = None;
    assert_eq!(
        failures(&check_containerfile(&unbuilt)),
        Vec::<String>::new()
    );
}

#[test]
fn containerfile_instructions_join_continuations_and_skip_comments() {
    let text =
        "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN one \\\n  # a comment\n\n  two\ncopy x y\n";
    assert_eq!(
        instructions(text),
        vec![
            ("FROM".to_string(), "a AS b".to_string()),
            ("RUN".to_string(), "one  two".to_string()),
            ("COPY".to_string(), "x y".to_string()),
        ]
    );
}
