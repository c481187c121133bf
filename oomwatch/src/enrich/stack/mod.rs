//! The trigger's stacks, symbolized (`trigger.stack`, issue 18): kernel frames from a compact
//! table of `/proc/kallsyms` read at start-up, while the agent may still see addresses
//! ([`SymbolTable`]); user frames with blazesym from the ELF files of the trigger's mappings,
//! read the moment the stack record arrives.
//!
//! Time bound: a stack record is symbolized once, in the event loop, when it arrives — before
//! the victim records of its invocation leave the correlator (they wait for their window). The
//! work is bounded: at most 64 kernel and 64 user frames, DWARF only for files of at most
//! [`MAX_DWARF_FILE_BYTES`], each file parsed once and kept (at most [`MAX_CACHED_FILES`] files; then the cache
//! starts over), and only the stacks of the last [`MAX_RECENT`] invocations are kept.
mod exe_code;
mod perf_map;
pub mod summary;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};

use blazesym::normalize::{NormalizeOpts, Normalizer, UserMeta};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::Pid;
use oomwatch_common::{counter, StackRecord, BUILD_ID_VALID};

use crate::record::{Frame, OomEvent, StackMode, TriggerStack};
use crate::source::probe::loader::read_counter;
use crate::sys::kallsyms::SymbolTable;

/// Parsed ELF files kept at most; past it the user-side cache starts over.
pub const MAX_CACHED_FILES: usize = 32;
/// Invocations whose stacks are kept for their victims.
pub const MAX_RECENT: usize = 64;
/// Symbolized frames remembered (file, offset → frame); past it the memo starts over.
const MAX_NAMED_FRAMES: usize = 4096;
/// Build ids whose file is remembered.
const MAX_BUILD_IDS: usize = 256;
/// Largest ELF file whose DWARF is parsed (a frame's source line); bigger ones give their ELF
/// symbols only, so one huge debug build cannot hold up the event loop.
const MAX_DWARF_FILE_BYTES: u64 = 64 << 20;
/// A victim takes the stack of its trigger captured at most this long before its own mark.
const MATCH_WINDOW_NS: u64 = 1_000_000_000;

/// Symbolizes stack records and hands them to the events of their invocation.
pub struct StackSymbolizer {
    mode: StackMode,
    host_root: PathBuf,
    kernel: Option<SymbolTable>,
    user: Symbolizer,
    normalizer: Normalizer,
    files: HashSet<PathBuf>,
    /// Frames already symbolized, by file and offset (a storm's stacks repeat).
    named: HashMap<(PathBuf, u64), Frame>,
    build_ids: HashMap<Vec<u8>, PathBuf>,
    recent: VecDeque<(i32, u64, TriggerStack)>,
}

impl StackSymbolizer {
    /// Copies `/proc/kallsyms` now (call while privileged); user files are read under
    /// `host_root`.
    pub fn new(mode: StackMode, host_root: &Path) -> Self {
        let kernel = match mode {
            StackMode::None => None,
            _ => {
                let path = host_root.join("proc/kallsyms");
                match SymbolTable::read(&path) {
                    Ok(t) => {
                        tracing::debug!(symbols = t.len(), "kernel text symbols kept");
                        Some(t)
                    }
                    Err(e) => {
                        tracing::warn!("kernel stacks left unsymbolized: {}: {e}", path.display());
                        None
                    }
                }
            }
        };
        let mut build_ids = HashMap::new();
        if mode == StackMode::All {
            seed_build_ids(&mut build_ids);
        }
        Self {
            mode,
            host_root: host_root.to_path_buf(),
            kernel,
            user: Symbolizer::new(),
            normalizer: Normalizer::builder().enable_build_ids(true).build(),
            files: HashSet::new(),
            named: HashMap::new(),
            build_ids,
            recent: VecDeque::new(),
        }
    }

    pub fn mode(&self) -> StackMode {
        self.mode
    }

