//! The running kernel's text symbols (`/proc/kallsyms`): which copies of a function exist. The
//! compiler may split a function (`f.part.N`: its head inlined into the callers of the same file,
//! its body out of line), specialise it (`f.isra.N`, `f.constprop.N`: other arguments), or
//! inline it everywhere (no `f` at all); a probe on `f` then misses those callers. BTF does not
//! say: it describes the source function whatever the compiler made of it.
//!
//! [`table`]: the same file as a compact address → symbol table, for the trigger's kernel stack.
mod table;

use std::io::{BufRead, BufReader};
use std::path::Path;

pub use table::SymbolTable;

/// Where the kernel lists its symbols.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// The text symbols named `function` or `function.<suffix>` (kernel modules' symbols left
/// out), in file order, each once. Reads the file line by line: it is megabytes long.
pub fn copies_of(path: &Path, function: &str) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Some(name) = text_symbol(&line?, function) {
            if !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// `ADDRESS TYPE NAME [\[MODULE\]]`: NAME if it is a text symbol (`t`/`T`) of the kernel proper
/// named `function` or `function.<suffix>`.
fn text_symbol<'a>(line: &'a str, function: &str) -> Option<&'a str> {
    let mut w = line.split_whitespace();
    let (_addr, kind, name) = (w.next()?, w.next()?, w.next()?);
    if w.next().is_some() || !matches!(kind, "t" | "T") {
        return None;
    }
    let rest = name.strip_prefix(function)?;
    (rest.is_empty() || rest.starts_with('.')).then_some(name)
}

/// What the callers of `function` in its own file call, from its copies (see [`copies_of`]):
/// `function` itself, or the one `function.part.N` that GCC split it into (the body, with the
/// arguments the head received, in order). `.cold` parts are jumped to, never called. An
/// error names what makes the function's callers unreachable to a probe.
pub fn callee(function: &str, copies: &[String]) -> Result<Callee, String> {
    let callable: Vec<&String> = copies.iter().filter(|n| !n.ends_with(".cold")).collect();
    let clones: Vec<&String> = callable
        .iter()
        .copied()
        .filter(|n| *n != function)
        .collect();
    let part = format!("{function}.part.");
    match clones.as_slice() {
        [] if callable.is_empty() => Err(format!(
            "{function} is not in {KALLSYMS}: inlined into every caller, nothing to probe"
        )),
        [] => Ok(Callee {
            symbol: function.to_string(),
            split: false,
        }),
        [one] if one.strip_prefix(&part).is_some_and(is_number) => Ok(Callee {
            symbol: one.to_string(),
            split: true,
        }),
        more => Err(format!(
            "{KALLSYMS} has {}: copies the compiler made with other arguments, not probed",
            more.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The symbol a kprobe on a function's in-file callers must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callee {
    pub symbol: String,
    /// `symbol` is `function.part.N`: the callers run the function's head inline and call this
    /// body; it has no BTF of its own, so fentry/fexit cannot attach to it.
    pub split: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of Debian 11's `5.10.0-46-cloud-amd64` `/proc/kallsyms` (booted by `vm-test`).
    const DEBIAN_5_10: &str = "\
ffffffff81418410 t dump_task
ffffffff81418560 t oom_badness.part.0
ffffffff814186a0 t oom_evaluate_task
ffffffff81418d70 T oom_badness
ffffffff814193e0 T out_of_memory
ffffffff81a8e94e t out_of_memory.cold
ffffffffc0301000 t oom_badness_helper\t[some_module]
ffffffff82936dc0 D oom_lock
";

    fn copies(text: &str, f: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kallsyms");
        std::fs::write(&path, text).unwrap();
        copies_of(&path, f).unwrap()
    }

    #[test]
    fn a_split_function_is_reached_through_its_part() {
        let c = copies(DEBIAN_5_10, "oom_badness");
        assert_eq!(c, ["oom_badness.part.0", "oom_badness"]);
        let part = callee("oom_badness", &c).unwrap();
        assert_eq!(part.symbol, "oom_badness.part.0");
        assert!(part.split);
        // A .cold part is never called: out_of_memory is reached by its own name.
        let c = copies(DEBIAN_5_10, "out_of_memory");
        assert_eq!(c, ["out_of_memory", "out_of_memory.cold"]);
        let callee = callee("out_of_memory", &c).unwrap();
        assert_eq!(
            (callee.symbol.as_str(), callee.split),
            ("out_of_memory", false)
        );
    }

    #[test]
    fn inlined_or_respecialised_functions_are_reasons() {
        let none: Vec<String> = copies(DEBIAN_5_10, "select_bad_process");
        assert!(none.is_empty());
        let e = callee("select_bad_process", &none).unwrap_err();
        assert!(e.contains("inlined into every caller"), "{e}");
        let isra = ["oom_badness".to_string(), "oom_badness.isra.0".to_string()];
        let e = callee("oom_badness", &isra).unwrap_err();
        assert!(e.contains("oom_badness.isra.0"), "{e}");
        let two = [
            "oom_badness.part.0".to_string(),
            "oom_badness.part.1".to_string(),
        ];
        assert!(callee("oom_badness", &two).is_err());
        // Not a copy: another function whose name starts alike.
        assert!(copies("1 T oom_badness_x\n", "oom_badness").is_empty());
    }
}
