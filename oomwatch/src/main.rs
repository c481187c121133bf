//! `oomwatch`: the agent's entry point.
use std::process::ExitCode;

use clap::Parser;
use oomwatch::commands::{check, history, run, top, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
        Some(Command::Top(args)) => return top::main(args),
        Some(Command::Check(args)) => return check::main(args),
        Some(Command::History(args)) => return history::main(args),
        None => cli.run,
    };
    if let Err(e) = run::init_logging(&args) {
        eprintln!("oomwatch: {e:#}");
        return ExitCode::FAILURE;
    }
    let result: anyhow::Result<()> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run::run(args)).map_err(anyhow::Error::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oomwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