    /// Symbolizes one stack record and keeps it for the victims of its invocation.
    pub fn push(&mut self, rec: &StackRecord) {
        let user = self.user_frames(rec);
        let mut kernel = self.kernel_frames(rec.kernel_frames());
        // The capturing program and the tracepoint's own frames are not the kernel's path.
        let ours = kernel
            .iter()
            .take_while(|f| f.symbol.as_deref().is_some_and(is_tracing_frame))
            .count();
        kernel.drain(..ours);
        let summary = summary::summary(&user);
        let stack = TriggerStack {
            kernel,
            user,
            summary,
        };
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent
            .push_back((rec.trigger_pid, rec.ktime_ns, stack));
    }

    /// Puts the stack of the event's trigger, captured at its invocation, into `trigger.stack`.
    pub fn attach(&self, ev: &mut OomEvent) {
        let Some(t) = ev.trigger.as_mut() else { return };
        let found = self.recent.iter().rev().find(|(pid, ktime, _)| {
            *pid == t.pid
                && *ktime <= ev.ktime_ns.saturating_add(MATCH_WINDOW_NS)
                && ev.ktime_ns.saturating_sub(*ktime) <= MATCH_WINDOW_NS
        });
        if let Some((_, _, stack)) = found {
            t.stack = Some(stack.clone());
        }
    }

    fn kernel_frames(&self, addrs: &[u64]) -> Vec<Frame> {
        addrs
            .iter()
            .map(|a| match self.kernel.as_ref().and_then(|k| k.lookup(*a)) {
                Some(f) => Frame {
                    symbol: Some(f.name.to_string()),
                    module: Some(f.module.unwrap_or("vmlinux").to_string()),
                    offset: f.offset,
                    ..Frame::default()
                },
                None => unnamed("kernel", *a),
            })
            .collect()
    }

    /// User frames, located without touching the trigger's `/proc` entry when the record
    /// itself says enough: by the kernel's build id + file offset (files remembered per build
    /// id, the program file learned from the path the eBPF side read), then in the program's
    /// own code range; only what is left is looked up in the trigger's mappings. The OOM
    /// killer holds the victim's task lock while it prints "Killed process" to the consoles
    /// (milliseconds on a serial console), and opening `/proc/<pid>/maps` of that victim spins
    /// on the same lock. Else `buildid:<hex>+0xoffset`.
    fn user_frames(&mut self, rec: &StackRecord) -> Vec<Frame> {
        let addrs = user_space_prefix(rec.user_frames());
        if addrs.is_empty() || rec.trigger_tgid <= 0 {
            return Vec::new();
        }
        let mut located = self.locate_by_build_id(rec, addrs.len());
        if located.iter().any(Option::is_none) {
            self.locate_in_program(rec, addrs, &mut located);
        }
        if located.iter().any(Option::is_none) {
            let live = self.locate_live(rec.trigger_tgid, addrs);
            for (slot, l) in located.iter_mut().zip(live) {
                if slot.is_none() {
                    *slot = l;
                }
            }
        }
        // Build ids no file was found for.
        for (slot, b) in located.iter_mut().zip(rec.build_id_frames()) {
            if slot.is_none() && b.status == BUILD_ID_VALID {
                *slot = Some(Located::BuildId(hex(&b.build_id), b.offset_or_ip));
            }
        }
        if located.iter().any(Option::is_none) {
            self.locate_as_exec_addr(rec, addrs, &mut located);
        }
        let mut frames: Vec<Frame> = located
            .into_iter()
            .zip(addrs)
            .map(|(l, a)| match l {
                Some(Located::File(path, off)) => self.symbolize_file(&path, off),
                Some(Located::BuildId(id, off)) => unnamed(&format!("buildid:{id}"), off),
                Some(Located::ExecAddr(path, addr)) => self.symbolize_exec_addr(&path, addr),
                None => unnamed("[unknown]", *a),
            })
            .collect();
        self.name_jit_frames(rec.trigger_tgid, &mut frames);
        frames
    }

