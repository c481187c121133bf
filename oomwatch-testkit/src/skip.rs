//! Skip-or-fail. A test that cannot run here calls [`skip`] (or a helper built on it) and
//! returns:
//!
//! - with `OOMWATCH_REQUIRE_REAL_KERNEL=1` (CI), [`skip`] panics with a one-line reason: a test
//!   that needs the host never passes without having run;
//! - otherwise it prints `SKIPPED: <test>: <reason>` and, when `OOMWATCH_SKIP_LOG` names a file,
//!   appends `<test>\t<reason>` to it. libtest cannot mark a test skipped at run time, so
//!   `cargo xtask test` reads that file to count the skips in its closing line.
//!
//! [`not_applicable`] is for a check that does not exist on this kernel (a feature it predates,
//! fixtures captured on another release): it is counted the same way but never fails.
use std::fmt::Display;
use std::io::Write;

/// Set to `1` to turn every skip into a failure.
pub const REQUIRE_ENV: &str = "OOMWATCH_REQUIRE_REAL_KERNEL";
/// A file each skip appends one line to (`<test>\t<reason>`).
pub const SKIP_LOG_ENV: &str = "OOMWATCH_SKIP_LOG";

/// True under `OOMWATCH_REQUIRE_REAL_KERNEL=1`.
pub fn require_real_kernel() -> bool {
    std::env::var(REQUIRE_ENV).as_deref() == Ok("1")
}

/// True when running as root (the effective uid is 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The running test's name: libtest names each test's thread after it.
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        // `--test-threads=1` runs tests on the main thread: the binary's name is the best left.
        _ => std::env::args()
            .next()
            .unwrap_or_else(|| "<test>".to_string()),
    }
}

/// This test cannot run here because of `reason`: fails under `OOMWATCH_REQUIRE_REAL_KERNEL=1`,
/// else prints and records the skip. The caller returns right after.
#[track_caller]
pub fn skip(reason: impl Display) {
    let test = current_test();
    if require_real_kernel() {
        panic!("{test}: {reason} (OOMWATCH_REQUIRE_REAL_KERNEL=1 forbids skipping)");
    }
    record(&test, &reason.to_string());
}

/// A check that does not apply to this kernel (never a failure, always counted).
pub fn not_applicable(reason: impl Display) {
    record(&current_test(), &format!("not applicable: {reason}"));
}

fn record(test: &str, reason: &str) {
    let reason = reason.replace(['\n', '\t'], " ");
    eprintln!("SKIPPED: {test}: {reason}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    // One `write` of one short line to an O_APPEND file: lines of tests running at the same
    // time (threads or test binaries) never interleave.
    let line = format!("{test}\t{reason}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot record the skip in {}: {e}", path.to_string_lossy());
    }
}

/// True when running as root; otherwise skips (see [`skip`]) because the test `needs`.
#[track_caller]
pub fn root_or_skip(needs: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(format!("needs root {needs}"));
    false
}

/// The value, or `None` after skipping (see [`skip`]) with `what` and the error as the reason.
#[track_caller]
pub fn host_or_skip<T, E: Display>(what: &str, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            skip(format!("{what}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test (the environment is the process's): a skip is a line in the log, or a panic
    /// under `OOMWATCH_REQUIRE_REAL_KERNEL=1`; "not applicable" is a line either way.
    #[test]
    fn a_skip_is_a_logged_line_or_under_require_a_failure() {
        let dir = std::env::temp_dir().join(format!("oomwatch-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips.log");
        let _ = std::fs::remove_file(&log);
        std::env::set_var(SKIP_LOG_ENV, &log);
        std::env::remove_var(REQUIRE_ENV);
        skip("no\tthing\nhere");
        not_applicable("an older kernel");
        assert!(!root_or_skip("to test") || is_root());

        std::env::set_var(REQUIRE_ENV, "1");
        let failed = std::panic::catch_unwind(|| skip("no thing"));
        assert!(failed.is_err(), "a skip under REQUIRE must panic");
        not_applicable("still counted, never a failure");
        let none: Result<(), &str> = Err("gone");
        assert!(std::panic::catch_unwind(|| host_or_skip("x", none)).is_err());
        std::env::remove_var(REQUIRE_ENV);

        let text = std::fs::read_to_string(&log).unwrap();
        let me = "skip::tests::a_skip_is_a_logged_line_or_under_require_a_failure";
        let mut want = vec![
            format!("{me}\tno thing here"),
            format!("{me}\tnot applicable: an older kernel"),
        ];
        if !is_root() {
            want.push(format!("{me}\tneeds root to test"));
        }
        want.push(format!(
            "{me}\tnot applicable: still counted, never a failure"
        ));
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        std::env::remove_var(SKIP_LOG_ENV);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
