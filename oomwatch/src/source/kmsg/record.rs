//! One `/dev/kmsg` record, as `Documentation/ABI/testing/dev-kmsg` describes it.
//!
//! A `read()` returns exactly one record:
//!
//! ```text
//! 7,160,424069,-;pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)
//!  SUBSYSTEM=acpi
//!  DEVICE=+acpi:PNP0A03:00
//! ```
//!
//! The header is `prio,seq,ts_usec,flags[,more...]` up to the `;` (fields the kernel may add later,
//! such as `caller=T123`, are ignored), the message runs to the first `\n`, and each following line
//! that starts with a space is one `KEY=value` dictionary entry. Non-printable bytes and `\` itself
//! are escaped by the kernel as `\xNN`; [`parse_record`] decodes them.

/// The largest record [`parse_record`] accepts. The kernel's own bound for one formatted record
/// (`CONSOLE_EXT_LOG_MAX`) is 8192 bytes; anything larger is not a record.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// A parsed `/dev/kmsg` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Syslog facility (`prio >> 3`): 0 = kernel, 1 = user (lines written to `/dev/kmsg`).
    pub facility: u8,
    /// Syslog level (`prio & 7`): 0 = emergency … 7 = debug.
    pub level: u8,
    /// The kernel's 64-bit record sequence number; consecutive records differ by one.
    pub seq: u64,
    /// Timestamp in microseconds (`local_clock()`, i.e. CLOCK_MONOTONIC-like, since boot).
    pub ts_usec: u64,
    /// The flags field was not `-`: the record is a fragment of a line (`c`; kernels before 4.9
    /// also used `+` for a fragment continuing the previous one). Fragments are rare: the kernel
    /// joins `pr_cont()` pieces itself when it can.
    pub cont: bool,
    /// The message text with `\xNN` escapes decoded (invalid UTF-8 replaced by U+FFFD).
    pub message: String,
    /// Dictionary (`KEY=value` continuation lines), in order, values decoded like the message.
    pub dict: Vec<(String, String)>,
}

/// Why a buffer is not a `/dev/kmsg` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Longer than [`MAX_RECORD_BYTES`].
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    TooLong(usize),
    /// No `;` ends the header.
    #[error("record has no ';' ending its header")]
    NoHeader,
    /// A header field is missing or not a number.
    #[error("record header field `{0}` is missing or malformed")]
    BadField(&'static str),
}

/// Parses one record as returned by one `read()` of `/dev/kmsg`.
pub fn parse_record(buf: &[u8]) -> Result<KmsgRecord, RecordError> {
    if buf.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong(buf.len()));
    }
    let semi = buf
        .iter()
        .position(|&b| b == b';')
        .ok_or(RecordError::NoHeader)?;
    let header = &buf[..semi];
    let mut fields = header.split(|&b| b == b',');
    let prio: u16 = parse_num(fields.next(), "prio")?;
    let seq: u64 = parse_num(fields.next(), "seq")?;
    let ts_usec: u64 = parse_num(fields.next(), "ts_usec")?;
    let flags = fields.next().ok_or(RecordError::BadField("flags"))?;
    // Further fields (e.g. `caller=T1`) are ignored, as the ABI asks.
    let facility = u8::try_from(prio >> 3).map_err(|_| RecordError::BadField("prio"))?;
    // Truncation intended: the level is the low three bits.
    let level = (prio & 7) as u8;
    let cont = !flags.is_empty() && flags != b"-";

    let body = &buf[semi + 1..];
    let mut lines = body.split(|&b| b == b'\n');
    let message = unescape(lines.next().unwrap_or_default());
    let mut dict = Vec::new();
    for line in lines {
        let Some(entry) = line.strip_prefix(b" ") else {
            // The record ends with '\n' (an empty last piece); anything else is not ours.
            continue;
        };
        let (key, value) = match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (&entry[..eq], &entry[eq + 1..]),
            None => (entry, &entry[entry.len()..]),
        };
        dict.push((unescape(key), unescape(value)));
    }
    Ok(KmsgRecord {
        facility,
        level,
        seq,
        ts_usec,
        cont,
        message,
        dict,
    })
}

fn parse_num<T: std::str::FromStr>(
    field: Option<&[u8]>,
    name: &'static str,
) -> Result<T, RecordError> {
    let field = field.ok_or(RecordError::BadField(name))?;
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return Err(RecordError::BadField(name));
    }
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RecordError::BadField(name))
}

