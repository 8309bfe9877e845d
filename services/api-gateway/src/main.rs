//! The api-gateway binary.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "the REST API, the live event stream, the dashboard and the read models of everything."
)]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = api_gateway::GatewayConfig::load(args.config.as_deref())?;
    let telemetry = config.0.telemetry.clone();
    stratavore_runtime::run_until_signalled(api_gateway::SERVICE, &telemetry, |shutdown| {
        api_gateway::start(config, shutdown)
    })
    .await?;
    Ok(())
}
