//! The command line: any argument list, made of every flag, subcommand and possible value the
//! CLI declares mixed with edge values and random bytes, parses or fails cleanly.
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::{CommandFactory, Parser};
use oomwatch::commands::Cli;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use crate::harness::{self, bounded, check};

const VALUES: &[&str] = &[
    "",
    "-",
    "--",
    "=",
    "-1000",
    "1001",
    "-1",
    "0",
    "18446744073709551616",
    "0.0.0.0:9837",
    "[::1]:0",
    "localhost:99999",
    "/",
    "/nonexistent",
    "json",
    "text",
    "trace",
    "info,oomwatch=debug",
    "--help",
    "-h",
    "--version",
    "-V",
];

/// Every spelling the CLI declares: subcommands, `--long`/`-s` flags (also as `--long=`),
/// aliases and possible values, over all subcommands.
fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = VALUES.iter().map(|v| v.to_string()).collect();
    let mut stack = vec![Cli::command()];
    while let Some(cmd) = stack.pop() {
        words.push(cmd.get_name().to_string());
        for arg in cmd.get_arguments() {
            if let Some(l) = arg.get_long() {
                words.push(format!("--{l}"));
                words.push(format!("--{l}="));
            }
            if let Some(s) = arg.get_short() {
                words.push(format!("-{s}"));
            }
            for v in arg.get_possible_values() {
                words.push(v.get_name().to_string());
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    words.sort();
    words.dedup();
    words
}

#[derive(Clone, Debug)]
enum Arg {
    Word(Index),
    /// A word with a value glued on (`--listen=…`, `-n5`).
    Glued(Index, Index),
    Raw(Vec<u8>),
}

#[test]
fn cli_arguments() {
    let words = vocabulary();
    let arg = prop_oneof![
        6 => any::<Index>().prop_map(Arg::Word),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Arg::Glued(a, b)),
        1 => harness::bytes(b"-=:/,0123456789abc", 12).prop_map(|b| Arg::Raw(b.0)),
    ];
    check("cli_arguments", 1, vec(arg, 0..10), |args: Vec<Arg>| {
        let mut argv = vec![OsString::from("oomwatch")];
        let mut len = 0;
        for a in &args {
            let bytes = match a {
                Arg::Word(i) => words[i.index(words.len())].clone().into_bytes(),
                Arg::Glued(i, j) => {
                    let value = VALUES[j.index(VALUES.len())];
                    format!("{}{value}", words[i.index(words.len())]).into_bytes()
                }
                Arg::Raw(b) => b.clone(),
            };
            len += bytes.len();
            argv.push(OsString::from_vec(bytes));
        }
        bounded("Cli::try_parse_from", len, 256, || {
            if let Err(e) = Cli::try_parse_from(&argv) {
                // Rendering the error or help text must not panic either.
                let _ = e.render().to_string();
            }
        });
    });
}
