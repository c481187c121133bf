//! `trigger.stack.summary`: the innermost named user frames that are not the allocator's own
//! (malloc and friends, mmap/brk, memset/memcpy, the C library's and loader's internals, Go's
//! runtime, CPython's memory API, V8's engine and builtins).
use crate::record::Frame;

/// Frames kept in the summary.
const SUMMARY_FRAMES: usize = 3;

/// Symbols that are allocator or C-library internals, by prefix.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "mmap",
    "munmap",
    "mremap",
    "brk",
    "sbrk",
    "memset",
    "memcpy",
    "memmove",
    "_int_",
    "__libc_",
    "__GI_",
    "__mem",
    "__mmap",
    "__brk",
    "__sbrk",
    "__default_morecore",
    "sysmalloc",
    "tcache",
    "__malloc",
    "je_",
    "tc_",
    "operator new",
    "_Znwm",
    "_Znam",
    "asm_exc_page_fault",
    "exc_page_fault",
    "page_fault",
    // Go's runtime: every frame above the user's code (mallocgc, growslice, memclr, the heap).
    "runtime.",
    // CPython's memory API.
    "PyMem_",
    "_PyMem_",
    "PyObject_Malloc",
    "_PyObject_Malloc",
    "PyObject_Calloc",
    "_PyObject_Calloc",
    "PyObject_Realloc",
    "_PyObject_Realloc",
    "pymalloc_",
    "PyObject_GC_",
    "_PyObject_GC_",
    // V8 (Node.js): the engine's C++ (object and heap allocation), its embedded builtins and
    // the perf map's builtin, bytecode-handler and stub entries above the script's frames.
    "v8::",
    "Builtins_",
    "Builtin:",
    "BytecodeHandler:",
    "Stub:",
];

/// Modules that are the C library, the loader or an allocator library.
const ALLOCATOR_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "libjemalloc",
    "libtcmalloc",
    "libmimalloc",
];

/// Whether a user frame belongs to the allocator: by symbol, or by module when it has none.
pub fn is_allocator(symbol: Option<&str>, module: Option<&str>) -> bool {
    if let Some(s) = symbol {
        return ALLOCATOR_PREFIXES.iter().any(|p| s.starts_with(p));
    }
    module.is_some_and(|m| ALLOCATOR_MODULES.iter().any(|p| m.starts_with(p)))
}

/// `leaf <- caller <- caller's caller` from innermost-first frames, skipping the allocator's
/// frames at the top; a frame without a symbol shows as `module+0xoffset`. `None` when no frame
/// remains.
pub fn summary(frames: &[Frame]) -> Option<String> {
    let names: Vec<String> = frames
        .iter()
        .skip_while(|f| is_allocator(f.symbol.as_deref(), f.module.as_deref()))
        .take(SUMMARY_FRAMES)
        .map(|f| match &f.symbol {
            Some(s) => s.clone(),
            None => f.display(),
        })
        .collect();
    (!names.is_empty()).then(|| names.join(" <- "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(symbol: Option<&str>, module: &str, offset: u64) -> Frame {
        Frame {
            symbol: symbol.map(str::to_string),
            module: Some(module.to_string()),
            offset,
            ..Frame::default()
        }
    }

    #[test]
    fn allocator_frames_at_the_top_are_skipped() {
        let frames = [
            f(Some("__memset_avx2_unaligned_erms"), "libc.so.6", 1),
            f(Some("_int_malloc"), "libc.so.6", 2),
            f(Some("malloc"), "libc.so.6", 3),
            f(Some("leaky_cache_insert"), "leaky", 4),
            f(Some("serve_request"), "leaky", 5),
            f(Some("main"), "leaky", 6),
            f(Some("__libc_start_call_main"), "libc.so.6", 7),
        ];
        assert_eq!(
            summary(&frames).as_deref(),
            Some("leaky_cache_insert <- serve_request <- main")
        );
    }

    #[test]
    fn unnamed_frames_show_as_module_offset_and_nothing_gives_none() {
        let frames = [
            f(None, "libc.so.6", 0x10),
            f(None, "leaky", 0x1189),
            f(Some("grow"), "leaky", 0x20),
        ];
        assert_eq!(summary(&frames).as_deref(), Some("leaky+0x1189 <- grow"));
        assert_eq!(summary(&[f(Some("mmap64"), "libc.so.6", 1)]), None);
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn go_runtime_and_cpython_allocator_frames_are_skipped() {
        let go = [
            f(Some("runtime.memclrNoHeapPointers"), "app", 1),
            f(Some("runtime.mallocgc"), "app", 2),
            f(Some("runtime.growslice"), "app", 3),
            f(Some("main.leakyCacheInsert"), "app", 4),
            f(Some("main.serveRequest"), "app", 5),
        ];
        assert_eq!(
            summary(&go).as_deref(),
            Some("main.leakyCacheInsert <- main.serveRequest")
        );
        let py = [
            f(Some("_PyObject_Malloc"), "python3.11", 1),
            f(Some("PyMem_Realloc"), "python3.11", 2),
            f(Some("list_resize"), "python3.11", 3),
        ];
        assert_eq!(summary(&py).as_deref(), Some("list_resize"));
    }

    #[test]
    fn v8_engine_frames_above_the_script_are_skipped() {
        let node = [
            f(
                Some("v8::internal::Factory::InitializeJSObjectBody(v8::internal::JSObject)"),
                "node",
                1,
            ),
            f(
                Some("v8::internal::JSObject::New(v8::internal::Handle<v8::internal::JSFunction>)"),
                "node",
                2,
            ),
            f(Some("Builtins_FastNewObject"), "node", 3),
            f(Some("Builtin:FastNewObject"), "perf-7.map", 4),
            f(
                Some("JS:*leakyCacheInsert /tmp/leaky.js:2"),
                "perf-7.map",
                5,
            ),
            f(Some("JS:*serveRequest /tmp/leaky.js:5"), "perf-7.map", 6),
        ];
        assert_eq!(
            summary(&node).as_deref(),
            Some("JS:*leakyCacheInsert /tmp/leaky.js:2 <- JS:*serveRequest /tmp/leaky.js:5")
        );
    }
}