    /// The frames whose build id the kernel read and whose file is known (the program file is
    /// learned on the first unknown id).
    fn locate_by_build_id(&mut self, rec: &StackRecord, n: usize) -> Vec<Option<Located>> {
        let ids = rec.build_id_frames();
        let unknown = |me: &Self| {
            ids.iter()
                .any(|b| b.status == BUILD_ID_VALID && !me.build_ids.contains_key(&b.build_id[..]))
        };
        if unknown(self) {
            self.learn_exe(rec);
        }
        (0..n)
            .map(|i| {
                let b = ids.get(i).filter(|b| b.status == BUILD_ID_VALID)?;
                let path = self.build_ids.get(&b.build_id[..])?;
                Some(Located::File(path.clone(), b.offset_or_ip))
            })
            .collect()
    }

    /// Frames without a build id (the kernel could not read it, or the program has none:
    /// Go's linker writes none by default) in the program's code (`[start_code, end_code)`)
    /// are located in its file through its executable segment, PIE or not ([`exe_code`]),
    /// whether the trigger still lives or not.
    fn locate_in_program(&self, rec: &StackRecord, addrs: &[u64], located: &mut [Option<Located>]) {
        let Some(exe) = self.exe_file(rec) else {
            return;
        };
        let Some(code) = exe_code::Code::of(&exe, rec.start_code, rec.end_code) else {
            return;
        };
        for (slot, a) in located.iter_mut().zip(addrs) {
            if slot.is_none() {
                *slot = code
                    .file_offset(*a)
                    .map(|off| Located::File(exe.clone(), off));
            }
        }
    }

    /// Without the code range (not read): what is still unknown once the mappings are gone is
    /// taken as the program file's own virtual address (right for a program that is not
    /// position-independent).
    fn locate_as_exec_addr(
        &self,
        rec: &StackRecord,
        addrs: &[u64],
        located: &mut [Option<Located>],
    ) {
        if rec.start_code != 0 {
            return;
        }
        let Some(exe) = self.exe_file(rec) else {
            return;
        };
        for (slot, a) in located.iter_mut().zip(addrs) {
            if slot.is_none() {
                *slot = Some(Located::ExecAddr(exe.clone(), *a));
            }
        }
    }

    /// Frames still `[unknown]` (anonymous executable memory: a JIT's code) named from the
    /// process's perf map, when it writes one.
    fn name_jit_frames(&self, tgid: i32, frames: &mut [Frame]) {
        let unknown: Vec<usize> = (0..frames.len())
            .filter(|i| {
                frames[*i].symbol.is_none() && frames[*i].module.as_deref() == Some("[unknown]")
            })
            .collect();
        if unknown.is_empty() {
            return;
        }
        let addrs: Vec<u64> = unknown.iter().map(|i| frames[*i].offset).collect();
        let files = perf_map::candidates(&self.host_root, tgid);
        for (i, found) in unknown.into_iter().zip(perf_map::lookup(&files, &addrs)) {
            if let Some((name, offset)) = found {
                frames[i] = Frame {
                    symbol: Some(name),
                    module: Some(format!("perf-{tgid}.map")),
                    offset,
                    ..Frame::default()
                };
            }
        }
    }

    /// Each address's file and file offset from the live process's mappings (none once it has
    /// exited); remembers each file's build id.
    fn locate_live(&mut self, tgid: i32, addrs: &[u64]) -> Vec<Option<Located>> {
        let opts = NormalizeOpts {
            map_files: false,
            ..NormalizeOpts::default()
        };
        let Ok(out) =
            self.normalizer
                .normalize_user_addrs_opts(Pid::from(tgid as u32), addrs, &opts)
        else {
            return vec![None; addrs.len()];
        };
        let elfs: Vec<Option<(PathBuf, Option<Vec<u8>>)>> = out
            .meta
            .iter()
            .map(|meta| match meta {
                UserMeta::Elf(e) => {
                    Some((e.path.clone(), e.build_id.as_deref().map(<[u8]>::to_vec)))
                }
                _ => None,
            })
            .collect();
        let outputs = out.outputs.clone();
        drop(out);
        let metas: Vec<Option<PathBuf>> = elfs
            .into_iter()
            .map(|e| e.and_then(|(path, id)| self.openable(tgid, &path, id.as_deref())))
            .collect();
        outputs
            .iter()
            .map(|(off, idx)| {
                metas
                    .get(*idx)
                    .cloned()
                    .flatten()
                    .map(|p| Located::File(p, *off))
            })
            .collect()
    }

