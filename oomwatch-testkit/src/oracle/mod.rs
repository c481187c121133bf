//! The assertions the host tests (`oomwatch/tests`) and `cargo xtask vm-test`'s checks of a
//! guest's console share: one implementation of each, fed plain inputs (an agent's event as
//! JSON, the kernel's own lines parsed by [`crate::kernel_log`], counts the kernel keeps) and
//! returning the problems found, one line each (empty = pass). On the host a test asserts the
//! list is empty; `vm-test` prints it as a check's detail.
//!
//! - [`fields`]: an event against the kernel's "Killed process" line, its tgid and cgroup,
//!   and a cgroup's `oom_kill` count against the kernel's lines and the events.
//! - [`lifecycle`]: how a kill ended (the `oom_kill_lifecycle` record) and a userspace
//!   killer's SIGKILL as an event.
//! - [`oom`]: an event's invocation context against the kernel's report of that invocation.
//! - [`candidates`]: an event's candidates against the kernel's task dump, ranked and scored
//!   as the kernel does.
//! - [`threads`]: one event per killed thread of a multi-threaded victim, none per thread only
//!   marked.

use serde_json::Value;

pub mod candidates;
pub mod fields;
pub mod lifecycle;
pub mod oom;
pub mod threads;

/// An event value as the problems print it: `null`, `42`, `"dd"`, `[1,2]`, `{3 keys}`.
pub fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) => format!("{{{} keys}}", m.len()),
        v => v.to_string(),
    }
}

/// The value at the dotted `path` (`a.b`, `candidates.0.pid`) inside `v`.
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(&format!("/{}", path.replace('.', "/")))
}

/// `render` of the value at `path`, or `absent`.
fn show(v: &Value, path: &str) -> String {
    at(v, path).map_or("absent".into(), render)
}

/// The event's `pid`, -1 without one.
pub fn pid_of(e: &Value) -> i64 {
    e.get("pid").and_then(Value::as_i64).unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_short_and_paths_reach_into_arrays() {
        let e = serde_json::json!({"a": {"b": [1, {"c": "dd"}]}, "n": null});
        assert_eq!(at(&e, "a.b.1.c").map(render), Some("\"dd\"".into()));
        assert_eq!(show(&e, "a"), "{1 keys}");
        assert_eq!(show(&e, "n"), "null");
        assert_eq!(show(&e, "x"), "absent");
        assert_eq!(pid_of(&e), -1);
    }
}
