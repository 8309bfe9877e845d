//! `stratavore-shim <runner-dir>`: runs one agent as the runner directory's
//! `spec.json` says. Exits 0 once `exit.json` is written, 2 when it cannot be.

use std::path::PathBuf;
use std::process::ExitCode;

use stratavore_agent_shim::shim;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        shim::warn("usage: stratavore-shim <runner-dir>");
        return ExitCode::from(2);
    };
    match shim::run(&PathBuf::from(dir)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            shim::warn(&shim::describe(&error));
            ExitCode::from(2)
        }
    }
}