    /// The program file whose path the eBPF side read (the trigger may be gone): remembered by
    /// its build id, read from the file itself, so a path that names another file is never
    /// used.
    fn learn_exe(&mut self, rec: &StackRecord) {
        let Some(file) = self.exe_file(rec) else {
            return;
        };
        if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(&file) {
            if self.build_ids.len() >= MAX_BUILD_IDS {
                self.build_ids.clear();
            }
            self.build_ids.insert(id.to_vec(), file);
        }
    }

    /// The trigger's program file as the eBPF side named it, below `host_root`, if it is a
    /// regular file there.
    fn exe_file(&self, rec: &StackRecord) -> Option<PathBuf> {
        let parts = rec.exe_path()?;
        let mut rel = PathBuf::new();
        for p in parts.iter().filter(|p| !p.is_empty()) {
            let p = std::str::from_utf8(p).unwrap_or_default();
            if p.is_empty() || p == ".." || p.contains('/') {
                return None;
            }
            rel.push(p);
        }
        let file = self.host_root.join(&rel);
        // The names are the workload's: never open a FIFO or device that happens to have them.
        file.is_file().then_some(file)
    }

    /// A path to the mapped file the agent can open later: below `host_root`, else through the
    /// process's root; remembered by build id.
    fn openable(&mut self, tgid: i32, path: &Path, build_id: Option<&[u8]>) -> Option<PathBuf> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let host = self.host_root.join(rel);
        let via_proc = self.host_root.join(format!("proc/{tgid}/root")).join(rel);
        let chosen = [host, via_proc].into_iter().find(|p| p.is_file())?;
        if let Some(id) = build_id {
            if self.build_ids.len() >= MAX_BUILD_IDS {
                self.build_ids.clear();
            }
            self.build_ids.insert(id.to_vec(), chosen.clone());
        }
        Some(chosen)
    }

    /// `addr` as a virtual address of the (non-PIE) program `path`; `[unknown]+addr` when it
    /// is none of its symbols' (a PIE program's runtime addresses are far from its file's).
    fn symbolize_exec_addr(&mut self, path: &Path, addr: u64) -> Frame {
        let src = Source::Elf(Elf {
            debug_syms: false,
            ..Elf::new(path)
        });
        match self.user.symbolize_single(&src, Input::VirtOffset(addr)) {
            // Within the symbol's own size: past a sized symbol's end (`_end` and the like, for
            // a JIT's address far above the program) is no match.
            Ok(Symbolized::Sym(s)) if s.size.is_some_and(|n| s.offset < n) => Frame {
                symbol: Some(s.name.to_string()),
                module: Some(path.file_name().map(lossy).unwrap_or_default()),
                offset: s.offset as u64,
                ..Frame::default()
            },
            _ => unnamed("[unknown]", addr),
        }
    }

    fn symbolize_file(&mut self, path: &Path, offset: u64) -> Frame {
        let key = (path.to_path_buf(), offset);
        if let Some(f) = self.named.get(&key) {
            return f.clone();
        }
        if !self.files.contains(path) {
            if self.files.len() >= MAX_CACHED_FILES {
                self.files.clear();
                self.named.clear();
                self.user = Symbolizer::new();
            }
            self.files.insert(path.to_path_buf());
        }
        let module = path
            .file_name()
            .map(lossy)
            .unwrap_or_else(|| lossy(path.as_os_str()));
        // DWARF (names and source lines) when the file has some and is small enough to parse
        // within the time bound; ELF symbols otherwise, and when the DWARF named nothing (Go's
        // compressed sections, which this build does not read).
        let dwarf = std::fs::metadata(path).is_ok_and(|m| m.len() <= MAX_DWARF_FILE_BYTES);
        let frame = file_symbol(&self.user, path, offset, &module, dwarf)
            .or_else(|| dwarf.then(|| file_symbol(&self.user, path, offset, &module, false))?)
            .unwrap_or_else(|| unnamed(&module, offset));
        if self.named.len() >= MAX_NAMED_FRAMES {
            self.named.clear();
        }
        self.named.insert(key, frame.clone());
        frame
    }
}

