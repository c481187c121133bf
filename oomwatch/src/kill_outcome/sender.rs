//! Which SIGKILLs of a listed comm come from a real userspace OOM killer. A comm is chosen by
//! any process (`prctl(PR_SET_NAME)`), so the sender must also be:
//!
//! * **privileged**: `CAP_KILL` in its effective set (root has it; read from `status`, which
//!   anyone may read). A process without it can only kill its own user's processes, which is
//!   no OOM killer's job;
//! * **the killer's executable**, when the agent may read `/proc/<sender>/exe` (the inode,
//!   whatever namespace named it): a file named like the comm, owned by root and not writable
//!   by group or others; or, for an interpreted killer (nohang is Python), a root-owned
//!   interpreter whose script argument is named like the comm. Reading `exe` needs ptrace
//!   access, which the agent gives up with its capabilities after start-up for any sender
//!   holding more capabilities than it (a root killer): then only the privilege decides;
//! * **within its rate**: [`BURST`] kills at once, then [`PER_SECOND`] a second, per sender.
//!
//! What fails is dropped and counted by reason (`oomwatch_userspace_oom_kills_dropped_total`),
//! so a forged killer never makes events nor pushes real kills out of the recent ring. The
//! check reads `/proc` when the record arrives (sub-millisecond after the signal): a sender
//! already gone cannot be checked (`sender_gone`); daemons (earlyoom, systemd-oomd, oomd,
//! nohang, lmkd) keep running after they kill.
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys::procfs::{self, Executable};

/// Kills a sender may make at once.
pub const BURST: f64 = 20.0;
/// Kills a sender may make a second, after the burst.
pub const PER_SECOND: f64 = 5.0;
/// Senders remembered for the rate (older ones are forgotten first).
const SENDERS: usize = 256;

/// Why a listed comm's SIGKILL is not reported (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Its executable is not the killer's (or not root-owned).
    Executable,
    /// It lacks `CAP_KILL`.
    Unprivileged,
    /// It exited before it could be checked.
    SenderGone,
    /// More kills than [`BURST`] and [`PER_SECOND`] allow.
    RateLimited,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Executable,
        Refusal::Unprivileged,
        Refusal::SenderGone,
        Refusal::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Executable => "executable",
            Refusal::Unprivileged => "unprivileged",
            Refusal::SenderGone => "sender_gone",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// Interpreters a killer may be a script of.
const INTERPRETERS: [&str; 3] = ["python", "perl", "ruby"];

/// Whether `exe` is the executable of the killer named `comm` (at most 15 bytes, as the
/// kernel keeps it); true when the executable cannot be read (see [`Executable::exe`]).
pub fn is_killer_executable(comm: &str, exe: &Executable) -> bool {
    let named = |name: &str| !comm.is_empty() && clip(name) == comm;
    let Some((name, root_owned)) = &exe.exe else {
        return true;
    };
    *root_owned
        && (named(name)
            || (INTERPRETERS.iter().any(|i| name.starts_with(i))
                && exe.args.iter().any(|a| named(a))))
}

