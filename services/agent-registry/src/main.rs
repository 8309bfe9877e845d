//! The agent-registry binary.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "owns agents, their personalities, tasks, dispatch and time tracking.")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = agent_registry::RegistryConfig::load(args.config.as_deref())?;
    let telemetry = config.0.telemetry.clone();
    stratavore_runtime::run_until_signalled(agent_registry::SERVICE, &telemetry, |shutdown| {
        agent_registry::start(config, shutdown)
    })
    .await?;
    Ok(())
}
