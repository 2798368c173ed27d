//! sessionctl: the command-line client of session-svc. `sessionctl --help` lists the commands,
//! the output conventions and the exit codes.

// A binary's root looks for modules beside itself, in src/bin/; they live in src/bin/sessionctl/.
#[path = "sessionctl/cli.rs"]
mod cli;
#[path = "sessionctl/client.rs"]
mod client;
#[path = "sessionctl/commands.rs"]
mod commands;
#[path = "sessionctl/format.rs"]
mod format;
#[path = "sessionctl/jobs.rs"]
mod jobs;
#[path = "sessionctl/json.rs"]
mod json;

use std::process::ExitCode;

use clap::{Parser, error::ErrorKind};

use crate::{
    cli::{Cli, Command},
    client::{Conn, EX_USAGE, Failure, Outcome},
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // A thread may still be blocked reading stdin (an unanswered cancel question), or an
    // upload left open on purpose: do not wait for either.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !matches!(failure, Failure::Quiet) {
                eprintln!("error: {failure}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let Cli { global, command } = cli;
    let as_json = global.json;
    if let Command::Import(args) = command {
        // Reads its file before connecting.
        return jobs::import(&global, args).await;
    }
    let conn = Conn::open(&global).await?;
    match command {
        Command::Actors { kind, status } => commands::actors(&conn, kind, status, as_json).await,
        Command::Actor { kind, key } => commands::actor(&conn, kind, key, as_json).await,
        Command::Kill { kind, key } => commands::kill(&conn, kind, key, as_json).await,
        Command::Stats { watch, interval } => {
            commands::stats(&conn, watch, interval, as_json).await
        }
        Command::Cart(command) => commands::cart(&conn, command, as_json).await,
        Command::Todo(command) => commands::todo(&conn, command, as_json).await,
        Command::Stock(command) => commands::stock(&conn, command, as_json).await,
        Command::Jobs { state } => jobs::list(&conn, state, as_json).await,
        Command::Job(args) => jobs::job(&conn, args, as_json).await,
        Command::Import(_) => unreachable!("handled above"),
    }
}
