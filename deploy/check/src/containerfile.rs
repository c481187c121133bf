//! Checks of deploy/Containerfile against the repository: stages, the build recipe of
//! xtask/src/setup.rs, xtask subcommands, the agent's binary and its runtime libraries.

use std::{collections::BTreeSet, fs, path::Path};

use super::{
    facts::{fail, ok, verdict, Check},
    path_str,
    sources::{agent_binary_names, rust_const_strings, xtask_subcommands},
    DISTROLESS_CC_LIBS,
};
use oomwatch_testkit::command as util;

/// Instructions of a Containerfile: (KEYWORD, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments and blank lines, also inside a continued instruction.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The sources the Containerfile check compares against.
struct RepoFacts {
    containerfile: String,
    ignore_file: Option<String>,
    setup_rs: String,
    main_rs: String,
    agent_cargo_toml: String,
    /// `ldd` of the release binary, if it has been built.
    ldd: Option<String>,
}

pub(super) fn containerfile_checks(root: &Path, target: &Path) -> Vec<Check> {
    let read = |p: &str| fs::read_to_string(root.join(p));
    let (containerfile, setup_rs, main_rs, agent_cargo_toml) = match (
        read("deploy/Containerfile"),
        read("xtask/src/setup.rs"),
        read("xtask/src/main.rs"),
        read("oomwatch/Cargo.toml"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (a, b, c, d) => {
            let errors: Vec<String> = [a, b, c, d]
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string()))
                .collect();
            return vec![fail(
                "files",
                format!(
                    "cannot read deploy/Containerfile, xtask/src/setup.rs, xtask/src/main.rs or \
                     oomwatch/Cargo.toml: {}",
                    errors.join("; ")
                ),
            )];
        }
    };
    let binary = target.join("release/oomwatch");
    let ldd = binary
        .is_file()
        .then(|| util::probe("ldd", &[&path_str(&binary)]))
        .flatten()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let repo = RepoFacts {
        containerfile,
        ignore_file: read("deploy/Containerfile.dockerignore").ok(),
        setup_rs,
        main_rs,
        agent_cargo_toml,
        ldd,
    };
    check_containerfile(&repo)
}

/// The Containerfile, parsed once for every check.
struct Parsed<'a> {
    repo: &'a RepoFacts,
    ins: Vec<(String, String)>,
    /// (image, alias) of each FROM.
    stages: Vec<(String, Option<String>)>,
    /// Every RUN's arguments, one per line.
    runs: String,
}

impl<'a> Parsed<'a> {
    fn new(repo: &'a RepoFacts) -> Self {
        let ins = instructions(&repo.containerfile);
        let stages = ins
            .iter()
            .filter(|(k, _)| k == "FROM")
            .map(|(_, a)| stage(a))
            .collect();
        let runs = ins
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, a)| a.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        Parsed {
            repo,
            ins,
            stages,
            runs,
        }
    }

    fn runtime(&self) -> &str {
        self.stages.last().map_or("", |(image, _)| image.as_str())
    }

    fn distroless(&self) -> bool {
        self.runtime().contains("gcr.io/distroless/cc-debian12")
    }
}

/// (image, alias) of a FROM's arguments.
fn stage(args: &str) -> (String, Option<String>) {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let alias = match words.as_slice() {
        [_, as_, alias] if as_.eq_ignore_ascii_case("as") => Some(alias.to_string()),
        _ => None,
    };
    (words.first().unwrap_or(&"").to_string(), alias)
}

fn check_containerfile(repo: &RepoFacts) -> Vec<Check> {
    let p = Parsed::new(repo);
    [
        check_stages,
        check_builder,
        check_subcommands,
        check_binary,
        check_libraries,
    ]
    .iter()
    .map(|check| check(&p))
    .collect()
}

fn check_stages(p: &Parsed) -> Check {
    let (stages, runtime) = (&p.stages, p.runtime());
    let mut problems = Vec::new();
    if stages.len() < 2 {
        problems.push(format!(
            "{} FROM stage(s); fix: a builder stage and a minimal runtime stage",
            stages.len()
        ));
    }
    if !(p.distroless() || runtime.contains("debian:bookworm-slim")) {
        problems.push(format!(
            "runtime stage is {runtime:?}; fix: FROM gcr.io/distroless/cc-debian12 (glibc and \
             libgcc, like the builder's Debian 12) or debian:bookworm-slim"
        ));
    }
    if !stages
        .first()
        .is_some_and(|(image, _)| image.contains("debian:bookworm"))
    {
        problems.push(
            "the builder is not Debian 12 (debian:bookworm), whose glibc the runtime stage must \
             match and whose rustc-web/llvm-22 packages the build uses; fix: FROM \
             docker.io/library/debian:bookworm AS builder"
                .to_string(),
        );
    }
    verdict(
        "stages",
        problems,
        stages
            .iter()
            .map(|(i, a)| a.as_ref().map_or(i.clone(), |a| format!("{i} AS {a}")))
            .collect::<Vec<_>>()
            .join(" -> "),
    )
}