/// The frame at `offset` in the ELF file `path`, from its DWARF (`debug_syms`) or its symbol
/// tables.
fn file_symbol(
    user: &Symbolizer,
    path: &Path,
    offset: u64,
    module: &str,
    debug_syms: bool,
) -> Option<Frame> {
    let src = Source::Elf(Elf {
        debug_syms,
        ..Elf::new(path)
    });
    match user.symbolize_single(&src, Input::FileOffset(offset)) {
        Ok(Symbolized::Sym(s)) => {
            let code = s.code_info.as_deref();
            Some(Frame {
                symbol: Some(s.name.to_string()),
                module: Some(module.to_string()),
                offset: s.offset as u64,
                file: code.map(|c| lossy(c.to_path().as_os_str())),
                line: code.and_then(|c| c.line),
            })
        }
        _ => None,
    }
}

#[derive(Clone, Debug)]
enum Located {
    File(PathBuf, u64),
    BuildId(String, u64),
    /// An address that may be the program file's own virtual address (a non-PIE program).
    ExecAddr(PathBuf, u64),
}

/// `oomwatch_stacks_dropped_total`: trigger stacks lost because the `STACKS` ring was full.
pub fn drops_collector(
    counters: Arc<Mutex<PerCpuArray<MapData, u64>>>,
    mode: StackMode,
) -> Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync> {
    Box::new(move || {
        if mode == StackMode::None {
            return Vec::new();
        }
        let c = counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut value = Counter::default();
        value.set_value(read_counter(&c, counter::STACK_DROPS) as f64);
        let mut m = Metric::default();
        m.set_counter(value);
        let mut fam = MetricFamily::default();
        fam.set_name("oomwatch_stacks_dropped_total".to_owned());
        fam.set_help(
            "Trigger stacks lost because their ring buffer was full (the victim records were \
             kept; their trigger.stack is null)."
                .to_owned(),
        );
        fam.set_field_type(MetricType::COUNTER);
        fam.set_metric(vec![m]);
        vec![fam]
    })
}

/// The frames of the eBPF program that took the stack and of the tracepoint that ran it.
fn is_tracing_frame(symbol: &str) -> bool {
    ["bpf_prog_", "bpf_trace_run", "__traceiter_", "__bpf_trace_"]
        .iter()
        .any(|p| symbol.starts_with(p))
}

/// The agent's own mapped files by build id: the C library and loader are the host's, the ones
/// most triggers map, so their frames are named even when the trigger is gone before its
/// mappings are read.
fn seed_build_ids(ids: &mut HashMap<Vec<u8>, PathBuf>) {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let files: HashSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .collect();
    for f in files {
        if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(f) {
            ids.insert(id.to_vec(), PathBuf::from(f));
        }
    }
}

