//! GFP masks (`oc->gfp_mask`, a `u32`) decoded into the names the kernel prints with `%pGg`,
//! e.g. `0xcc0` → `GFP_KERNEL`, `0x140cca` → `GFP_HIGHUSER_MOVABLE|__GFP_COMP` (on 6.18).
//!
//! The `___GFP_*` bit positions differ across kernel versions and configurations, so no bit
//! table is written here. Two sources, best first:
//!
//! 1. The running kernel's BTF ([`GfpDecoder::from_btf`]). Since Linux 6.10 (commit
//!    772dd0342727, "mm: enumerate all gfp flags") `include/linux/gfp_types.h` numbers the bits
//!    with an anonymous `enum { ___GFP_DMA_BIT, ..., ___GFP_LAST_BIT }`, which BTF carries.
//!    What is encoded here is only what the headers say in names: which `__GFP_*` flags each
//!    composite (`GFP_KERNEL`, ...) ORs together (`gfp_types.h`), and the order in which `%pGg`
//!    tries names (`__def_gfpflag_names` in `include/trace/events/mmflags.h`).
//! 2. The kernel log's own decoding, for kernels without those enumerators (before 6.10): the
//!    text in `gfp_mask=0xcc0(GFP_KERNEL)`, split by [`names_from_log`] and remembered by
//!    [`GfpDecoder::learn`], so a mask once seen in the log decodes later too.
//!
//! `%pGg` (`format_flags()` in `lib/vsprintf.c`) walks the name table in order; an entry
//! whose bits are all still set is printed and its bits cleared. Bits no entry names are
//! printed last as one hex number (`%#lx`, e.g. `__GFP_HIGH|0x4000000`); a zero mask prints
//! nothing.
pub mod table;

use std::collections::HashMap;

use crate::source::btf::Btf;

/// Bound on the masks [`GfpDecoder::learn`] remembers (a handful occur in practice).
const MAX_LEARNED: usize = 1024;

/// The `___GFP_<X>_BIT` enumerators this module knows, `<X>` in gfp_types.h enum order.
/// `UNUSED` (bit 9) and `LAST` are not flags. Bits of enumerators not listed here (added by
/// a newer kernel) are printed as hex, like bits the kernel does not name.
const FLAGS: &[&str] = &[
    "DMA",
    "HIGHMEM",
    "DMA32",
    "MOVABLE",
    "RECLAIMABLE",
    "HIGH",
    "IO",
    "FS",
    "ZERO",
    "DIRECT_RECLAIM",
    "KSWAPD_RECLAIM",
    "WRITE",
    "NOWARN",
    "RETRY_MAYFAIL",
    "NOFAIL",
    "NORETRY",
    "MEMALLOC",
    "COMP",
    "NOMEMALLOC",
    "HARDWALL",
    "THISNODE",
    "ACCOUNT",
    "ZEROTAGS",
    "SKIP_ZERO",
    "SKIP_KASAN",
    "NOLOCKDEP",
    "NO_OBJ_EXT",
];

/// Flags whose enumerator exists only with a config option (`CONFIG_KASAN_HW_TAGS`,
/// `CONFIG_LOCKDEP`, `CONFIG_SLAB_OBJ_EXT`); without it the header defines them as 0.
const OPTIONAL: &[&str] = &["SKIP_ZERO", "SKIP_KASAN", "NOLOCKDEP", "NO_OBJ_EXT"];

/// The composites of `include/linux/gfp_types.h` (6.10+): `(name, OR of, AND NOT)`, each part
/// a flag (`IO` = `__GFP_IO`) or a composite defined earlier in this list.
const COMPOSITES: &[(&str, &[&str], &[&str])] = &[
    ("__GFP_RECLAIM", &["DIRECT_RECLAIM", "KSWAPD_RECLAIM"], &[]),
    ("GFP_ATOMIC", &["HIGH", "KSWAPD_RECLAIM"], &[]),
    ("GFP_KERNEL", &["__GFP_RECLAIM", "IO", "FS"], &[]),
    ("GFP_KERNEL_ACCOUNT", &["GFP_KERNEL", "ACCOUNT"], &[]),
    ("GFP_NOWAIT", &["KSWAPD_RECLAIM", "NOWARN"], &[]),
    ("GFP_NOIO", &["__GFP_RECLAIM"], &[]),
    ("GFP_NOFS", &["__GFP_RECLAIM", "IO"], &[]),
    ("GFP_USER", &["__GFP_RECLAIM", "IO", "FS", "HARDWALL"], &[]),
    ("GFP_DMA", &["DMA"], &[]),
    ("GFP_DMA32", &["DMA32"], &[]),
    ("GFP_HIGHUSER", &["GFP_USER", "HIGHMEM"], &[]),
    (
        "GFP_HIGHUSER_MOVABLE",
        &["GFP_HIGHUSER", "MOVABLE", "SKIP_KASAN"],
        &[],
    ),
    (
        "GFP_TRANSHUGE_LIGHT",
        &["GFP_HIGHUSER_MOVABLE", "COMP", "NOMEMALLOC", "NOWARN"],
        &["__GFP_RECLAIM"],
    ),
    (
        "GFP_TRANSHUGE",
        &["GFP_TRANSHUGE_LIGHT", "DIRECT_RECLAIM"],
        &[],
    ),
];