/// The first string of const `name` in xtask/src/setup.rs, or "".
fn setup_const(p: &Parsed, name: &str) -> String {
    rust_const_strings(&p.repo.setup_rs, name)
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default()
}

/// The build recipe = xtask/src/setup.rs: packages, bpf-linker's version and LLVM.
fn check_builder(p: &Parsed) -> Check {
    let runs = &p.runs;
    let words: BTreeSet<&str> = runs
        .split(|c: char| c.is_whitespace() || c == '&' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let mut problems = Vec::new();
    match rust_const_strings(&p.repo.setup_rs, "BUILD_PACKAGES") {
        Some(pkgs) if !pkgs.is_empty() => problems.extend(
            pkgs.iter()
                .filter(|p| !words.contains(p.as_str()))
                .map(|p| {
                    format!(
                        "the builder does not install {p} (BUILD_PACKAGES in \
                         xtask/src/setup.rs); fix: add it to the apt-get install line"
                    )
                }),
        ),
        _ => problems.push(
            "cannot find BUILD_PACKAGES in xtask/src/setup.rs; fix: update \
             rust_const_strings' caller in deploy/check/src/containerfile.rs"
                .to_string(),
        ),
    }
    let version = setup_const(p, "BPF_LINKER_VERSION");
    if version.is_empty() || !runs.contains(&format!("bpf-linker@{version}")) {
        problems.push(format!(
            "the builder does not install bpf-linker@{version} (BPF_LINKER_VERSION in \
             xtask/src/setup.rs); fix: cargo install bpf-linker@{version} in the Containerfile"
        ));
    }
    let llvm_prefix = setup_const(p, "LLVM_PREFIX");
    let llvm = llvm_prefix.rsplit('/').next().unwrap_or("");
    if llvm.is_empty()
        || !runs.contains(&format!("LLVM_PREFIX={llvm_prefix}"))
        || !runs.contains(&format!("--features {llvm}"))
    {
        problems.push(format!(
            "bpf-linker is not built like xtask/src/setup.rs does (LLVM_PREFIX={llvm_prefix}, \
             --features {llvm}); fix: the same in the Containerfile"
        ));
    }
    verdict(
        "builder matches xtask/src/setup.rs",
        problems,
        format!("bpf-linker {version}, {llvm}"),
    )
}

fn check_subcommands(p: &Parsed) -> Check {
    let subcommands = xtask_subcommands(&p.repo.main_rs);
    let used: Vec<&str> = p
        .runs
        .split("cargo xtask ")
        .skip(1)
        .map(|w| w.split_whitespace().next().unwrap_or(""))
        .collect();
    let mut problems: Vec<String> = used
        .iter()
        .filter(|sub| !subcommands.iter().any(|s| s == *sub))
        .map(|sub| {
            format!(
                "`cargo xtask {sub}` is not a subcommand of xtask (it has: {}); fix: call one \
                 that builds the release binary",
                subcommands.join(", ")
            )
        })
        .collect();
    if used.is_empty() {
        problems.push(
            "the Containerfile never runs `cargo xtask ...`; fix: build with `cargo xtask build` \
             (eBPF object, then the agent)"
                .to_string(),
        );
    }
    verdict(
        "xtask subcommands exist",
        problems,
        format!("cargo xtask {}", used.join(", ")),
    )
}

/// The binary: built, copied out of a stage, started, and the build context without target.
fn check_binary(p: &Parsed) -> Check {
    let names = agent_binary_names(&p.repo.agent_cargo_toml);
    let mut problems = Vec::new();
    let release_path = names.first().map(|n| format!("target/release/{n}"));
    if !release_path
        .as_ref()
        .is_some_and(|r| p.runs.contains(r.as_str()))
    {
        problems.push(format!(
            "the builder does not take {} (the agent's binary, per oomwatch/Cargo.toml); fix: \
             copy that file out of the build",
            release_path.as_deref().unwrap_or("target/release/<binary>")
        ));
    }
    let destination = check_copies(p, &mut problems);
    let entrypoint = p
        .ins
        .iter()
        .rfind(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| {
            a.trim_start_matches('[')
                .split('"')
                .nth(1)
                .unwrap_or("")
                .to_string()
        });
    match (&destination, &entrypoint) {
        (Some(dst), Some(ep)) if dst == ep => {}
        (dst, ep) => problems.push(format!(
            "ENTRYPOINT {ep:?} is not the binary copied from the builder ({dst:?}); fix: \
             ENTRYPOINT [\"<the COPY destination>\"]"
        )),
    }
    if let Some(ep) = &entrypoint {
        let base = ep.rsplit('/').next().unwrap_or("");
        if !names.iter().any(|n| n == base) {
            problems.push(format!(
                "ENTRYPOINT {ep} is not named like the agent's binary ({}); fix: keep the name",
                names.join(", ")
            ));
        }
    }
    if !p.repo.ignore_file.as_deref().is_some_and(|text| {
        text.lines()
            .any(|l| l.trim().trim_end_matches('/') == "target")
    }) {
        problems.push(
            "deploy/Containerfile.dockerignore is missing or does not exclude target; fix: list \
             `target` and `oomwatch-ebpf/target` (gigabytes of build output otherwise go into \
             the build context)"
                .to_string(),
        );
    }
    verdict(
        "binary copied and started",
        problems,
        format!(
            "{} -> {}",
            release_path.unwrap_or_default(),
            destination.unwrap_or_default()
        ),
    )
}

/// Each `COPY --from=` names a stage; the last one's destination.
fn check_copies(p: &Parsed, problems: &mut Vec<String>) -> Option<String> {
    let aliases: Vec<&str> = p.stages.iter().filter_map(|(_, a)| a.as_deref()).collect();
    let mut destination = None;
    for (_, a) in p
        .ins
        .iter()
        .filter(|(k, a)| k == "COPY" && a.starts_with("--from="))
    {
        let c: Vec<&str> = a.split_whitespace().collect();
        let from = c[0].trim_start_matches("--from=");
        if !aliases.contains(&from) {
            problems.push(format!(
                "COPY --from={from} names no stage (stages: {}); fix: use the builder's alias",
                aliases.join(", ")
            ));
        }
        destination = c.last().map(|d| d.to_string());
    }
    destination
}

/// What the binary links against must exist in the runtime image.
fn check_libraries(p: &Parsed) -> Check {
    const NAME: &str = "runtime libraries";
    let ldd = match (&p.repo.ldd, p.distroless()) {
        (None, _) => {
            return ok(
                NAME,
                "skipped: target/release/oomwatch not built (`cargo xtask build`)",
            )
        }
        (Some(_), false) => return ok(NAME, "skipped: not a distroless runtime"),
        (Some(ldd), true) => ldd,
    };
    let libs: Vec<&str> = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|l| l.rsplit('/').next().unwrap_or(l))
        .collect();
    let missing: Vec<&str> = libs
        .iter()
        .copied()
        .filter(|l| !DISTROLESS_CC_LIBS.contains(l))
        .collect();
    if missing.is_empty() {
        return ok(NAME, libs.join(" "));
    }
    fail(
        NAME,
        format!(
            "target/release/oomwatch links {}, which {} lacks; fix: link it statically, or use \
             debian:bookworm-slim plus the package that has it",
            missing.join(", "),
            p.runtime()
        ),
    )
}