/// `name` as a comm: its first 15 bytes.
fn clip(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A sender's tokens.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The senders' rates and first refusals (each sender refused is logged once).
#[derive(Debug, Default)]
pub struct Senders {
    buckets: HashMap<i32, Bucket>,
    warned: HashMap<i32, Instant>,
}

impl Senders {
    /// Whether the SIGKILL `sender` (tgid) sent as `comm` is reported.
    pub fn admit(
        &mut self,
        proc_root: &Path,
        sender: i32,
        comm: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        let r = Self::check(procfs::executable(proc_root, sender).as_ref(), comm)
            .and_then(|()| self.take(sender, now));
        if let Err(why) = r {
            self.warn_once(sender, comm, why, now);
        }
        r
    }

    fn check(exe: Option<&Executable>, comm: &str) -> Result<(), Refusal> {
        let exe = exe.ok_or(Refusal::SenderGone)?;
        if !is_killer_executable(comm, exe) {
            return Err(Refusal::Executable);
        }
        if !exe.cap_kill {
            return Err(Refusal::Unprivileged);
        }
        Ok(())
    }

    fn take(&mut self, sender: i32, now: Instant) -> Result<(), Refusal> {
        if self.buckets.len() >= SENDERS && !self.buckets.contains_key(&sender) {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.buckets.remove(&k);
            }
        }
        let b = self.buckets.entry(sender).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * PER_SECOND;
        b.tokens = (b.tokens + refill).min(BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Refusal::RateLimited);
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// One warning per sender (again after a minute), not one per kill.
    fn warn_once(&mut self, sender: i32, comm: &str, why: Refusal, now: Instant) {
        if self
            .warned
            .get(&sender)
            .is_some_and(|t| now.saturating_duration_since(*t) < Duration::from_secs(60))
        {
            return;
        }
        if self.warned.len() >= SENDERS {
            self.warned.clear();
        }
        self.warned.insert(sender, now);
        tracing::warn!(
            sender,
            comm,
            reason = why.label(),
            "SIGKILLs sent as userspace OOM killer {comm:?} by pid {sender} are not reported: \
             {}; counted in oomwatch_userspace_oom_kills_dropped_total",
            match why {
                Refusal::Executable => "its executable is not that killer's (root-owned, named so)",
                Refusal::Unprivileged => "it lacks CAP_KILL",
                Refusal::SenderGone => "it exited before it could be checked",
                Refusal::RateLimited => "more kills than a killer makes",
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(name: &str, root_owned: bool, cap_kill: bool, args: &[&str]) -> Executable {
        Executable {
            exe: Some((name.into(), root_owned)),
            cap_kill,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_killers_own_privileged_executable_is_admitted() {
        let check = |e: &Executable, comm| Senders::check(Some(e), comm);
        assert_eq!(check(&exe("earlyoom", true, true, &[]), "earlyoom"), Ok(()));
        assert_eq!(
            check(&exe("python3.11", true, true, &["-c"]), "earlyoom"),
            Err(Refusal::Executable)
        );
        assert_eq!(
            check(&exe("earlyoom", false, true, &[]), "earlyoom"),
            Err(Refusal::Executable),
            "a user's own copy"
        );
        assert_eq!(
            check(&exe("earlyoom", true, false, &[]), "earlyoom"),
            Err(Refusal::Unprivileged)
        );
        assert_eq!(
            check(
                &exe("python3.11", true, true, &["nohang", "--monitor"]),
                "nohang"
            ),
            Ok(())
        );
        // The comm is the name's first 15 bytes.
        assert_eq!(
            check(
                &exe("a-very-long-killer-name", true, true, &[]),
                "a-very-long-kil"
            ),
            Ok(())
        );
        assert_eq!(Senders::check(None, "earlyoom"), Err(Refusal::SenderGone));
        // An executable the agent may not read: the privilege decides.
        let unreadable = |cap_kill| Executable {
            exe: None,
            cap_kill,
            args: vec![],
        };
        assert_eq!(check(&unreadable(true), "earlyoom"), Ok(()));
        assert_eq!(
            check(&unreadable(false), "earlyoom"),
            Err(Refusal::Unprivileged)
        );
    }

    #[test]
    fn each_sender_has_its_own_rate() {
        let mut s = Senders::default();
        let t = Instant::now();
        for _ in 0..BURST as usize {
            assert_eq!(s.take(1, t), Ok(()));
        }
        assert_eq!(s.take(1, t), Err(Refusal::RateLimited));
        assert_eq!(s.take(2, t), Ok(()), "another sender");
        assert_eq!(
            s.take(1, t + Duration::from_millis(250)),
            Ok(()),
            "refilled"
        );
        for pid in 10..10 + SENDERS as i32 * 2 {
            let _ = s.take(pid, t);
        }
        assert!(s.buckets.len() <= SENDERS);
    }
}
