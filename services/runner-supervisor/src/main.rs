//! The runner-supervisor binary: runs the node, or an operator subcommand
//! (`rebuild-projections`, `dead-letters …`).

use clap::Parser;
use runner_supervisor::{SERVICE, config::SupervisorConfig, drainer, start};
use std::path::PathBuf;
use stratavore_consumer::admin::{AdminCommand, run_service_or_command};

#[derive(Parser)]
#[command(about = "Runs the agent processes of its node: spawns, signals, exits, transcripts")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// An operator command; without one, the node runs.
    #[command(subcommand)]
    command: Option<AdminCommand>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = SupervisorConfig::load(args.config.as_deref())?;
    run_service_or_command(SERVICE, config, |c| &c.base, args.command, start, drainer)
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
