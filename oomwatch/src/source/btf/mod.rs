//! A small, self-contained reader for BTF (BPF Type Format), as exported by the kernel at
//! `/sys/kernel/btf/vmlinux`, written from the kernel's `Documentation/bpf/btf.rst`.
//!
//! It answers the handful of questions the agent asks at start-up (member offsets and sizes,
//! enumerator values, whether a function exists, raw-tracepoint argument types). Only
//! little-endian BTF is accepted; malformed input yields a [`BtfError`], never a panic.
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: u16 = 0xeb9f;
const HDR_MIN: usize = 24;
/// Bound on the steps of one lookup: guards against cyclic or hostile type graphs.
const BUDGET: usize = 1 << 20;
/// Bound on the depth of one chain (typedef/const chains, nesting).
const MAX_DEPTH: usize = 64;

/// The type kinds (`BTF_KIND_*` of the kernel's `include/uapi/linux/btf.h`); public for the
/// tests that build BTF by hand.
pub mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}
use kind::*;

/// Everything that can go wrong while reading BTF or looking something up in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read (path, cause, what to do).
    #[error("cannot read BTF from {path}: {1} ({2})", path = .0.display())]
    Io(PathBuf, #[source] io::Error, &'static str),
    /// The BTF file was read but its contents are invalid.
    #[error("invalid BTF in {path}: {1}", path = .0.display())]
    InFile(PathBuf, #[source] Box<BtfError>),
    /// The blob is shorter than the BTF header.
    #[error("BTF is truncated: {0} bytes, the header alone needs {HDR_MIN}")]
    TruncatedHeader(usize),
    /// The first two bytes are not the BTF magic.
    #[error("bad BTF magic {0:#06x} (expected 0xeb9f)")]
    BadMagic(u16),
    /// The magic is byte-swapped: only little-endian BTF is supported.
    #[error("BTF is big-endian; only little-endian BTF is supported")]
    BigEndian,
    /// The header carries a version other than 1.
    #[error("unsupported BTF version {0} (expected 1)")]
    BadVersion(u8),
    /// `hdr_len` is smaller than the header or larger than the blob.
    #[error("BTF header length {0} is invalid for a {1}-byte blob")]
    BadHeaderLen(u32, usize),
    /// The type or string section (offset, length) lies outside the blob.
    #[error("BTF {0} section (offset {1}, length {2}) extends past the {3}-byte blob")]
    SectionOutOfBounds(&'static str, u32, u32, usize),
    /// The string section is empty or does not start and end with NUL.
    #[error("BTF string section is empty or not NUL-delimited")]
    BadStringSection,
    /// A type record is cut off by the end of the type section.
    #[error("BTF type [{0}] extends past the end of the type section")]
    TruncatedType(u32),
    /// A type (id) uses a kind this reader does not know.
    #[error("BTF type [{0}] has unknown kind {1}")]
    UnknownKind(u32, u8),
    /// A type (id) names a string offset outside the string section.
    #[error("BTF type [{0}] names string offset {1}, past the {2}-byte string section")]
    BadStringOffset(u32, u32, usize),
    /// A type refers to a type id that does not exist.
    #[error("BTF type id {0} does not exist")]
    BadTypeId(u32),
    /// A type chain is cyclic, too deep, or too large to walk.
    #[error("BTF type graph around [{0}] is cyclic or too deep")]
    TooDeep(u32),
    /// No struct or union of that name.
    #[error("BTF has no struct `{0}`")]
    NoStruct(String),
    /// A member path component (struct, member) was not found.
    #[error("struct `{0}` has no member `{1}`")]
    NoMember(String, String),
    /// A path descends through a member (struct, member, type) that is not embedded.
    #[error("member `{1}` of struct `{0}` is `{2}`, not an embedded struct/union")]
    NotEmbedded(String, String, String),
    /// The member (struct, member, bit offset) is a bitfield, so it has no byte offset.
    #[error("member `{1}` of struct `{0}` is a bitfield (bit offset {2})")]
    Bitfield(String, String, u64),
    /// The member path is empty or has an empty component.
    #[error("member path `{0}` is empty or has an empty component")]
    BadPath(String),
    /// The member's offset does not fit in 32 bits.
    #[error("offset of `{0}` does not fit in 32 bits")]
    OffsetOverflow(String),
    /// The type has no size (void, function, forward declaration) or it overflows.
    #[error("type `{0}` has no size")]
    NoSize(String),
    /// No enum of that name.
    #[error("BTF has no enum `{0}`")]
    NoEnum(String),
    /// No enumerator of that name in the given scope.
    #[error("BTF has no enumerator `{0}` in {1}")]
    NoEnumerator(String, String),
    /// The enumerator has different values in different enums.
    #[error("enumerator `{0}` has values {1} and {2} in different enums; name the enum")]
    AmbiguousEnumerator(String, i64, i64),
    /// The kernel has no `btf_trace_<name>` typedef.
    #[error("BTF has no raw tracepoint `{0}` (no typedef `btf_trace_{0}`)")]
    NoTracepoint(String),
    /// `btf_trace_<name>` is not `void (*)(void *, ...)`.
    #[error("typedef `btf_trace_{0}` is not a pointer to a function taking `void *` first")]
    BadTracepoint(String),
}

type Result<T, E = BtfError> = std::result::Result<T, E>;

/// One type record: the common `btf_type` header plus where its trailing data starts.
#[derive(Debug, Clone, Copy, Default)]
struct Type {
    name_off: u32,
    name_len: u32,
    /// vlen (bits 0-15), kind (bits 24-28), kind_flag (bit 31).
    info: u32,
    /// `size` for INT, ENUM, STRUCT, UNION, FLOAT, ENUM64, DATASEC; `type` for the others.
    size_type: u32,
    /// Byte offset of the trailing data in the type section.
    extra: u32,
}

impl Type {
    fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kflag(&self) -> bool {
        self.info >> 31 != 0
    }
}

/// A struct/union member; `bitfield_size` is 0 for ordinary members.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    ty: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

type FoundMember = Result<Option<Member>>;

/// A parsed BTF blob with a name index. Cheap to query; drop it when done.
pub struct Btf {
    type_sec: Vec<u8>,
    strings: Vec<u8>,
    /// Index 0 is `void`; type id `n` is `types[n]`.
    types: Vec<Type>,
    /// Ids of named types, sorted by name (then id).
    by_name: Vec<u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Btf({} types)", self.types.len() - 1)
    }
}

/// The little-endian `u32` at byte `i` of `b`, or 0 past the end.
fn word(b: &[u8], i: usize) -> u32 {
    let bytes = b.get(i..i + 4).and_then(|s| s.try_into().ok());
    bytes.map_or(0, u32::from_le_bytes)
}

impl Btf {
    /// Parse a BTF blob (little-endian, as found in `/sys/kernel/btf/vmlinux`).
    pub fn from_bytes(data: &[u8]) -> Result<Btf> {
        if data.len() < HDR_MIN {
            return Err(BtfError::TruncatedHeader(data.len()));
        }
        match u16::from_le_bytes([data[0], data[1]]) {
            MAGIC => {}
            m if m == MAGIC.swap_bytes() => return Err(BtfError::BigEndian),
            m => return Err(BtfError::BadMagic(m)),
        }
        if data[2] != 1 {
            return Err(BtfError::BadVersion(data[2]));
        }
        let hdr_len = word(data, 4);
        if (hdr_len as usize) < HDR_MIN || hdr_len as usize > data.len() {
            return Err(BtfError::BadHeaderLen(hdr_len, data.len()));
        }
        let section = |name, at| {
            let (off, len) = (word(data, at), word(data, at + 4));
            let start = u64::from(hdr_len) + u64::from(off);
            let range = start as usize..(start + u64::from(len)) as usize;
            let oob = BtfError::SectionOutOfBounds(name, off, len, data.len());
            data.get(range).ok_or(oob)
        };
        let (type_sec, strings) = (section("type", 8)?, section("string", 16)?);
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(BtfError::BadStringSection);
        }
        let (type_sec, strings) = (type_sec.to_vec(), strings.to_vec());
        let types = vec![Type::default()];
        let mut btf = Btf {
            type_sec,
            strings,
            types,
            by_name: Vec::new(),
        };
        btf.parse_types()?;
        let mut by_name: Vec<u32> = (1..btf.types.len() as u32).collect();
        by_name.retain(|&id| btf.types[id as usize].name_len != 0);
        by_name.sort_by(|&a, &b| btf.name_of(a).cmp(btf.name_of(b)));
        btf.by_name = by_name;
        Ok(btf)
    }

    /// Read and parse a BTF file, normally `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Btf> {
        let data = std::fs::read(path).map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => {
                    "kernel built without CONFIG_DEBUG_INFO_BTF? run on a kernel with BTF enabled"
                }
                io::ErrorKind::PermissionDenied => "run as root or make the file readable",
                _ => "check that the file is readable",
            };
            BtfError::Io(path.to_path_buf(), e, hint)
        })?;
        Btf::from_bytes(&data).map_err(|e| BtfError::InFile(path.to_path_buf(), Box::new(e)))
    }

    fn parse_types(&mut self) -> Result<()> {
        let sec = &self.type_sec;
        let mut pos = 0usize;
        while pos < sec.len() {
            let id = self.types.len() as u32;
            let body_start = pos + 12;
            if body_start > sec.len() {
                return Err(BtfError::TruncatedType(id));
            }
            let (name_off, info) = (word(sec, pos), word(sec, pos + 4));
            let size_type = word(sec, pos + 8);
            let extra = body_start as u32;
            let mut t = Type {
                name_off,
                name_len: 0,
                info,
                size_type,
                extra,
            };
            // Bytes of trailing data, and the size of its name-carrying records (0: none).
            let (len, named) = match t.kind() {
                INT | VAR | DECL_TAG => (4, 0),
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => {
                    (0, 0)
                }
                ARRAY => (12, 0),
                STRUCT | UNION | ENUM64 => (12 * t.vlen(), 12),
                ENUM | FUNC_PROTO => (8 * t.vlen(), 8),
                DATASEC => (12 * t.vlen(), 0),
                kind => return Err(BtfError::UnknownKind(id, kind)),
            };
            let body = sec.get(body_start..body_start + len);
            let body = body.ok_or(BtfError::TruncatedType(id))?;
            t.name_len = self.check_str(id, name_off)?;
            if named != 0 {
                for rec in body.chunks_exact(named) {
                    self.check_str(id, word(rec, 0))?;
                }
            }
            self.types.push(t);
            pos = body_start + len;
        }
        Ok(())
    }

    /// Length of the NUL-terminated string at `off`; an error if `off` is out of range.
    fn check_str(&self, id: u32, off: u32) -> Result<u32> {
        let len = self.strings.len();
        let bad = BtfError::BadStringOffset(id, off, len);
        let s = self.strings.get(off as usize..).ok_or(bad)?;
        Ok(s.iter().position(|&b| b == 0).unwrap_or(s.len()) as u32)
    }

    fn str_at(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn name_of(&self, id: u32) -> &[u8] {
        let t = self.types.get(id as usize).copied().unwrap_or_default();
        let range = t.name_off as usize..(t.name_off as usize + t.name_len as usize);
        self.strings.get(range).unwrap_or_default()
    }

    fn name_lossy(&self, id: u32) -> String {
        match self.name_of(id) {
            [] => "(anon)".to_string(),
            n => String::from_utf8_lossy(n).into_owned(),
        }
    }

    fn ty(&self, id: u32) -> Result<Type> {
        let t = self.types.get(id as usize).filter(|_| id != 0);
        t.copied().ok_or(BtfError::BadTypeId(id))
    }

    /// Kind of type `id`, with `void` (id 0, a zeroed record) as kind 0.
    fn kind_of(&self, id: u32) -> Result<u8> {
        let t = self.types.get(id as usize);
        t.map(Type::kind).ok_or(BtfError::BadTypeId(id))
    }

    /// The trailing records of `t`, each `size` bytes (bounds were checked at parse time).
    fn records(&self, t: &Type, size: usize) -> std::slice::ChunksExact<'_, u8> {
        let start = t.extra as usize;
        let body = self.type_sec.get(start..start + t.vlen() * size);
        body.unwrap_or_default().chunks_exact(size)
    }

    fn members(&self, t: &Type) -> impl Iterator<Item = Member> + '_ {
        let kflag = t.kflag();
        self.records(t, 12).map(move |r| {
            let off = word(r, 8);
            // With kind_flag, `offset` packs bitfield_size (bits 24-31) and bit offset (0-23).
            let (bit_offset, bitfield_size) = if kflag {
                (off & 0xff_ffff, off >> 24)
            } else {
                (off, 0)
            };
            Member {
                name_off: word(r, 0),
                ty: word(r, 4),
                bit_offset,
                bitfield_size,
            }
        })
    }

    /// Ids of all types named `name` whose kind satisfies `want`, lowest id first.
    fn named<'a>(&'a self, name: &'a str, want: fn(u8) -> bool) -> impl Iterator<Item = u32> + 'a {
        let key = name.as_bytes();
        let lo = self.by_name.partition_point(|&id| self.name_of(id) < key);
        let ids = self.by_name.get(lo..).unwrap_or_default().iter().copied();
        ids.take_while(move |&id| self.name_of(id) == key)
            .filter(move |&id| self.kind_of(id).is_ok_and(want))
    }

    /// Follow typedef/const/volatile/restrict/type-tag to the underlying type id.
    fn resolve(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            match self.kind_of(id)? {
                TYPEDEF | CONST | VOLATILE | RESTRICT | TYPE_TAG => id = self.ty(id)?.size_type,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    fn is_composite(&self, id: u32) -> Result<bool> {
        Ok(matches!(self.kind_of(id)?, STRUCT | UNION))
    }

    fn find_struct(&self, name: &str) -> Result<u32> {
        let mut ids = self.named(name, |k| k == STRUCT || k == UNION);
        ids.next().ok_or_else(|| BtfError::NoStruct(name.into()))
    }

    /// Find member `name` in composite `id`, descending anonymous struct/union members;
    /// the returned bit offset is relative to `id`.
    fn find_member(&self, id: u32, name: &[u8], budget: &mut usize, depth: usize) -> FoundMember {
        if depth >= MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let t = self.ty(id)?;
        for m in self.members(&t) {
            *budget = budget.checked_sub(1).ok_or(BtfError::TooDeep(id))?;
            let mname = self.str_at(m.name_off);
            if mname == name {
                return Ok(Some(m));
            }
            let inner = self.resolve(m.ty)?;
            if mname.is_empty() && self.is_composite(inner)? {
                if let Some(mut found) = self.find_member(inner, name, budget, depth + 1)? {
                    found.bit_offset = found.bit_offset.wrapping_add(m.bit_offset);
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Walk `path` from struct `root`; returns (bit offset, member type id).
    fn walk(&self, root: &str, path: &str) -> Result<(u64, u32)> {
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::BadPath(path.to_string()));
        }
        let (mut cur, mut cur_name) = (self.find_struct(root)?, root.to_string());
        let (mut bits, mut budget, mut ty) = (0u64, BUDGET, 0);
        for (i, part) in path.split('.').enumerate() {
            if i > 0 {
                cur = self.resolve(ty)?;
                if !self.is_composite(cur)? {
                    let prev = path.split('.').nth(i - 1).unwrap_or_default().to_string();
                    return Err(BtfError::NotEmbedded(cur_name, prev, self.type_name(ty)?));
                }
                cur_name = self.name_lossy(cur);
            }
            let missing = || BtfError::NoMember(cur_name.clone(), part.to_string());
            let m = self
                .find_member(cur, part.as_bytes(), &mut budget, 0)?
                .ok_or_else(missing)?;
            bits += u64::from(m.bit_offset);
            if m.bitfield_size != 0 || bits % 8 != 0 || self.is_int_bitfield(m.ty)? {
                return Err(BtfError::Bitfield(cur_name, part.to_string(), bits));
            }
            ty = m.ty;
        }
        Ok((bits, ty))
    }

    /// Old-style (no kind_flag) bitfields are INTs whose encoding has a bit offset or odd width.
    fn is_int_bitfield(&self, ty: u32) -> Result<bool> {
        let id = self.resolve(ty)?;
        if self.kind_of(id)? != INT {
            return Ok(false);
        }
        let t = self.ty(id)?;
        let enc = word(&self.type_sec, t.extra as usize);
        Ok(enc & 0xff_0000 != 0 || u64::from(enc & 0xff) != u64::from(t.size_type) * 8)
    }

    /// Byte offset of a member, following a dotted path through embedded (non-pointer)
    /// struct/union members; members of anonymous structs/unions are found transparently
    /// (e.g. `task_struct.pid` works whatever anonymous wrappers exist). Errors for bitfield
    /// members (offset not byte aligned).
    pub fn member_offset(&self, struct_name: &str, member_path: &str) -> Result<u32, BtfError> {
        let (bits, _) = self.walk(struct_name, member_path)?;
        let too_far = |_| BtfError::OffsetOverflow(format!("{struct_name}.{member_path}"));
        u32::try_from(bits / 8).map_err(too_far)
    }

    /// Size in bytes of a named struct/union.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.ty(self.find_struct(name)?)?.size_type)
    }

    /// Size in bytes of the (resolved: typedefs/const/volatile stripped) type of a member path.
    pub fn member_size(&self, struct_name: &str, member_path: &str) -> Result<u32, BtfError> {
        let (_, ty) = self.walk(struct_name, member_path)?;
        self.size_of(ty, 0)
    }

    fn size_of(&self, ty: u32, depth: usize) -> Result<u32> {
        let id = self.resolve(ty)?;
        match self.kind_of(id)? {
            INT | ENUM | ENUM64 | STRUCT | UNION | FLOAT => Ok(self.ty(id)?.size_type),
            PTR => Ok(self.pointer_size()),
            ARRAY if depth < MAX_DEPTH => {
                let at = self.ty(id)?.extra as usize;
                let elem = self.size_of(word(&self.type_sec, at), depth + 1)?;
                let size = elem.checked_mul(word(&self.type_sec, at + 8));
                size.ok_or_else(|| BtfError::NoSize(self.name_lossy(id)))
            }
            ARRAY => Err(BtfError::TooDeep(id)),
            _ => Err(BtfError::NoSize(self.type_name(ty)?)),
        }
    }

    /// BTF does not record pointer width; use the size of `long`, as libbpf does, else 8.
    fn pointer_size(&self) -> u32 {
        let long = self.named("long int", |k| k == INT).next();
        long.and_then(|id| self.ty(id).ok())
            .map_or(8, |t| t.size_type)
    }

    /// Value of an enumerator, searching all ENUM/ENUM64 types (or the named one if
    /// `enum_name` is `Some`). Unsigned 64-bit values above `i64::MAX` wrap to negative.
    pub fn enum_value(&self, enum_name: Option<&str>, enumerator: &str) -> Result<i64, BtfError> {
        let is_enum = |k| k == ENUM || k == ENUM64;
        let candidates: Vec<u32> = match enum_name {
            Some(name) => self.named(name, is_enum).collect(),
            None => (1..self.types.len() as u32)
                .filter(|&id| self.kind_of(id).is_ok_and(is_enum))
                .collect(),
        };
        if let (Some(name), true) = (enum_name, candidates.is_empty()) {
            return Err(BtfError::NoEnum(name.to_string()));
        }
        let mut found: Option<i64> = None;
        for id in candidates {
            let t = self.ty(id)?;
            let records = self.records(&t, if t.kind() == ENUM { 8 } else { 12 });
            for r in records.filter(|r| self.str_at(word(r, 0)) == enumerator.as_bytes()) {
                let v = match (t.kind(), t.kflag()) {
                    (ENUM, true) => i64::from(word(r, 4) as i32),
                    (ENUM, false) => i64::from(word(r, 4)),
                    _ => ((u64::from(word(r, 8)) << 32) | u64::from(word(r, 4))) as i64,
                };
                if let Some(p) = found.filter(|&p| p != v) {
                    return Err(BtfError::AmbiguousEnumerator(enumerator.into(), p, v));
                }
                found = Some(v);
            }
        }
        let scope = enum_name.map_or_else(|| "any enum".to_string(), |n| format!("enum `{n}`"));
        found.ok_or_else(|| BtfError::NoEnumerator(enumerator.to_string(), scope))
    }

    /// Whether a FUNC with this name exists.
    pub fn has_func(&self, name: &str) -> bool {
        self.named(name, |k| k == FUNC).next().is_some()
    }
}

mod names;

#[cfg(test)]
mod tests {
    //! Unit tests of the BTF reader on hand-built blobs and hostile input.
    use super::*;

    /// Builds little-endian BTF blobs by hand: `ty` emits a type header, `w` trailing words,
    /// `rec` a named record (member, enumerator, parameter).
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        last_id: u32,
    }

    impl Builder {
        fn s(&mut self, name: &str) -> u32 {
            let off = if name.is_empty() {
                0
            } else {
                self.strings.len() as u32
            };
            self.strings
                .extend(name.bytes().chain((!name.is_empty()).then_some(0)));
            off
        }
        fn w(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        fn ty(&mut self, name: &str, kind: u8, kflag: bool, vlen: u32, size_type: u32) -> u32 {
            let n = self.s(name);
            for v in [
                n,
                (u32::from(kflag) << 31) | (u32::from(kind) << 24) | vlen,
                size_type,
            ] {
                self.w(v);
            }
            self.last_id += 1;
            self.last_id
        }
        fn rec(&mut self, name: &str, rest: &[u32]) {
            let n = self.s(name);
            for &v in [n].iter().chain(rest) {
                self.w(v);
            }
        }
        fn build(&self) -> Vec<u8> {
            let (tl, sl) = (self.types.len() as u32, self.strings.len() as u32);
            let hdr = [0x0001_eb9f, 24, 0, tl, tl, sl].map(u32::to_le_bytes);
            [hdr.concat(), self.types.clone(), self.strings.clone()].concat()
        }
    }

    /// struct inner { int a; int b; };
    /// struct outer { unsigned head; union { int x; struct inner in; };
    ///                unsigned flags:3; struct inner emb; const u32 tail; };   (kind_flag)
    /// typedef void (*btf_trace_demo)(void *, struct outer *, const u32);
    /// plus enums, a FUNC, an old-style INT bitfield and a typedef cycle.
    fn sample() -> Vec<u8> {
        let mut b = Builder {
            types: Vec::new(),
            strings: vec![0],
            last_id: 0,
        };
        let int = b.ty("int", INT, false, 0, 4);
        b.w((1 << 24) | 32);
        let uint = b.ty("unsigned int", INT, false, 0, 4);
        b.w(32);
        let inner = b.ty("inner", STRUCT, false, 2, 8);
        b.rec("a", &[int, 0]);
        b.rec("b", &[int, 32]);
        let anon = b.ty("", UNION, false, 2, 8);
        b.rec("x", &[int, 0]);
        b.rec("in", &[inner, 0]);
        let outer = b.ty("outer", STRUCT, true, 5, 32);
        let (u32_id, const_u32) = (outer + 1, outer + 2);
        b.rec("head", &[uint, 0]);
        b.rec("", &[anon, 64]);
        b.rec("flags", &[uint, (3 << 24) | 128]);
        b.rec("emb", &[inner, 160]);
        b.rec("tail", &[const_u32, 224]);
        assert_eq!(b.ty("u32", TYPEDEF, false, 0, uint), u32_id);
        assert_eq!(b.ty("", CONST, false, 0, u32_id), const_u32);
        let p_outer = b.ty("", PTR, false, 0, outer);
        let p_void = b.ty("", PTR, false, 0, 0);
        let proto = b.ty("", FUNC_PROTO, false, 3, 0);
        for p in [p_void, p_outer, const_u32] {
            b.rec("", &[p]);
        }
        let p_proto = b.ty("", PTR, false, 0, proto);
        b.ty("btf_trace_demo", TYPEDEF, false, 0, p_proto);
        b.ty("colors", ENUM, true, 2, 4);
        b.rec("RED", &[0]);
        b.rec("BLUE", &[u32::MAX]);
        b.ty("big", ENUM64, false, 1, 8);
        b.rec("HUGE", &[2, 1]);
        b.ty("do_demo", FUNC, false, 1, proto);
        b.ty("other", ENUM, false, 1, 4);
        b.rec("RED", &[5]);
        let u3 = b.ty("u3", INT, false, 0, 4);
        b.w(3);
        b.ty("legacy", STRUCT, false, 1, 4);
        b.rec("lo", &[u3, 0]);
        let loop_a = b.ty("loop_a", TYPEDEF, false, 0, b.last_id + 2);
        b.ty("loop_b", TYPEDEF, false, 0, loop_a);
        let cyclic = b.ty("cyclic", STRUCT, false, 2, 4);
        b.rec("l", &[loop_a, 0]);
        b.rec("", &[cyclic, 0]);
        b.build()
    }

    #[test]
    fn lookups_on_hand_built_blob() {
        let btf = Btf::from_bytes(&sample()).expect("sample parses");
        let off = |p| btf.member_offset("outer", p).map_err(|e| e.to_string());
        assert_eq!(off("head"), Ok(0));
        assert_eq!(off("x"), Ok(8));
        assert_eq!(off("in.b"), Ok(12));
        assert_eq!(off("emb.b"), Ok(24));
        assert_eq!(off("tail"), Ok(28));
        assert!(off("flags")
            .unwrap_err()
            .contains("`flags` of struct `outer` is a bitfield"));
        assert!(matches!(
            btf.member_offset("legacy", "lo"),
            Err(BtfError::Bitfield(..))
        ));
        assert_eq!(
            off("foo").unwrap_err(),
            "struct `outer` has no member `foo`"
        );
        assert_eq!(
            off("emb.zz").unwrap_err(),
            "struct `inner` has no member `zz`"
        );
        assert!(off("head.a")
            .unwrap_err()
            .contains("is `unsigned int`, not an embedded"));
        assert!(matches!(
            btf.member_offset("outer", "a..b"),
            Err(BtfError::BadPath(_))
        ));
        let e = btf
            .member_offset("task_struct", "pid")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "BTF has no struct `task_struct`");
        assert_eq!(btf.struct_size("outer").unwrap(), 32);
        assert_eq!(btf.member_size("outer", "tail").unwrap(), 4);
        assert_eq!(btf.member_size("outer", "in").unwrap(), 8);
        assert!(matches!(
            btf.member_size("cyclic", "l"),
            Err(BtfError::TooDeep(_))
        ));
        assert!(matches!(
            btf.member_offset("cyclic", "zz"),
            Err(BtfError::TooDeep(_))
        ));
        assert_eq!(btf.enum_value(Some("colors"), "BLUE").unwrap(), -1);
        assert_eq!(btf.enum_value(None, "HUGE").unwrap(), 0x1_0000_0002);
        assert_eq!(btf.enum_value(Some("other"), "RED").unwrap(), 5);
        let e = btf.enum_value(None, "RED");
        assert!(matches!(e, Err(BtfError::AmbiguousEnumerator(_, 0, 5))));
        assert!(matches!(
            btf.enum_value(Some("zz"), "RED"),
            Err(BtfError::NoEnum(_))
        ));
        assert!(matches!(
            btf.enum_value(None, "GREEN"),
            Err(BtfError::NoEnumerator(..))
        ));
        assert!(btf.has_func("do_demo") && !btf.has_func("btf_trace_demo"));
        assert_eq!(
            btf.tracepoint_params("demo").unwrap(),
            ["struct outer *", "const u32"]
        );
        let e = btf.tracepoint_params("nope");
        assert!(matches!(e, Err(BtfError::NoTracepoint(_))));
        let e = Btf::from_file(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/vmlinux") && e.contains("CONFIG_DEBUG_INFO_BTF"),
            "{e}"
        );
    }

    #[test]
    fn malformed_input_is_rejected() {
        let good = sample();
        let bad = |at: usize, bytes: &[u8]| {
            let mut d = good.clone();
            d[at..at + bytes.len()].copy_from_slice(bytes);
            Btf::from_bytes(&d).expect_err("must fail")
        };
        let word = |v: u32| v.to_le_bytes();
        let err = |d: &[u8]| Btf::from_bytes(d).expect_err("must fail");
        assert!(matches!(err(&good[..10]), BtfError::TruncatedHeader(10)));
        assert!(matches!(err(&[]), BtfError::TruncatedHeader(0)));
        assert!(matches!(bad(0, &[0]), BtfError::BadMagic(_)));
        assert!(matches!(bad(0, &[0xeb, 0x9f]), BtfError::BigEndian));
        assert!(matches!(bad(2, &[2]), BtfError::BadVersion(2)));
        assert!(matches!(
            bad(4, &word(1000)),
            BtfError::BadHeaderLen(1000, _)
        ));
        let e = bad(12, &word(1 << 20)); // type_len past the end
        assert!(matches!(e, BtfError::SectionOutOfBounds("type", ..)));
        let e = bad(16, &word(u32::MAX)); // str_off past the end (and overflowing u32)
        assert!(matches!(e, BtfError::SectionOutOfBounds("string", ..)));
        let e = bad(24, &word(1 << 20)); // name_off of type 1
        assert!(matches!(e, BtfError::BadStringOffset(1, 0x10_0000, _)));
        assert!(matches!(
            bad(28, &word(25 << 24)),
            BtfError::UnknownKind(1, 25)
        ));
        assert!(matches!(bad(12, &word(30)), BtfError::TruncatedType(2)));
        assert!(matches!(
            bad(good.len() - 1, b"x"),
            BtfError::BadStringSection
        ));
    }

    /// Runs every query, only to check that nothing panics or hangs.
    fn exercise(btf: &Btf) {
        for s in ["outer", "inner", "legacy", "cyclic", "colors", ""] {
            for m in ["head", "x", "in.b", "emb.a", "tail", "flags", "l", "lo"] {
                let _ = (btf.member_offset(s, m), btf.member_size(s, m));
            }
            let _ = (
                btf.struct_size(s),
                btf.enum_value(Some(s), "RED"),
                btf.has_func(s),
            );
        }
        let _ = (btf.enum_value(None, "HUGE"), btf.tracepoint_params("demo"));
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rng = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        for _ in 0..20_000 {
            let mut d: Vec<u8> = (0..rng() % 256).map(|_| rng() as u8).collect();
            if rng() % 2 == 0 && d.len() >= 24 {
                d[..8].copy_from_slice(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]);
            }
            let _ = Btf::from_bytes(&d).map(|b| exercise(&b));
        }
        let (good, mut parsed) = (sample(), 0);
        for _ in 0..20_000 {
            let mut d = good.clone();
            for _ in 0..1 + rng() % 4 {
                let bit = rng() % (d.len() * 8);
                d[bit / 8] ^= 1 << (bit % 8);
            }
            if rng() % 4 == 0 {
                d.truncate(rng() % d.len());
            }
            if let Ok(b) = Btf::from_bytes(&d) {
                parsed += 1;
                exercise(&b);
            }
        }
        assert!(parsed > 1000, "only {parsed} mutated blobs parsed");
    }
}
