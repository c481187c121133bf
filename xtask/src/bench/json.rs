//! Just enough JSON for the bench: reading a top-level member of one event line, and writing
//! the results file (xtask has no serde dependency).

use std::fmt::Write as _;

/// The raw text of the top-level member `key` of a JSON object on one line (`42`, `"a"`,
/// `{...}`), ignoring members of nested objects.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => {
                depth += 1;
                expect_key = b[i] == b'{' && depth == 1;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' => {
                expect_key = depth == 1;
                i += 1;
            }
            b'"' => {
                let end = string_end(b, i)?;
                if depth == 1 && expect_key {
                    expect_key = false;
                    if &line[i + 1..end] == key {
                        let mut j = end + 1;
                        while j < b.len() && (b[j] == b':' || b[j].is_ascii_whitespace()) {
                            j += 1;
                        }
                        let vend = value_end(b, j)?;
                        return Some(line[j..vend].trim_end());
                    }
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Index of the closing quote of the string opening at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of the value starting at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => i = string_end(b, i)? + 1,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => {
                depth -= 1;
                i += 1;
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
    }
    Some(i)
}

/// A JSON string member's value without quotes (escapes other than `\"` and `\\` kept).
pub fn unquote(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.replace("\\\"", "\"").replace("\\\\", "\\"))
}

/// A value of the results file.
#[derive(Clone, Debug)]
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn obj(members: Vec<(&str, J)>) -> J {
        J::Obj(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    pub fn str(s: impl Into<String>) -> J {
        J::Str(s.into())
    }

    pub fn opt(v: Option<f64>) -> J {
        v.map_or(J::Null, J::Num)
    }

    /// Pretty-printed, two spaces per level.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) if !n.is_finite() => out.push_str("null"),
            J::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                let _ = write!(out, "{}", *n as i64);
            }
            J::Num(n) => {
                let _ = write!(out, "{}", (n * 1000.0).round() / 1000.0);
            }
            J::Str(s) => quote(out, s),
            J::Arr(items) if items.is_empty() => out.push_str("[]"),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    v.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            J::Obj(members) if members.is_empty() => out.push_str("{}"),
            J::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    quote(out, k);
                    out.push_str(": ");
                    v.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_members_only() {
        let line = r#"{"time":"t","ktime_ns":123,"pid":7,"trigger":{"pid":9,"cgroup":"/x"},"cgroup":"/a \"b\"","replayed":false}"#;
        assert_eq!(field(line, "pid"), Some("7"));
        assert_eq!(field(line, "ktime_ns"), Some("123"));
        assert_eq!(field(line, "replayed"), Some("false"));
        assert_eq!(
            field(line, "cgroup").and_then(unquote).as_deref(),
            Some("/a \"b\"")
        );
        assert_eq!(field(line, "trigger"), Some(r#"{"pid":9,"cgroup":"/x"}"#));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn renders_nested_values() {
        let v = J::obj(vec![
            ("a", J::Num(1.0)),
            ("b", J::Arr(vec![J::Num(1.5), J::Null])),
            ("c", J::str("x\"y")),
        ]);
        assert_eq!(
            v.render(),
            "{\n  \"a\": 1,\n  \"b\": [\n    1.5,\n    null\n  ],\n  \"c\": \"x\\\"y\"\n}\n"
        );
    }
}
