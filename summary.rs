//! `trigger.stack.summary`: the innermost named user frames that are not the allocator's own
//! (malloc and friends, mmap/brk, memset/memcpy, the C library's and loader's internals).

/// Frames kept in the summary.
const SUMMARY_FRAMES: usize = 3;

/// Symbols that are allocator or C-library internals, by exact name or prefix.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
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
];

/// Whether a user frame belongs to the allocator: by symbol, or by module (the C library, the
/// dynamic loader, jemalloc/tcmalloc/mimalloc) when it has no symbol.
pub fn is_allocator(symbol: Option<&str>, module: Option<&str>) -> bool {
    if let Some(s) = symbol {
        return ALLOCATOR_PREFIXES.iter().any(|p| s.starts_with(p));
    }
    module.is_some_and(|m| {
        ["libc.so", "libc-", "ld-linux", "libjemalloc", "libtcmalloc", "libmimalloc"]
            .iter()
            .any(|p| m.starts_with(p))
    })
}

/// `leaf <- caller <- caller's caller` from innermost-first `(symbol, module)` pairs, skipping
/// the allocator's frames at the top; `None` when no named frame remains.
pub fn summary<'a>(frames: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>) -> Option<String> {
    let names: Vec<&str> = frames
        .into_iter()
        .skip_while(|(s, m)| is_allocator(*s, *m))
        .filter_map(|(s, _)| s)
        .take(SUMMARY_FRAMES)
        .collect();
    (!names.is_empty()).then(|| names.join(" <- "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_frames_at_the_top_are_skipped() {
        let frames = [
            (Some("__memset_avx2_unaligned_erms"), Some("libc.so.6")),
            (Some("_int_malloc"), Some("libc.so.6")),
            (Some("malloc"), Some("libc.so.6")),
            (Some("leaky_cache_insert"), Some("leaky")),
            (Some("serve_request"), Some("leaky")),
            (Some("main"), Some("leaky")),
            (Some("__libc_start_call_main"), Some("libc.so.6")),
        ];
        assert_eq!(
            summary(frames).as_deref(),
            Some("leaky_cache_insert <- serve_request <- main")
        );
    }

    #[test]
    fn unnamed_frames_are_skipped_and_nothing_named_gives_none() {
        let frames = [
            (None, Some("libc.so.6")),
            (None, Some("leaky")),
            (Some("grow"), Some("leaky")),
        ];
        // An unnamed frame of the program itself ends the allocator's part but names nothing.
        assert_eq!(summary(frames).as_deref(), Some("grow"));
        assert_eq!(summary([(None, Some("x")), (None, None)]), None);
        assert_eq!(summary(std::iter::empty()), None);
    }
}
