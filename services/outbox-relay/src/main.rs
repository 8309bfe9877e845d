//! The outbox-relay binary: load config, run until SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use stratavore_runtime::{Shutdown, init_tracing, trigger_on_signals};

#[derive(Parser)]
#[command(about = "Publishes every service's log to RabbitMQ")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = outbox_relay::config::RelayConfig::load(args.config.as_deref())?;
    init_tracing(&config.telemetry, "outbox-relay")?;
    let shutdown = Shutdown::new();
    trigger_on_signals(&shutdown)?;
    let running = outbox_relay::start(config, shutdown.clone())
        .await
        .context("starting the relay")?;
    tracing::info!(health = %running.health_addr, "outbox-relay running");
    shutdown.wait().await;
    shutdown.wait_for_tasks(Duration::from_secs(30)).await?;
    Ok(())
}
