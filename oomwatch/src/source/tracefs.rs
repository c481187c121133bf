//! tracefs: finding (or mounting) it, and parsing an event's `format` file into field offsets.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oomwatch_common::{MarkVictimOffsets, OFFSET_ABSENT};

/// Where aya looks for tracefs (it does not follow other mount points).
pub const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}; mount it with `mount -t tracefs tracefs /sys/kernel/tracing`")]
    NotMounted(io::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("malformed tracefs format line {line:?}: {why}")]
    Malformed { line: String, why: &'static str },
    #[error("tracepoint format has no field `{0}`")]
    MissingField(&'static str),
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    /// The C declaration without the name, e.g. `unsigned long`, `__data_loc char[]`.
    pub c_type: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<FormatField>,
}

impl Format {
    /// Parses a format file's text. Unknown lines are ignored; malformed `field:` lines are errors.
    pub fn parse(text: &str) -> Result<Self, TracefsError> {
        let mut name = String::new();
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("name:") {
                name = rest.trim().to_string();
            } else if let Some(rest) = trimmed.strip_prefix("ID:") {
                id = rest.trim().parse().ok();
            } else if trimmed.starts_with("field:") {
                fields.push(parse_field(trimmed)?);
            }
        }
        Ok(Self { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn parse_field(line: &str) -> Result<FormatField, TracefsError> {
    let bad = |why| TracefsError::Malformed {
        line: line.chars().take(200).collect(),
        why,
    };
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once(':').ok_or_else(|| bad("no `key:value`"))?;
        match key {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(value.trim().parse().map_err(|_| bad("bad offset"))?),
            "size" => size = Some(value.trim().parse().map_err(|_| bad("bad size"))?),
            "signed" => signed = value.trim() == "1",
            _ => {}
        }
    }
    let decl = decl.ok_or_else(|| bad("no field declaration"))?;
    // `unsigned long total_vm`, `__data_loc char[] comm`, `char comm[16]`: the name is the
    // last word, with any array suffix moved to the type.
    let (c_type, last) = decl
        .rsplit_once(char::is_whitespace)
        .ok_or_else(|| bad("no type"))?;
    let (name, array) = match last.find('[') {
        Some(i) => (&last[..i], &last[i..]),
        None => (last, ""),
    };
    if name.is_empty() {
        return Err(bad("empty field name"));
    }
    Ok(FormatField {
        c_type: format!("{}{}", c_type.trim(), array),
        name: name.to_string(),
        offset: offset.ok_or_else(|| bad("no offset"))?,
        size: size.ok_or_else(|| bad("no size"))?,
        signed,
    })
}

/// Which `oom/mark_victim` layout a kernel has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkVictimLayout {
    /// pid, comm, total_vm, anon/file/shmem rss, uid, pgtables, oom_score_adj (6.8+ and backports).
    Extended,
    /// Only `pid` (kernels 4.13–6.8 without the 2024 backport).
    PidOnly,
    /// `pid` plus some but not all of the extended fields.
    Partial,
}

/// Offsets for the eBPF program, from a `mark_victim` format. A field whose size differs from
/// what the program reads is treated as absent rather than misread.
pub fn mark_victim_offsets(
    format: &Format,
) -> Result<(MarkVictimOffsets, MarkVictimLayout), TracefsError> {
    let pid = format
        .field("pid")
        .ok_or(TracefsError::MissingField("pid"))?;
    let sized = |name: &str, size: u32| {
        format
            .field(name)
            .filter(|f| f.size == size)
            .map_or(OFFSET_ABSENT, |f| f.offset)
    };
    let comm = format
        .field("comm")
        .filter(|f| f.c_type.starts_with("__data_loc") && f.size == 4)
        .map_or(OFFSET_ABSENT, |f| f.offset);
    let off = MarkVictimOffsets {
        pid: if pid.size == 4 {
            pid.offset
        } else {
            OFFSET_ABSENT
        },
        comm_data_loc: comm,
        total_vm: sized("total_vm", 8),
        anon_rss: sized("anon_rss", 8),
        file_rss: sized("file_rss", 8),
        shmem_rss: sized("shmem_rss", 8),
        uid: sized("uid", 4),
        pgtables: sized("pgtables", 8),
        oom_score_adj: sized("oom_score_adj", 2),
        _pad0: 0,
    };
    let extended = [
        off.comm_data_loc,
        off.total_vm,
        off.anon_rss,
        off.file_rss,
        off.shmem_rss,
        off.uid,
        off.pgtables,
        off.oom_score_adj,
    ];
    let present = extended.iter().filter(|&&o| o != OFFSET_ABSENT).count();
    let layout = match present {
        0 => MarkVictimLayout::PidOnly,
        n if n == extended.len() => MarkVictimLayout::Extended,
        _ => MarkVictimLayout::Partial,
    };
    Ok((off, layout))
}

/// Returns tracefs's mount point, mounting it at `/sys/kernel/tracing` when absent (aya only
/// looks in [`TRACEFS_PATHS`]). The bool says whether this call mounted it.
pub fn ensure_mounted() -> Result<(&'static Path, bool), TracefsError> {
    if let Some(p) = TRACEFS_PATHS.iter().map(Path::new).find(|p| has_events(p)) {
        return Ok((p, false));
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; data is null (no options).
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::NotMounted(io::Error::last_os_error()));
    }
    if has_events(target) {
        Ok((target, true))
    } else {
        Err(TracefsError::NotMounted(io::Error::other(
            "mounted, but it has no events/ directory",
        )))
    }
}

fn has_events(p: &Path) -> bool {
    p.join("events").is_dir()
}

/// Reads and parses `<tracefs>/events/<category>/<name>/format`.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<Format, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    Format::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXTENDED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tracefs/mark_victim.6.18.format"
    ));
    const PID_ONLY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tracefs/mark_victim.pid-only.format"
    ));

    #[test]
    fn parses_extended_format_of_6_18() {
        let f = Format::parse(EXTENDED).unwrap();
        assert_eq!(f.name, "mark_victim");
        assert_eq!(f.fields.len(), 13);
        let comm = f.field("comm").unwrap();
        assert_eq!(comm.c_type, "__data_loc char[]");
        assert_eq!((comm.offset, comm.size, comm.signed), (12, 4, false));
        let adj = f.field("oom_score_adj").unwrap();
        assert_eq!(
            (adj.c_type.as_str(), adj.offset, adj.size, adj.signed),
            ("short", 64, 2, true)
        );
        let (off, layout) = mark_victim_offsets(&f).unwrap();
        assert_eq!(layout, MarkVictimLayout::Extended);
        assert_eq!(
            off,
            MarkVictimOffsets {
                pid: 8,
                comm_data_loc: 12,
                total_vm: 16,
                anon_rss: 24,
                file_rss: 32,
                shmem_rss: 40,
                uid: 48,
                pgtables: 56,
                oom_score_adj: 64,
                _pad0: 0,
            }
        );
    }

    #[test]
    fn parses_pid_only_format() {
        let f = Format::parse(PID_ONLY).unwrap();
        let (off, layout) = mark_victim_offsets(&f).unwrap();
        assert_eq!(layout, MarkVictimLayout::PidOnly);
        assert_eq!(off.pid, 8);
        assert_eq!(
            MarkVictimOffsets {
                pid: OFFSET_ABSENT,
                ..off
            },
            MarkVictimOffsets::ABSENT
        );
    }

    #[test]
    fn wrong_sized_field_is_absent_not_misread() {
        let text = EXTENDED.replace("offset:16;\tsize:8;", "offset:16;\tsize:4;");
        let (off, layout) = mark_victim_offsets(&Format::parse(&text).unwrap()).unwrap();
        assert_eq!(off.total_vm, OFFSET_ABSENT);
        assert_eq!(layout, MarkVictimLayout::Partial);
    }

    #[test]
    fn array_field_name_and_type() {
        let f = parse_field("field:char comm[16];\toffset:8;\tsize:16;\tsigned:1;").unwrap();
        assert_eq!((f.c_type.as_str(), f.name.as_str()), ("char[16]", "comm"));
    }

    #[test]
    fn malformed_lines_are_errors_and_missing_pid_is_reported() {
        assert!(Format::parse("\tfield:int pid;\toffset:x;\tsize:4;").is_err());
        assert!(Format::parse("\tfield:int;\toffset:8;\tsize:4;").is_err());
        let no_pid = Format::parse("name: x\n").unwrap();
        assert!(matches!(
            mark_victim_offsets(&no_pid),
            Err(TracefsError::MissingField("pid"))
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"field:offset;size signed:0123456789\t\n[]_ab";
        for _ in 0..5000 {
            let len = (x % 120) as usize;
            let mut s = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(alphabet[(x % alphabet.len() as u64) as usize] as char);
            }
            let _ = Format::parse(&s).map(|f| mark_victim_offsets(&f));
        }
    }

    #[test]
    fn this_hosts_format_parses() {
        let mounted = ensure_mounted();
        let Some((tracefs, _)) = oomwatch_testkit::host_or_skip("tracefs unavailable", mounted)
        else {
            return;
        };
        let f = read_format(tracefs, "oom", "mark_victim").unwrap();
        assert!(mark_victim_offsets(&f).is_ok());
    }
}
