//! `oomwatch`: the agent's entry point.
use std::process::ExitCode;

use clap::Parser;
use oomwatch::commands::{check, history, run, top, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Run(args)) => run::main(*args),
        Some(Command::Top(args)) => top::main(args),
        Some(Command::Check(args)) => check::main(args),
        Some(Command::History(args)) => history::main(args),
        None => run::main(cli.run),
    }
}
