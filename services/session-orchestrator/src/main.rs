//! The session-orchestrator binary.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "owns projects, the runners' lifecycle (launch saga, placement, restarts), sessions, budgets and durable timers."
)]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = session_orchestrator::OrchestratorConfig::load(args.config.as_deref())?;
    let telemetry = config.0.telemetry.clone();
    stratavore_runtime::run_until_signalled(
        session_orchestrator::SERVICE,
        &telemetry,
        |shutdown| session_orchestrator::start(config, shutdown),
    )
    .await?;
    Ok(())
}
