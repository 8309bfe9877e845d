//! The outbox-relay binary.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Publishes every service's log to RabbitMQ, in order, at least once")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = outbox_relay::config::RelayConfig::load(args.config.as_deref())?;
    let telemetry = config.telemetry.clone();
    stratavore_runtime::run_until_signalled("outbox-relay", &telemetry, |shutdown| {
        outbox_relay::start(config, shutdown)
    })
    .await?;
    Ok(())
}