/// Decodes the kernel's `\xNN` escapes. A `\` not followed by `x` and two hex digits is kept as
/// is. Bytes that are not valid UTF-8 after decoding become U+FFFD.
pub fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x') {
            if let (Some(h), Some(l)) = (
                raw.get(i + 2).and_then(|&c| hex(c)),
                raw.get(i + 3).and_then(|&c| hex(c)),
            ) {
                out.push(h << 4 | l);
                i += 4;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_doc_example_with_dictionary() {
        let r = parse_record(
            b"7,160,424069,-;pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n",
        )
        .unwrap();
        assert_eq!((r.facility, r.level, r.seq, r.ts_usec), (0, 7, 160, 424069));
        assert!(!r.cont);
        assert_eq!(
            r.message,
            "pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)"
        );
        assert_eq!(
            r.dict,
            vec![
                ("SUBSYSTEM".to_string(), "acpi".to_string()),
                ("DEVICE".to_string(), "+acpi:PNP0A03:00".to_string()),
            ]
        );
    }

    #[test]
    fn facility_and_level_split_from_prio() {
        // 30 = facility 3 (daemon), level 6 (info); the ABI doc's udevd line.
        let r = parse_record(b"30,340,5690716,-;udevd[80]: starting version 181\n").unwrap();
        assert_eq!((r.facility, r.level, r.seq), (3, 6, 340));
        assert_eq!(r.message, "udevd[80]: starting version 181");
        assert!(r.dict.is_empty());
    }

    #[test]
    fn real_oom_record_from_this_host() {
        let r = parse_record(b"3,6306,1021763741,-;Memory cgroup out of memory: Killed process 12531 (tail) total-vm:68148kB, anon-rss:65280kB, file-rss:1584kB, shmem-rss:0kB, UID:0 pgtables:172kB oom_score_adj:0\n").unwrap();
        assert_eq!(
            (r.facility, r.level, r.seq, r.ts_usec),
            (0, 3, 6306, 1021763741)
        );
        assert!(r
            .message
            .starts_with("Memory cgroup out of memory: Killed process 12531 (tail)"));
        assert!(r.message.ends_with("oom_score_adj:0"));
    }

    #[test]
    fn escapes_are_decoded() {
        // Captured on this host: a comm written with a trailing newline.
        let r = parse_record(b"6,6382,1022520658,-;[  12573]     0 12573    31374    16729    16348      381         0   208896        0             0 Web (Content)\\x0a\n").unwrap();
        assert!(r.message.ends_with("Web (Content)\n"));
        assert_eq!(unescape(b"a\\x5cb"), "a\\b");
        assert_eq!(unescape(b"\\xzz\\x4"), "\\xzz\\x4");
        assert_eq!(unescape(b"\\xff"), "\u{fffd}");
    }

    #[test]
    fn extra_header_fields_and_cont_flags() {
        let r =
            parse_record(b"4,12,34,c,caller=T77;oom-kill:constraint=CONSTRAINT_NONE\n").unwrap();
        assert!(r.cont);
        assert_eq!(r.message, "oom-kill:constraint=CONSTRAINT_NONE");
        assert!(parse_record(b"4,13,35,+;,cpuset=/\n").unwrap().cont);
        // No trailing newline: still one record.
        assert_eq!(parse_record(b"6,1,2,-;x").unwrap().message, "x");
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(parse_record(b"no header"), Err(RecordError::NoHeader));
        assert_eq!(
            parse_record(b"x,1,2,-;m"),
            Err(RecordError::BadField("prio"))
        );
        assert_eq!(
            parse_record(b"6,-1,2,-;m"),
            Err(RecordError::BadField("seq"))
        );
        assert_eq!(
            parse_record(b"6,1,;m"),
            Err(RecordError::BadField("ts_usec"))
        );
        assert_eq!(
            parse_record(b"6,1,2;m"),
            Err(RecordError::BadField("flags"))
        );
        assert_eq!(
            parse_record(b"65535,1,2,-;m"),
            Err(RecordError::BadField("prio"))
        );
        assert_eq!(
            parse_record(b"6,99999999999999999999,2,-;m"),
            Err(RecordError::BadField("seq"))
        );
        let big = vec![b'a'; MAX_RECORD_BYTES + 1];
        assert_eq!(
            parse_record(&big),
            Err(RecordError::TooLong(MAX_RECORD_BYTES + 1))
        );
    }
}