/// `__def_gfpflag_names` up to the single flags: the composites, "most bits set go first".
const COMPOSITE_ORDER: &[&str] = &[
    "GFP_TRANSHUGE",
    "GFP_TRANSHUGE_LIGHT",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_HIGHUSER",
    "GFP_USER",
    "GFP_KERNEL_ACCOUNT",
    "GFP_KERNEL",
    "GFP_NOFS",
    "GFP_ATOMIC",
    "GFP_NOIO",
    "GFP_NOWAIT",
    "GFP_DMA",
];

/// The rest of `__def_gfpflag_names` in 6.10–6.14 (an explicit list; `SKIP_*` only with
/// `CONFIG_KASAN_HW_TAGS`; `NOLOCKDEP` and `NO_OBJ_EXT` are not named there).
const LISTED_REST: &[&str] = &[
    "HIGHMEM",
    "GFP_DMA32",
    "HIGH",
    "IO",
    "FS",
    "NOWARN",
    "RETRY_MAYFAIL",
    "NOFAIL",
    "NORETRY",
    "COMP",
    "ZERO",
    "NOMEMALLOC",
    "MEMALLOC",
    "HARDWALL",
    "THISNODE",
    "RECLAIMABLE",
    "MOVABLE",
    "ACCOUNT",
    "WRITE",
    "__GFP_RECLAIM",
    "DIRECT_RECLAIM",
    "KSWAPD_RECLAIM",
    "ZEROTAGS",
    "SKIP_ZERO",
    "SKIP_KASAN",
];

/// Which `__def_gfpflag_names` the kernel has after the composites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameTable {
    /// 6.10–6.14: `GFP_DMA32`, then an explicit list of single flags ([`LISTED_REST`]).
    Listed,
    /// 6.15+ (commit ca29a0bf1221, "tracing: gfp: Remove duplication of recording GFP
    /// flags"): `GFP_DMA32`, `__GFP_RECLAIM`, then every flag the kernel enumerates, in bit
    /// order (`TRACE_GFP_FLAGS`).
    Enumerated,
}

impl NameTable {
    /// The table of a kernel release such as `"6.18.44-fc-v669"`; [`NameTable::Enumerated`]
    /// when the release cannot be parsed.
    pub fn for_release(release: &str) -> NameTable {
        let mut parts = release.trim().split(['.', '-']);
        let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
        match (num(), num()) {
            (Some(major), Some(minor)) if (major, minor) < (6, 15) => NameTable::Listed,
            _ => NameTable::Enumerated,
        }
    }

    /// The running kernel's table, from `/proc/sys/kernel/osrelease`.
    pub fn running() -> NameTable {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or(NameTable::Enumerated, |r| NameTable::for_release(&r))
    }
}

/// Decodes GFP masks the way the running kernel's `%pGg` prints them.
#[derive(Clone, Debug, Default)]
pub struct GfpDecoder {
    /// `(mask, name)` in the order `%pGg` tries them; empty without a known bit layout.
    table: Vec<(u32, String)>,
    /// Decodings the kernel printed itself, by mask.
    learned: HashMap<u32, Vec<String>>,
}

impl GfpDecoder {
    /// From the running kernel's BTF; None when BTF lacks the ___GFP_*_BIT enumerators.
    pub fn from_btf(btf: &Btf) -> Option<GfpDecoder> {
        GfpDecoder::from_btf_with(btf, NameTable::running())
    }

    /// From a kernel's BTF and the name table of that kernel's release.
    pub fn from_btf_with(btf: &Btf, names: NameTable) -> Option<GfpDecoder> {
        let bit = |flag: &str| {
            let v = btf.enum_value(None, &format!("___GFP_{flag}_BIT")).ok()?;
            u32::try_from(v).ok()
        };
        GfpDecoder::from_bits(bit, names)
    }

    /// A decoder without a bit layout: it knows only masks taught by [`GfpDecoder::learn`].
    pub fn from_log_only() -> GfpDecoder {
        GfpDecoder::default()
    }

