//! Property tests ("fuzzing") of every parser that reads outside input: the kernel log, tracefs
//! format files, BTF, cgroup paths, OCI runtime bundle files, `/proc` and `/sys` files, the
//! state file, the command line and the web configuration file. Each target checks that arbitrary and mutated-real input
//! never panics and that the parser's peak heap use stays proportional to its input (or within
//! its documented caps), measured by the counting allocator below.
//!
//! Cases per target: `OOMWATCH_FUZZ_CASES` (default 256, so `cargo test` stays fast). With
//! `OOMWATCH_FUZZ_SECS` set, each target also stops after that many seconds (and the default
//! case count becomes unlimited): `cargo xtask fuzz --secs N` runs them so. The seed is fixed
//! unless `OOMWATCH_FUZZ_SEED` is set or a time bound is given; a failure prints it and the
//! minimal (shrunk) input.
mod harness;

mod btf;
mod cli;
mod files;
mod kmsg;
mod text;
mod web;

#[global_allocator]
static ALLOC: harness::Counting = harness::Counting;
