//! The api-gateway binary: runs the service, or an operator
//! subcommand (`rebuild-projections`, `dead-letters …`).

use api_gateway::{SERVICE, config::GatewayConfig, drainer, start};
use clap::Parser;
use std::path::PathBuf;
use stratavore_consumer::admin::{AdminCommand, execute};
use stratavore_runtime::service_base::connect_and_migrate;
use stratavore_runtime::{clock_from_section, run_until_signalled};

#[derive(Parser)]
#[command(about = "The REST API and the read models of everything")]
struct Args {
    /// Config file (default: $STRATAVORE_CONFIG or ./stratavore.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// An operator command; without one, the service runs.
    #[command(subcommand)]
    command: Option<AdminCommand>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = GatewayConfig::load(args.config.as_deref())?;
    match args.command {
        None => {
            let telemetry = config.base.telemetry.clone();
            run_until_signalled(SERVICE, &telemetry, |shutdown| start(config, shutdown)).await?;
        }
        Some(command) => {
            let db = stratavore_store::services::service_db(SERVICE)
                .ok_or_else(|| anyhow::anyhow!("no schema"))?;
            let pool = connect_and_migrate(&config.base, db)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let clock = clock_from_section(&config.base.clock);
            println!(
                "{}",
                execute(&command, &drainer(&config, pool), clock.as_ref()).await?
            );
        }
    }
    Ok(())
}
