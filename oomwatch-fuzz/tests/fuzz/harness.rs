//! The fuzz harness: case counts and time bounds from the environment, a proptest runner loop,
//! a per-thread peak-heap meter, and input strategies (biased random bytes, token soups, real
//! fixtures with random edits).
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

/// Cases per proptest run; the loop runs chunks until the case count or the time bound.
const CHUNK: u64 = 64;
/// A single case slower than this is a failure (quadratic blow-up, near-endless loop).
const CASE_LIMIT: Duration = Duration::from_secs(20);
/// Heap a parser may use beyond what is proportional to its input (buffers, tables, output).
pub const SLACK: usize = 1 << 20;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// `OOMWATCH_FUZZ_SECS`: seconds per target, if bounded by time.
pub fn time_bound() -> Option<Duration> {
    env_u64("OOMWATCH_FUZZ_SECS").map(Duration::from_secs)
}

/// `OOMWATCH_FUZZ_CASES`: cases per target (256 by default, unlimited with a time bound).
pub fn case_count() -> u64 {
    let default = if time_bound().is_some() {
        u64::MAX
    } else {
        256
    };
    env_u64("OOMWATCH_FUZZ_CASES").unwrap_or(default).max(1)
}

/// `OOMWATCH_FUZZ_SEED`, else random with a time bound, else fixed (reproducible `cargo test`).
pub fn seed() -> u64 {
    env_u64("OOMWATCH_FUZZ_SEED").unwrap_or_else(|| match time_bound() {
        Some(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        None => 0x6f6f_6d77_6174_6368,
    })
}

/// Runs `test` on values of `strategy` until the case count (divided by `scale`, for slow
/// targets) or the time bound is reached. A panic or failure is shrunk to a minimal input and
/// reported with the seed.
pub fn check<S>(name: &str, scale: u64, strategy: S, test: impl Fn(S::Value))
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    let total = (case_count() / scale.max(1)).max(1);
    let (bound, seed) = (time_bound(), seed());
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    quiet_panics_in_runners();
    let start = Instant::now();
    let (mut done, mut round) = (0u64, 0u64);
    while done < total && bound.is_none_or(|b| start.elapsed() < b) {
        let chunk = (total - done).min(CHUNK);
        let round_seed = seed ^ name_hash ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut runner = TestRunner::new(Config {
            cases: chunk as u32,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(round_seed),
            max_shrink_time: 120_000,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| {
            let t = Instant::now();
            IN_RUNNER.with(|r| r.set(true));
            test(v);
            IN_RUNNER.with(|r| r.set(false));
            let took = t.elapsed();
            match took > CASE_LIMIT {
                true => Err(TestCaseError::fail(format!("one case took {took:?}"))),
                false => Ok(()),
            }
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, input)) => panic!(
                "fuzz target {name} failed: {why}\nminimal input: {input:?}\n\
                 (OOMWATCH_FUZZ_SEED={seed}, round {round})"
            ),
            Err(TestError::Abort(why)) => panic!("fuzz target {name} aborted: {why}"),
        }
        done += chunk;
        round += 1;
    }
    eprintln!(
        "fuzz {name}: {done} cases in {:.1}s (seed {seed})",
        start.elapsed().as_secs_f64()
    );
}

thread_local! {
    /// Whether this thread runs a case: its panics are reported by the runner, with the input.
    static IN_RUNNER: Cell<bool> = const { Cell::new(false) };
}

/// Silences the default panic message of cases (a failing case panics once per shrink step);
/// the runner's report carries the message and the minimal input.
fn quiet_panics_in_runners() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_RUNNER.with(|r| r.replace(false)) {
                default(info);
            }
        }));
    });
}

/// The global allocator of the fuzz binary: [`System`], counting each thread's live bytes.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns its result with the most heap this thread held at once meanwhile
/// (above what it held before; what `f` returns is included). Not reentrant.
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

/// Runs `f`, asserting its peak heap is at most `per_byte` times `input_len` plus [`SLACK`].
pub fn bounded<R>(what: &str, input_len: usize, per_byte: usize, f: impl FnOnce() -> R) -> R {
    let (r, peak) = peak_heap(f);
    let limit = input_len.saturating_mul(per_byte).saturating_add(SLACK);
    assert!(
        peak <= limit,
        "{what}: {peak} bytes of heap for {input_len} bytes of input (limit {limit})"
    );
    r
}

/// Input bytes, shown as an escaped byte string in failure reports.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes as text, invalid UTF-8 replaced (as the readers do).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\" ({} bytes)", self.0.escape_ascii(), self.0.len())
    }
}

