//! `/proc/kallsyms` as a compact table of the kernel's text symbols, read once at start-up
//! (while the agent may still see addresses: `kptr_restrict` hides them from a process without
//! `CAP_SYSLOG`) and kept: addresses sorted, all names in one buffer, module names interned. About
//! 2.4 MiB for the 64,000 functions of a 6.18 kernel (its padding symbols left out), against ~9 MiB for a general symbolizer's parsed copy plus the
//! file's own 5 MiB; a lookup is one binary search.
use std::io::{self, BufRead, BufReader};
use std::path::Path;

/// The kernel's text symbols by address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    addrs: Vec<u64>,
    /// End of each name in `names` (its start is the previous end).
    name_ends: Vec<u32>,
    names: String,
    /// Index into `modules` + 1 for each symbol; 0: the kernel proper.
    module: Vec<u16>,
    modules: Vec<String>,
}

/// One symbol found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    pub name: &'a str,
    /// `None`: the kernel proper (`vmlinux`).
    pub module: Option<&'a str>,
    pub offset: u64,
}

impl SymbolTable {
    /// Reads `path`; an error when its addresses are hidden (all zero) or it lists no text.
    pub fn read(path: &Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let mut rows: Vec<(u64, u32, u32, u16)> = Vec::new();
        let mut t = SymbolTable::default();
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Some((addr, name, module)) = parse(&line) else {
                continue;
            };
            let start = t.names.len();
            t.names.push_str(name);
            let m = module.map_or(0, |m| t.intern(m));
            rows.push((addr, start as u32, name.len() as u32, m));
        }
        if rows.iter().all(|r| r.0 == 0) {
            return Err(io::Error::other(
                "no text symbol with an address (kptr_restrict hides them)",
            ));
        }
        rows.sort_unstable_by_key(|r| r.0);
        Ok(t.finish(rows))
    }

    fn intern(&mut self, module: &str) -> u16 {
        if let Some(i) = self.modules.iter().position(|m| m == module) {
            return i as u16 + 1;
        }
        if self.modules.len() >= usize::from(u16::MAX - 1) {
            return 0;
        }
        self.modules.push(module.to_string());
        self.modules.len() as u16
    }

    /// Lays the names out again in address order, so each name ends where the next begins.
    fn finish(self, rows: Vec<(u64, u32, u32, u16)>) -> Self {
        let mut out = SymbolTable {
            addrs: Vec::with_capacity(rows.len()),
            name_ends: Vec::with_capacity(rows.len()),
            names: String::with_capacity(self.names.len()),
            module: Vec::with_capacity(rows.len()),
            modules: self.modules,
        };
        for (addr, start, len, m) in rows {
            let (s, e) = (start as usize, (start + len) as usize);
            out.names.push_str(&self.names[s..e]);
            out.addrs.push(addr);
            out.name_ends.push(out.names.len() as u32);
            out.module.push(m);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The symbol at or below `addr` (its offset from the symbol's start); `None` below the
    /// first symbol.
    pub fn lookup(&self, addr: u64) -> Option<Found<'_>> {
        let i = self.addrs.partition_point(|a| *a <= addr).checked_sub(1)?;
        let start = if i == 0 {
            0
        } else {
            self.name_ends[i - 1] as usize
        };
        let end = self.name_ends[i] as usize;
        let m = self.module[i];
        Some(Found {
            name: &self.names[start..end],
            module: (m > 0).then(|| self.modules[usize::from(m - 1)].as_str()),
            offset: addr - self.addrs[i],
        })
    }
}

/// `ADDRESS TYPE NAME [\[MODULE\]]` of a text symbol (`t`, `T`).
fn parse(line: &str) -> Option<(u64, &str, Option<&str>)> {
    let mut w = line.split_whitespace();
    let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
    if !matches!(kind, "t" | "T") || name.len() > 512 || is_padding(name) {
        return None;
    }
    let module = match w.next() {
        Some(m) => Some(m.strip_prefix('[')?.strip_suffix(']')?),
        None => None,
    };
    Some((u64::from_str_radix(addr, 16).ok()?, name, module))
}

/// The padding in front of a function (`__pfx_<name>` with `CONFIG_FUNCTION_PADDING`, the
/// x86-64 default since 6.2; `__cfi_<name>` with kCFI): no return address points into it, and
/// on 6.18 these are 57,206 of the 121,056 text symbols (1.5 MB of names). An address there is
/// named after the function before it.
fn is_padding(name: &str) -> bool {
    name.starts_with("__pfx_") || name.starts_with("__cfi_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000010 t early_helper
ffffffff810ffff0 t __pfx_out_of_memory
ffffffff81200000 D some_data
ffffffff81100000 T out_of_memory
ffffffffc0001000 t xfs_alloc\t[xfs]
ffffffffc0000000 t ext4_read\t[ext4]
";

    fn table(text: &str) -> io::Result<SymbolTable> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kallsyms");
        std::fs::write(&p, text).unwrap();
        SymbolTable::read(&p)
    }

    #[test]
    fn addresses_find_their_symbol_module_and_offset() {
        let t = table(SAMPLE).unwrap();
        assert_eq!(t.len(), 5, "text only, no padding symbols");
        let f = t.lookup(0xffffffff81100233).unwrap();
        assert_eq!((f.name, f.module, f.offset), ("out_of_memory", None, 0x233));
        let f = t.lookup(0xffffffff81000012).unwrap();
        assert_eq!((f.name, f.offset), ("early_helper", 2));
        let f = t.lookup(0xffffffffc0000004).unwrap();
        assert_eq!((f.name, f.module), ("ext4_read", Some("ext4")));
        let f = t.lookup(0xffffffffc0001000).unwrap();
        assert_eq!((f.name, f.module, f.offset), ("xfs_alloc", Some("xfs"), 0));
        assert_eq!(t.lookup(0x1000), None);
        // In the padding before out_of_memory: the function before it.
        let f = t.lookup(0xffffffff810ffff4).unwrap();
        assert_eq!(f.name, "early_helper");
    }

    #[test]
    fn hidden_addresses_and_garbage() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t x\n";
        assert!(table(hidden).is_err());
        let junk = "zz T a\nffffffff81000000 T ok\nffffffff81000001 T x [unclosed\n\n";
        let t = table(junk).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(0xffffffff81000005).unwrap().name, "ok");
    }

    #[test]
    fn the_running_kernels_table_names_its_own_functions() {
        let read = SymbolTable::read(Path::new("/proc/kallsyms"));
        let Some(t) = oomwatch_testkit::host_or_skip("kallsyms addresses hidden (not root?)", read)
        else {
            return;
        };
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(" T out_of_memory"))
            .unwrap();
        let addr = u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap();
        let f = t.lookup(addr + 1).unwrap();
        assert_eq!((f.name, f.offset), ("out_of_memory", 1));
    }
}
