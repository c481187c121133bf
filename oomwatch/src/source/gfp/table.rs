//! The running kernel's own GFP flag-name table, read from tracefs: the `mm_page_alloc` event's
//! print format contains `show_gfp_flags()`, i.e. `__print_flags(REC->gfp_flags, "|", {mask,
//! "NAME"}, ...)` with each mask written as the C expression the kernel's headers expand to.
//! Evaluating those expressions gives exactly the table the kernel prints `%pGg` with, on any
//! kernel version and configuration: no bit numbers or name order are assumed.
use crate::source::gfp::GfpDecoder;

/// Bounds on what a format file may make us do.
const MAX_ENTRIES: usize = 256;
const MAX_EXPR: usize = 8192;
const MAX_DEPTH: usize = 64;

/// The `(mask, name)` entries of `show_gfp_flags()` in a `mm_page_alloc` format, in the
/// kernel's order; None when the format has no such table or an entry does not evaluate.
pub fn kernel_table(format: &str) -> Option<Vec<(u32, String)>> {
    let start = format.find("__print_flags(REC->gfp_flags, \"|\",")?;
    let mut rest = &format[start..];
    let mut out = Vec::new();
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        let entry = &rest[open + 1..close];
        rest = &rest[close + 1..];
        // `{ 0, NULL }` ends the table.
        if entry.trim_start().starts_with("0,") {
            break;
        }
        let (expr, name) = entry.rsplit_once(", \"")?;
        let name = name.trim_end_matches('"');
        if out.len() == MAX_ENTRIES || expr.len() > MAX_EXPR {
            return None;
        }
        let mask = u32::try_from(eval(expr)? & 0xffff_ffff).ok()?;
        // A nameless entry names nothing (the decoder then shows that bit in hex).
        if !name.is_empty() {
            out.push((mask, name.to_string()));
        }
    }
    (!out.is_empty()).then_some(out)
}

impl GfpDecoder {
    /// From the text of `<tracefs>/events/kmem/mm_page_alloc/format`.
    pub fn from_tracefs_format(format: &str) -> Option<GfpDecoder> {
        kernel_table(format).map(GfpDecoder::from_table)
    }
}

/// Evaluates a constant C expression of the format file: integers (`0x` hex, `UL` suffixes),
/// parentheses, casts to `unsigned long`/`gfp_t`, and `~ << & |`. None on anything else.
fn eval(expr: &str) -> Option<u64> {
    let expr = expr
        .replace("( unsigned long)", " ")
        .replace("(unsigned long)", " ")
        .replace("( gfp_t)", " ")
        .replace("(gfp_t)", " ");
    let mut spaced = String::with_capacity(expr.len() * 2);
    for c in expr.replace("<<", " << ").chars() {
        match c {
            '(' | ')' | '|' | '&' | '~' => spaced.extend([' ', c, ' ']),
            _ => spaced.push(c),
        }
    }
    let toks: Vec<&str> = spaced.split_whitespace().collect();
    let mut i = 0;
    let v = binary(&toks, &mut i, 0, 0)?;
    (i == toks.len()).then_some(v)
}

/// Precedence, loosest first: `|`, `&`, `<<`; `~` and parentheses bind tightest.
fn binary(t: &[&str], i: &mut usize, level: usize, depth: usize) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    if level == 3 {
        return unary(t, i, depth + 1);
    }
    let mut v = binary(t, i, level + 1, depth + 1)?;
    while t.get(*i) == Some(&["|", "&", "<<"][level]) {
        *i += 1;
        let r = binary(t, i, level + 1, depth + 1)?;
        v = match level {
            0 => v | r,
            1 => v & r,
            _ => v.checked_shl(u32::try_from(r).ok()?)?,
        };
    }
    Some(v)
}

fn unary(t: &[&str], i: &mut usize, depth: usize) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let tok = *t.get(*i)?;
    *i += 1;
    match tok {
        "~" => unary(t, i, depth + 1).map(|v| !v),
        "(" => {
            let v = binary(t, i, 0, depth + 1)?;
            (t.get(*i) == Some(&")")).then(|| *i += 1)?;
            Some(v)
        }
        n => {
            let n = n.trim_end_matches(['u', 'U', 'l', 'L']);
            match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => n.parse().ok(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kmsg::oom::OomItem;
    use crate::source::kmsg::{parse_record, OomReportParser};

    const FORMAT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gfp/mm_page_alloc.v6.18-host.format"
    ));
    const REPORTS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gfp/oom-invoked-v6.18-host.kmsg"
    ));

    #[test]
    fn a_nameless_entry_is_left_out() {
        let f = r#"print fmt: "x", __print_flags(REC->gfp_flags, "|", {( unsigned long)(( gfp_t)((((1UL))) << (14))), ""}, {( unsigned long)(( gfp_t)((((1UL))) << (6))), "__GFP_IO"}, { 0, ((void *)0) } )"#;
        assert_eq!(
            kernel_table(f),
            Some(vec![(1 << 6, "__GFP_IO".to_string())])
        );
    }

    #[test]
    fn expressions_evaluate_like_c() {
        assert_eq!(eval("(( gfp_t)((((1UL))) << (10)))"), Some(1 << 10));
        assert_eq!(eval("0x400u|0x800u"), Some(0xc00));
        assert_eq!(eval("(0xff & ~(0x0f))"), Some(0xf0));
        assert_eq!(eval("(( gfp_t)0)"), Some(0));
        assert_eq!(eval("1 << 99"), None, "overflowing shift");
        assert_eq!(eval("(1"), None);
        assert_eq!(eval("1 +"), None);
        assert_eq!(eval(&"(".repeat(500)), None, "nesting is bounded");
    }

    #[test]
    fn this_hosts_table_decodes_every_real_report_as_the_kernel_did() {
        let d = GfpDecoder::from_tracefs_format(FORMAT).unwrap();
        assert_eq!(d.decode(0xcc0), vec!["GFP_KERNEL".to_string()]);
        let mut parser = OomReportParser::new();
        let mut checked = 0;
        for line in REPORTS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            for item in parser.push_record(&parse_record(line.as_bytes()).unwrap()) {
                if let OomItem::Invoked(inv) = item {
                    let want =
                        crate::source::gfp::names_from_log(inv.gfp_flags.as_deref().unwrap());
                    assert_eq!(d.decode(inv.gfp_mask), want, "mask {:#x}", inv.gfp_mask);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 4, "{checked} reports checked");
    }

    #[test]
    fn the_running_kernels_table_loads() {
        let text = crate::source::tracefs::ensure_mounted()
            .map_err(|e| e.to_string())
            .and_then(|(tracefs, _)| {
                let path = tracefs.join("events/kmem/mm_page_alloc/format");
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
            });
        let Some(text) = oomwatch_testkit::host_or_skip("tracefs", text) else {
            return;
        };
        let d = GfpDecoder::from_tracefs_format(&text).unwrap();
        assert_eq!(d.decode(0xcc0), vec!["GFP_KERNEL".to_string()]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"{}()|&~<< 0x1fUL\"GFP_,__print_flags(REC->gfp_flags, \"|\",";
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(x % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            let _ = kernel_table(&s);
        }
    }
}