    /// From a lookup of `___GFP_<flag>_BIT` values. None when a flag that every 6.10+ kernel
    /// has is missing, a bit does not fit a `u32`, or two flags share a bit.
    fn from_bits(bit: impl Fn(&str) -> Option<u32>, names: NameTable) -> Option<GfpDecoder> {
        let last = bit("LAST")?;
        if last > 32 {
            return None;
        }
        let mut flags: HashMap<&str, u32> = HashMap::new();
        let mut used = 0u32;
        for &flag in FLAGS {
            match bit(flag) {
                Some(b) if b < last && used & (1 << b) == 0 => {
                    used |= 1 << b;
                    flags.insert(flag, 1 << b);
                }
                None if OPTIONAL.contains(&flag) => {}
                _ => return None,
            }
        }
        let mut masks = flags.clone();
        for &(name, or, and_not) in COMPOSITES {
            let of = |parts: &[&str]| parts.iter().fold(0, |m, p| m | masks.get(p).unwrap_or(&0));
            let mask = of(or) & !of(and_not);
            masks.insert(name, mask);
        }
        let entry = |part: &str| {
            let name = match part.starts_with("GFP_") || part.starts_with("__GFP_") {
                true => part.to_string(),
                false => format!("__GFP_{part}"),
            };
            masks.get(part).map(|&m| (m, name))
        };
        let mut order: Vec<&str> = COMPOSITE_ORDER.to_vec();
        match names {
            NameTable::Listed => order.extend(LISTED_REST),
            NameTable::Enumerated => {
                order.extend(["GFP_DMA32", "__GFP_RECLAIM"]);
                let mut singles: Vec<(&str, u32)> = flags.iter().map(|(f, m)| (*f, *m)).collect();
                singles.sort_by_key(|&(_, mask)| mask);
                order.extend(singles.into_iter().map(|(flag, _)| flag));
            }
        }
        let table = order.into_iter().filter_map(entry).collect();
        Some(GfpDecoder {
            table,
            learned: HashMap::new(),
        })
    }

    /// From a `(mask, name)` table in the order the kernel tries it (see `gfp_table`).
    pub fn from_table(table: Vec<(u32, String)>) -> GfpDecoder {
        GfpDecoder {
            table,
            learned: HashMap::new(),
        }
    }

    /// Whether the bit layout is known (built from BTF), not only learned masks.
    pub fn has_layout(&self) -> bool {
        !self.table.is_empty()
    }

    /// Remember how the kernel itself printed `mask` (e.g. from its OOM report); it then takes
    /// precedence over the BTF-derived decoding. Ignored once [`MAX_LEARNED`] masks are known.
    pub fn learn(&mut self, mask: u32, names: Vec<String>) {
        if self.learned.len() < MAX_LEARNED || self.learned.contains_key(&mask) {
            self.learned.insert(mask, names);
        }
    }

    /// [`GfpDecoder::learn`] from the log text, e.g. `(0x100cca, "GFP_HIGHUSER_MOVABLE")`.
    pub fn learn_from_log(&mut self, mask: u32, text: &str) {
        self.learn(mask, names_from_log(text));
    }

    /// The kernel's names for `mask`, or None when neither a layout nor the log tells.
    pub fn lookup(&self, mask: u32) -> Option<Vec<String>> {
        if let Some(names) = self.learned.get(&mask) {
            return Some(names.clone());
        }
        if mask != 0 && !self.has_layout() {
            return None;
        }
        let mut rest = mask;
        let mut out = Vec::new();
        for (m, name) in &self.table {
            if rest == 0 {
                break;
            }
            if rest & m == *m {
                out.push(name.clone());
                rest &= !m;
            }
        }
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        Some(out)
    }

    /// Names for a mask, kernel %pGg order (composites first); unknown bits as hex.
    /// Without a layout and not learned, the whole mask as hex.
    pub fn decode(&self, mask: u32) -> Vec<String> {
        self.lookup(mask)
            .unwrap_or_else(|| vec![format!("{mask:#x}")])
    }
}

/// "GFP_HIGHUSER_MOVABLE|__GFP_COMP" → ["GFP_HIGHUSER_MOVABLE", "__GFP_COMP"] (the kernel
/// log's own decoding, the text in `gfp_mask=0x…(…)`; surrounding parentheses are allowed).
pub fn names_from_log(text: &str) -> Vec<String> {
    let text = text.trim();
    let text = text.strip_prefix('(').unwrap_or(text);
    let text = text.strip_suffix(')').unwrap_or(text);
    text.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
#[path = "gfp_tests.rs"]
mod tests;
