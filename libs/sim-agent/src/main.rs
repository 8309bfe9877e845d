//! `stratavore-sim-agent`: replay when `SIM_AGENT_SCRIPT` asks for it (the
//! command line is then any CLI's and is not parsed), else parse the
//! command line and run; exit.

use std::process::ExitCode;

use clap::Parser;
use stratavore_sim_agent::{Cli, Script, SimError, replay, run};

fn main() -> ExitCode {
    let from_env = std::env::var("SIM_AGENT_SCRIPT").ok();
    let outcome = match Script::replay_from_env(from_env.as_deref()) {
        Ok(Some(script)) => replay(
            &script,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Ok(None) => run(
            &Cli::parse(),
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Err(error) => Err(error.into()),
    };
    let code = match outcome {
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
