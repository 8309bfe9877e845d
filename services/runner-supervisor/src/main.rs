//! The runner-supervisor binary.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "runs the agent processes of its node: spawns, signals, exits, transcripts.")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = runner_supervisor::SupervisorConfig::load(args.config.as_deref())?;
    let telemetry = config.0.telemetry.clone();
    stratavore_runtime::run_until_signalled(runner_supervisor::SERVICE, &telemetry, |shutdown| {
        runner_supervisor::start(config, shutdown)
    })
    .await?;
    Ok(())
}