/// Numbers at the edges of the integer types the parsers use, spliced over digit runs.
pub const EDGE_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "255",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "0x",
    "0xffffffffffffffff",
    "",
];

/// Bytes biased towards `alphabet` (three in four), up to `max_len` long.
pub fn bytes(alphabet: &'static [u8], max_len: usize) -> impl Strategy<Value = Bytes> {
    let byte = prop_oneof![3 => select(alphabet), 1 => any::<u8>()];
    vec(byte, 0..=max_len).prop_map(Bytes)
}

/// Text made of `tokens` (mostly) and random bytes, up to `max_parts` pieces.
pub fn soup(tokens: &'static [&'static str], max_parts: usize) -> impl Strategy<Value = Bytes> {
    let part = prop_oneof![
        4 => select(tokens).prop_map(|t| t.as_bytes().to_vec()),
        1 => select(EDGE_NUMBERS).prop_map(|t| t.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..4),
    ];
    vec(part, 0..=max_parts).prop_map(|parts| Bytes(parts.concat()))
}

/// One random edit of an input.
#[derive(Clone, Debug)]
pub enum Edit {
    Truncate(Index),
    Remove(Index, usize),
    Insert(Index, Vec<u8>),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Replace the digit run at or after the position with an edge number.
    Number(Index, Index),
    /// Copy `[a, b)` and insert it at `b`.
    Duplicate(Index, Index),
}

fn edit(alphabet: &'static [u8]) -> impl Strategy<Value = Edit> {
    let ins = vec(prop_oneof![select(alphabet), any::<u8>()], 1..8);
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Edit::Remove(i, n)),
        1 => (any::<Index>(), ins).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Edit::Number(i, n)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
    ]
}

/// Up to `max` random edits.
pub fn edits(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<Edit>> {
    vec(edit(alphabet), 0..=max)
}

/// Applies `e` to `b` (positions are taken modulo the current length).
pub fn apply(b: &mut Vec<u8>, e: &Edit) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match e {
        Edit::Truncate(i) => b.truncate(at(i, b.len())),
        Edit::Remove(i, n) => {
            let s = at(i, b.len());
            b.drain(s..(s + n).min(b.len()));
        }
        Edit::Insert(i, bytes) => {
            let s = at(i, b.len() + 1);
            b.splice(s..s, bytes.iter().copied());
        }
        Edit::FlipBit(i, bit) if !b.is_empty() => {
            let s = at(i, b.len());
            b[s] ^= 1 << bit;
        }
        Edit::SetByte(i, v) if !b.is_empty() => {
            let s = at(i, b.len());
            b[s] = *v;
        }
        Edit::Number(i, n) => {
            let s = at(i, b.len() + 1);
            let start = b[s..]
                .iter()
                .position(u8::is_ascii_digit)
                .map_or(b.len(), |p| s + p);
            let len = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
            let num = EDGE_NUMBERS[n.index(EDGE_NUMBERS.len())].as_bytes();
            b.splice(start..start + len, num.iter().copied());
        }
        Edit::Duplicate(x, y) if !b.is_empty() => {
            let (p, q) = (at(x, b.len()), at(y, b.len()));
            let (lo, hi) = (p.min(q), p.max(q) + 1);
            let piece = b[lo..hi].to_vec();
            b.splice(hi..hi, piece);
        }
        _ => {}
    }
}

/// One of `corpus` with up to `max_edits` random edits.
pub fn mutated(
    corpus: Vec<Vec<u8>>,
    alphabet: &'static [u8],
    max_edits: usize,
) -> impl Strategy<Value = Bytes> {
    assert!(!corpus.is_empty(), "empty corpus");
    let corpus = Arc::new(corpus);
    (any::<Index>(), edits(alphabet, max_edits)).prop_map(move |(pick, edits)| {
        let mut b = corpus[pick.index(corpus.len())].clone();
        for e in &edits {
            apply(&mut b, e);
        }
        Bytes(b)
    })
}

/// `oomwatch/tests/fixtures/<sub>`.
pub fn fixtures(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../oomwatch/tests/fixtures")
        .join(sub)
}

/// Every regular file below `dir` (sorted), with its path relative to `dir`.
pub fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p) {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                out.push((rel, data));
            }
        }
    }
    out.sort();
    out
}

/// The contents of the files below `fixtures(sub)` whose name ends in `suffix`.
pub fn fixture_texts(sub: &str, suffix: &str) -> Vec<Vec<u8>> {
    let all = files_below(&fixtures(sub));
    let texts: Vec<Vec<u8>> = all
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(suffix))
        .map(|(_, d)| d)
        .collect();
    assert!(!texts.is_empty(), "no fixtures {sub}/*{suffix}");
    texts
}