#[cfg(test)]
mod tests {
    //! Tests of the Containerfile checks on the repository's own Containerfile.

    use super::*;
    use crate::test_support::{assert_one_failure, failures};

    /// The repository's own Containerfile and the files it is checked against.
    fn repo_facts() -> RepoFacts {
        let root = crate::repo_root();
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

    /// Every verdict, worded exactly, for the repository and for each drift.
    #[test]
    fn containerfile_verdicts_are_pinned() {
        let mut out = String::new();
        let mut show = |what: &str, r: &RepoFacts| {
            out.push_str(&format!("== {what}\n"));
            for c in check_containerfile(r) {
                out.push_str(&format!("{}: {:?}\n", c.name, c.result));
            }
        };
        show("repository", &repo_facts());
        for (from, to) in [
            ("bpf-linker@0.13.0", "bpf-linker@0.12.0"),
            ("llvm-22-dev", "llvm-19-dev"),
            ("RUN cargo xtask build", "RUN cargo xtask build-all"),
            ("RUN cargo xtask build", "RUN true"),
            (
                "ENTRYPOINT [\"/usr/local/bin/oomwatch\"]",
                "ENTRYPOINT [\"/agent\"]",
            ),
            ("FROM gcr.io/distroless/cc-debian12", "FROM alpine:3"),
            (
                "FROM gcr.io/distroless/cc-debian12",
                "FROM debian:bookworm-slim",
            ),
            ("target/release/oomwatch", "target/release/agent"),
            ("--from=builder", "--from=nothing"),
            ("BUILD_PACKAGES", "BUILD_PACKAGEZ"),
            ("LLVM_PREFIX=", "LLVM_PREFIZ="),
            (" AS builder", ""),
        ] {
            let mut r = repo_facts();
            r.containerfile = r.containerfile.replacen(from, to, 1);
            r.setup_rs = r.setup_rs.replacen(from, to, 1);
            show(&format!("{from} -> {to}"), &r);
        }
        let mut r = repo_facts();
        r.containerfile = "FROM scratch\n".into();
        r.ignore_file = None;
        r.ldd = None;
        show("one stage, nothing else", &r);
        let mut r = repo_facts();
        r.ldd = Some("\tlibssl.so.3 => /lib/libssl.so.3 (0x1)\n".into());
        show("libssl", &r);
        oomwatch_testkit::command::assert_pinned(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pinned"),
            "containerfile-verdicts.txt",
            &out,
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
}
