//! A gone trigger's frames in its own program: the eBPF side reads the task's
//! `mm->start_code`/`end_code` with its stacks; the kernel sets `start_code` to the load address
//! of the program file's lowest executable segment (`load_bias + p_vaddr`), so an address in
//! `[start_code, end_code)` is `addr - load_bias` in the file's own virtual addresses, PIE or
//! not, with no build id and no `/proc/<pid>/maps` needed. Program headers are read with the
//! `object` crate (already in the build through aya), from the file's first
//! [`MAX_HEADER_BYTES`] only: the file is the workload's.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use object::elf::{FileHeader32, FileHeader64, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// Bytes of the program file read for its ELF and program headers.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// One loadable segment: virtual address, file offset, bytes in the file, executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    exec: bool,
}

/// Where a gone process's program was mapped, and the program file's segments.
#[derive(Debug)]
pub struct Code {
    start: u64,
    end: u64,
    load_bias: u64,
    segments: Vec<Segment>,
}

impl Code {
    /// The program `path` mapped at `[start_code, end_code)`; `None` when the range is unknown
    /// or the file has no executable loadable segment.
    pub fn of(path: &Path, start_code: u64, end_code: u64) -> Option<Code> {
        if start_code == 0 || start_code >= end_code {
            return None;
        }
        // The path is the workload's: never block on a FIFO swapped in after the caller's
        // check, and read only a regular file.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut head = Vec::new();
        file.take(MAX_HEADER_BYTES).read_to_end(&mut head).ok()?;
        Code::from_headers(&head, start_code, end_code)
    }

    fn from_headers(head: &[u8], start: u64, end: u64) -> Option<Code> {
        let segments = segments::<FileHeader64<Endianness>>(head)
            .or_else(|| segments::<FileHeader32<Endianness>>(head))?;
        let first_exec = segments.iter().filter(|s| s.exec).map(|s| s.vaddr).min()?;
        Some(Code {
            start,
            end,
            load_bias: start.checked_sub(first_exec)?,
            segments,
        })
    }

    /// `addr`'s offset in the program file, when it lies in the program's code.
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        if addr < self.start || addr >= self.end {
            return None;
        }
        let vaddr = addr - self.load_bias;
        self.segments
            .iter()
            .find(|s| s.exec && vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
            .map(|s| vaddr - s.vaddr + s.offset)
    }
}

/// The loadable segments of an ELF file of class `H`, from its first bytes.
fn segments<H: FileHeader<Endian = Endianness>>(head: &[u8]) -> Option<Vec<Segment>> {
    let header = H::parse(head).ok()?;
    let endian = header.endian().ok()?;
    let phdrs = header.program_headers(endian, head).ok()?;
    let segments = phdrs
        .iter()
        .filter(|p| p.p_type(endian) == PT_LOAD)
        .map(|p| Segment {
            vaddr: p.p_vaddr(endian).into(),
            offset: p.p_offset(endian).into(),
            filesz: p.p_filesz(endian).into(),
            exec: p.p_flags(endian) & PF_X != 0,
        })
        .collect();
    Some(segments)
}

/// The kernel's own `start_code` and `end_code` of this process (fields 26 and 27 of
/// `/proc/self/stat`, after the parenthesised comm).
#[cfg(test)]
pub(super) fn own_code_range() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // `rest` starts at field 3 (state).
    (f[26 - 3], f[27 - 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `addr`'s file offset from `/proc/self/maps`: address − mapping start + mapping offset.
    fn maps_offset(addr: u64) -> u64 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|l| {
                let mut p = l.split_whitespace();
                let (range, _, off) = (p.next()?, p.next()?, p.next()?);
                let (lo, hi) = range.split_once('-')?;
                let lo = u64::from_str_radix(lo, 16).ok()?;
                let hi = u64::from_str_radix(hi, 16).ok()?;
                let off = u64::from_str_radix(off, 16).ok()?;
                (addr >= lo && addr < hi).then_some(addr - lo + off)
            })
            .unwrap()
    }

    #[test]
    fn an_address_in_the_running_program_maps_to_its_file_offset() {
        let (start, end) = own_code_range();
        assert!(start > 0 && start < end, "{start:#x}..{end:#x}");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let code = Code::of(&exe, start, end).expect("the test binary's code");
        let f =
            an_address_in_the_running_program_maps_to_its_file_offset as *const () as usize as u64;
        assert_eq!(code.file_offset(f), Some(maps_offset(f)));
        assert_eq!(code.file_offset(start), Some(maps_offset(start)));
        assert_eq!(code.file_offset(end), None, "end_code is past the code");
        assert_eq!(code.file_offset(start - 1), None);
    }

    #[test]
    fn hostile_or_unknown_inputs_give_nothing() {
        assert!(Code::of(Path::new("/dev/null"), 0x1000, 0x2000).is_none());
        // A FIFO is neither waited on nor read.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(Code::of(&fifo, 0x1000, 0x2000).is_none());
        assert!(Code::of(Path::new("/proc/self/exe"), 0, 0x2000).is_none());
        assert!(Code::of(Path::new("/proc/self/exe"), 0x3000, 0x2000).is_none());
        assert!(Code::from_headers(b"\x7fELF garbage", 0x1000, 0x2000).is_none());
        assert!(Code::from_headers(&[0u8; 4096], 0x1000, 0x2000).is_none());
    }
}
