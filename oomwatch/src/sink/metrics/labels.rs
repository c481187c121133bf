//! Label text of the exposition format, shared by the label-set state and the renderer.

/// Label value used when the victim's comm or cgroup is not known.
pub const UNKNOWN: &str = "unknown";

/// Appends `v` escaped as the exposition format wants: `\` → `\\`, newline → `\n`, and
/// (in label values, `quote`) `"` → `\"`.
/// Appends `name="value"` (escaped), after a comma unless `out` is empty.
pub(super) fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    push_escaped(out, value, true);
    out.push('"');
}

pub(super) fn push_escaped(out: &mut String, v: &str, quote: bool) {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    if !v.bytes().any(special) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}
