//! `stratavore-sim-agent`: parse the command line, run, exit.

use std::process::ExitCode;

use clap::Parser;
use stratavore_sim_agent::{Cli, SimError, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match run(
        &cli,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    ) {
        Ok(code) => code,
        Err(error) => {
            // The real CLI's shapes: a session refusal is one stderr line.
            match &error {
                SimError::Session(session @ stratavore_sim_agent::SessionError::NotFound(_)) => {
                    eprintln!("{session}");
                }
                _ => eprintln!("Error: {error}"),
            }
            1
        }
    };
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}
