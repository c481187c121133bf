//! Facts read from the repository's sources: Rust constants, xtask's subcommands, the agent's
//! binary name and the workspace version.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};

use super::STEP;

/// The quoted strings of `const NAME: ... = ...;` in `source`.
pub(super) fn rust_const_strings(source: &str, name: &str) -> Option<Vec<String>> {
    let start = source.find(&format!("const {name}:"))?;
    let end = start + source[start..].find(';')?;
    let body = &source[start..end];
    let body = &body[body.find('=')?..];
    Some(
        body.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// `Build` -> `build`, `VmTest` -> `vm-test`.
fn kebab(ident: &str) -> String {
    let mut s = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('-');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// xtask's subcommands: the variants of `enum Cmd` in xtask/src/main.rs.
pub(super) fn xtask_subcommands(main_rs: &str) -> Vec<String> {
    let Some(start) = main_rs.find("enum Cmd {") else {
        return Vec::new();
    };
    main_rs[start..]
        .lines()
        .skip(1)
        .take_while(|l| *l != "}")
        .filter_map(|l| {
            let rest = l.strip_prefix("    ")?;
            if rest.starts_with(' ') {
                return None;
            }
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            ident
                .starts_with(|c: char| c.is_ascii_uppercase())
                .then(|| kebab(&ident))
        })
        .collect()
}

/// The agent's binary name: `[[bin]] name` of oomwatch/Cargo.toml, else its package name.
pub(super) fn agent_binary_names(cargo_toml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut section = "";
    let mut package_name = None;
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if let Some(v) = line.strip_prefix("name").map(str::trim_start) {
            if let Some(v) = v.strip_prefix('=') {
                let v = v.trim().trim_matches('"').to_string();
                match section {
                    "[package]" => package_name = Some(v),
                    "[[bin]]" => names.push(v),
                    _ => {}
                }
            }
        }
    }
    if names.is_empty() {
        names.extend(package_name);
    }
    names
}

pub(super) fn workspace_version(root: &Path) -> Result<String> {
    let text =
        fs::read_to_string(root.join("Cargo.toml")).context("[deploy] reading Cargo.toml")?;
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if in_section {
            if let Some(v) = line.strip_prefix("version").map(str::trim_start) {
                if let Some(v) = v.strip_prefix('=') {
                    return Ok(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    bail!("[{STEP}] no version in [workspace.package] of Cargo.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtask_subcommands_come_from_enum_cmd() {
        let main_rs = "enum Cmd {\n    /// doc\n    Setup {\n        #[arg(long)]\n        test: bool,\n    },\n    BuildEbpf,\n    VmTest {\n        kernel: String,\n    },\n}\n";
        assert_eq!(
            xtask_subcommands(main_rs),
            ["setup", "build-ebpf", "vm-test"]
        );
        let real = fs::read_to_string(crate::repo_root().join("xtask/src/main.rs")).unwrap();
        assert!(xtask_subcommands(&real).contains(&"build".to_string()));
    }

    #[test]
    fn binary_names_and_constants_are_read_from_sources() {
        assert_eq!(
            agent_binary_names("[package]\nname = \"oomwatch\"\n[[bin]]\nname = \"oomwatch\"\n"),
            ["oomwatch"]
        );
        assert_eq!(
            agent_binary_names("[package]\nname = \"agent\"\n"),
            ["agent"]
        );
        assert_eq!(
            rust_const_strings("const P: &[&str] = &[\"a\", \"b-c\"];", "P"),
            Some(vec!["a".to_string(), "b-c".to_string()])
        );
        assert_eq!(rust_const_strings("const Q: &str = \"x\";", "P"), None);
    }
}