fn unnamed(module: &str, offset: u64) -> Frame {
    Frame {
        symbol: None,
        module: Some(module.to_string()),
        offset,
        ..Frame::default()
    }
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The user stack up to its first address that is not a user-space one (0, or the kernel's
/// half of the address space: the top bit set on x86-64 and arm64). Frame-pointer walks of code
/// built without frame pointers end in such garbage; a frame after it means nothing.
fn user_space_prefix(addrs: &[u64]) -> &[u64] {
    let end = addrs
        .iter()
        .position(|&a| a == 0 || a >= 1 << 63)
        .unwrap_or(addrs.len());
    &addrs[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Trigger;
    use oomwatch_common::{stack_field, RecordKind};
    use std::time::SystemTime;

    #[inline(never)]
    fn marker_for_stack_test() -> u64 {
        std::hint::black_box(marker_for_stack_test as *const () as usize as u64)
    }

    /// `frame` names [`marker_for_stack_test`] in this test binary.
    fn assert_is_the_marker(frame: &Frame) {
        assert!(
            frame
                .symbol
                .as_deref()
                .is_some_and(|n| n.contains("marker_for_stack_test")),
            "{frame:?}"
        );
        assert!(frame
            .module
            .as_deref()
            .is_some_and(|m| m.starts_with("oomwatch")));
    }

    fn record(pid: i32) -> StackRecord {
        // SAFETY: StackRecord is plain #[repr(C)] integers and byte arrays (aya::Pod): all
        // zeroes is a valid value.
        let mut r: StackRecord = unsafe { std::mem::zeroed() };
        r.kind = RecordKind::TriggerStack as u32;
        r.trigger_pid = pid;
        r.trigger_tgid = pid;
        r.ktime_ns = 1_000;
        r
    }

    fn event(trigger_pid: i32) -> OomEvent {
        let mut ev = OomEvent::new(7, 1_500, SystemTime::UNIX_EPOCH, "h".into());
        ev.trigger = Some(Trigger {
            pid: trigger_pid,
            tgid: trigger_pid,
            comm: "t".into(),
            ..Trigger::default()
        });
        ev
    }

    #[test]
    fn the_user_stack_ends_at_its_first_non_user_address() {
        let k = 0xffff_a9c8_1648_f000;
        assert_eq!(
            user_space_prefix(&[0x7f00_0000_1234, 0x55_0000, k, 0x55_0004]).len(),
            2
        );
        assert_eq!(user_space_prefix(&[0x40_1000, 0, 0x40_2000]), &[0x40_1000]);
        assert_eq!(user_space_prefix(&[k]), &[] as &[u64]);
        assert_eq!(user_space_prefix(&[1, 2]).len(), 2);
    }

    #[test]
    fn a_live_processes_frames_are_named_and_go_to_its_events_only() {
        let me = std::process::id() as i32;
        let mut s = StackSymbolizer::new(StackMode::All, Path::new("/"));
        let mut r = record(me);
        r.present = stack_field::USER;
        r.user[0] = marker_for_stack_test() + 1;
        r.user_bytes = 8;
        s.push(&r);
        let mut ev = event(me);
        s.attach(&mut ev);
        let stack = ev.trigger.unwrap().stack.expect("the trigger's stack");
        let leaf = &stack.user[0];
        assert_is_the_marker(leaf);
        // Another trigger's event gets nothing.
        let mut other = event(me + 1);
        s.attach(&mut other);
        assert!(other.trigger.unwrap().stack.is_none());
    }

    #[test]
    fn kernel_frames_are_named_from_the_kallsyms_copy_without_the_tracing_frames() {
        if !oomwatch_testkit::root_or_skip("to read kernel addresses in /proc/kallsyms") {
            return;
        }
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let addr = |name: &str| {
            kallsyms
                .lines()
                .find(|l| l.split_whitespace().nth(2) == Some(name))
                .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
                .unwrap_or_else(|| panic!("{name} not in kallsyms"))
        };
        let mut s = StackSymbolizer::new(StackMode::Kernel, Path::new("/"));
        let mut r = record(1);
        r.present = stack_field::KERNEL;
        r.kernel[0] = addr("bpf_trace_run2") + 8;
        r.kernel[1] = addr("out_of_memory") + 8;
        r.kernel_bytes = 16;
        s.push(&r);
        let mut ev = event(1);
        s.attach(&mut ev);
        let stack = ev.trigger.unwrap().stack.unwrap();
        assert_eq!(stack.kernel.len(), 1, "{stack:?}");
        assert_eq!(stack.kernel[0].symbol.as_deref(), Some("out_of_memory"));
        assert_eq!(stack.kernel[0].offset, 8);
        assert!(stack.user.is_empty() && stack.summary.is_none());
    }

    #[test]
    fn unknown_build_ids_and_gone_processes_give_module_offset_frames() {
        let mut s = StackSymbolizer::new(StackMode::All, Path::new("/nonexistent-root"));
        // No process has pid i32::MAX: its mappings cannot be read.
        let mut r = record(i32::MAX);
        r.present = stack_field::USER | stack_field::USER_BUILD_ID;
        r.user[0] = 0x1234;
        r.user_bytes = 8;
        r.user_build_ids[0].status = BUILD_ID_VALID;
        r.user_build_ids[0].build_id = [0xab; 20];
        r.user_build_ids[0].offset_or_ip = 0x99;
        r.build_id_bytes = 32;
        s.push(&r);
        let mut ev = event(i32::MAX);
        s.attach(&mut ev);
        let stack = ev.trigger.unwrap().stack.unwrap();
        assert_eq!(stack.user[0].symbol, None);
        assert_eq!(
            stack.user[0].display(),
            format!("buildid:{}+0x99", "ab".repeat(20))
        );
    }

    /// A position-independent program that is gone and whose frames carry no build id (the
    /// kernel could not read it): its frames are found in its file through the code range the
    /// eBPF side read (`mm->start_code`, `end_code`); without that range they stay unknown.
    #[test]
    fn a_gone_pie_programs_frames_are_found_through_its_code_range() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let (start, end) = exe_code::own_code_range();
        let mut s = StackSymbolizer::new(StackMode::All, Path::new("/"));
        let mut symbolized = |range: (u64, u64)| {
            let mut r = record(i32::MAX);
            r.present = stack_field::USER | stack_field::USER_BUILD_ID;
            r.user[0] = marker_for_stack_test() + 1;
            r.user_bytes = 8;
            r.user_build_ids[0].status = oomwatch_common::BUILD_ID_IP;
            r.user_build_ids[0].offset_or_ip = r.user[0];
            r.build_id_bytes = 32;
            let parts: Vec<&[u8]> = exe.iter().skip(1).map(|p| p.as_encoded_bytes()).collect();
            for (i, p) in parts.iter().rev().enumerate() {
                r.exe_path[i][..p.len()].copy_from_slice(p);
            }
            r.exe_depth = parts.len() as u32;
            (r.start_code, r.end_code) = range;
            s.push(&r);
            let mut ev = event(i32::MAX);
            s.attach(&mut ev);
            ev.trigger.unwrap().stack.unwrap().user[0].clone()
        };
        let leaf = symbolized((start, end));
        assert_is_the_marker(&leaf);
        let unknown = symbolized((0, 0));
        assert_eq!(unknown.module.as_deref(), Some("[unknown]"), "{unknown:?}");
    }

    /// The program path comes from the workload's own file names: a FIFO at that path under
    /// the host root is never opened (it would block), `..` is never followed.
    #[test]
    fn a_hostile_program_path_is_not_opened() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("a")).unwrap();
        let fifo = std::ffi::CString::new(root.path().join("a/fifo").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let mut s = StackSymbolizer::new(StackMode::All, root.path());
        for parts in [[&b"fifo"[..], &b"a"[..]], [&b"passwd"[..], &b".."[..]]] {
            let mut r = record(i32::MAX);
            r.present = stack_field::USER | stack_field::USER_BUILD_ID;
            r.user[0] = 0x1234;
            r.user_bytes = 8;
            r.user_build_ids[0].status = BUILD_ID_VALID;
            r.user_build_ids[0].build_id = [0xcd; 20];
            r.user_build_ids[0].offset_or_ip = 0x10;
            r.build_id_bytes = 32;
            for (i, p) in parts.iter().enumerate() {
                r.exe_path[i][..p.len()].copy_from_slice(p);
            }
            r.exe_depth = 2;
            s.push(&r);
            let mut ev = event(i32::MAX);
            s.attach(&mut ev);
            let stack = ev.trigger.unwrap().stack.unwrap();
            assert!(stack.user[0]
                .module
                .as_deref()
                .unwrap()
                .starts_with("buildid:"));
        }
    }
}
