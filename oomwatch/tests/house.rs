//! The rules of the house, checked on the source tree (see `docs/architecture.md`):
//! the stages of `src/` import only stages at or below them, no two modules import each other
//! (directly or around a loop), and the file tree agrees with the module
//! tree (in any crate of the workspace: no path attribute on a `mod`).
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The stages of `oomwatch/src`, lowest first (the order of the table in `lib.rs`).
const STAGES: [&str; 14] = [
    "sys",
    "record",
    "source",
    "explain",
    "correlate",
    "enrich",
    "sink",
    "host",
    "kill_outcome",
    "recovery",
    "server",
    "config",
    "agent",
    "commands",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file of `src/` (`source::kmsg::oom`), `""` for the crate root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its inline unit tests (a module's tests
/// may use anything).
fn code(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b::c` / `super::x` path in `code`, resolved to the module it names.
fn imports(module: &str, is_dir_module: bool, code: &str, known: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("::") {
        // The whole path this `::` belongs to, taken once from its first segment.
        let start = code[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |s| s + 1);
        if code[start..i].contains("::") || (start > 0 && bytes[start - 1] == b'$') {
            continue;
        }
        let end = code[i..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(code.len(), |e| i + e);
        let segs: Vec<&str> = code[start..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .collect();
        let mut base: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let rest = match segs.first() {
            Some(&"crate") => {
                base.clear();
                &segs[1..]
            }
            Some(&"super") => {
                let mut k = 0;
                while segs.get(k) == Some(&"super") {
                    base.pop();
                    k += 1;
                }
                &segs[k..]
            }
            Some(&first) if is_dir_module && known.contains(&join(&base, &[first])) => &segs[..],
            _ => continue,
        };
        let full: Vec<&str> = base.iter().chain(rest.iter()).copied().collect();
        if let Some(target) = (0..=full.len())
            .rev()
            .map(|k| full[..k].join("::"))
            .find(|m| known.contains(m))
        {
            if target != module {
                out.push(target);
            }
        }
    }
    out
}

fn join(base: &[&str], more: &[&str]) -> String {
    base.iter()
        .chain(more)
        .copied()
        .collect::<Vec<_>>()
        .join("::")
}

/// module → the modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace().join("oomwatch/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let known: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| {
            let m = module_of(&src, f);
            let dir = f.ends_with("mod.rs") || f.ends_with("lib.rs");
            (
                m.clone(),
                imports(&m, dir, &code(f), &known).into_iter().collect(),
            )
        })
        .collect()
}

fn stage(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    STAGES.iter().position(|s| *s == top)
}

#[test]
fn no_stage_imports_a_stage_above_it() {
    let g = graph();
    assert!(g.len() > 50, "only {} modules found", g.len());
    let mut upward = Vec::new();
    for (m, targets) in &g {
        for t in targets {
            if let (Some(a), Some(b)) = (stage(m), stage(t)) {
                if b > a {
                    upward.push(format!("{m} imports {t}"));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the flow:\n{}",
        upward.join("\n")
    );
    for s in STAGES {
        assert!(g.contains_key(s), "stage {s} is not a module of src/");
    }
}

#[test]
fn no_modules_import_each_other() {
    let g = graph();
    // A module is in a cycle when it can reach itself.
    let mut cycles = Vec::new();
    for start in g.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = g[start].iter().collect();
        while let Some(m) = todo.pop() {
            if m == start {
                cycles.push(start.clone());
                break;
            }
            if seen.insert(m.clone()) {
                todo.extend(g.get(m).into_iter().flatten());
            }
        }
    }
    assert!(cycles.is_empty(), "modules in an import cycle: {cycles:?}");
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    // The graph must see `use crate::…`, `super::…` and a directory module's own children.
    let g = graph();
    let has = |a: &str, b: &str| g.get(a).is_some_and(|t| t.contains(b));
    assert!(
        has("agent::startup", "correlate"),
        "{:?}",
        g.get("agent::startup")
    );
    assert!(has("source::kmsg::oom", "source::kmsg::report"));
    assert!(
        has("source::kmsg", "source::kmsg::oom") || has("source::kmsg", "source::kmsg::reader")
    );
    let known: BTreeSet<String> = ["a", "a::b"].map(String::from).into();
    assert_eq!(imports("a::b", false, "use super::X;", &known), ["a"]);
    assert_eq!(imports("a", true, "let x = b::f();", &known), ["a::b"]);
}

#[test]
fn no_path_attributes_and_no_test_files_beside_modules() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in ["oomwatch", "oomwatch-common", "oomwatch-testkit", "xtask"] {
        rust_files(&root.join(krate), &mut files);
    }
    assert!(files.len() > 100, "only {} files", files.len());
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            let attr = ["#", "[path"].concat();
            let name = f.file_name().unwrap().to_string_lossy();
            text.contains(&attr)
                || (f.components().any(|c| c.as_os_str() == "src") && name.ends_with("_tests.rs"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "path attributes, or *_tests.rs files in src: {offenders:?}"
    );
}

#[test]
fn every_probe_row_is_documented() {
    // The probe table's names come from `ProbeId` alone; the docs must name every row.
    let root = workspace();
    for doc in ["README.md", "docs/metrics.md"] {
        let text = fs::read_to_string(root.join(doc)).unwrap();
        for p in oomwatch::record::ProbeId::ALL {
            assert!(
                text.contains(p.name()),
                "{doc} does not name the probe row {p}"
            );
        }
    }
}
