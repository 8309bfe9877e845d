//! The operator subcommands every consuming service binary has:
//! `rebuild-projections` and `dead-letters list | replay ID | skip ID`.

use crate::dead_letters::{self, DeadLetterError};
use crate::drain::Drainer;
use crate::rebuild::{RebuildError, rebuild};
use crate::service::{Decider, Projection};
use stratavore_runtime::Clock;
use uuid::Uuid;

/// An operator command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Rebuild every projection from the log and the applied inbox rows, in
    /// one transaction (readers see the old rows until it commits).
    RebuildProjections,
    /// Inspect and decide about dead inbox rows.
    DeadLetters {
        /// What to do.
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

/// What to do with dead rows.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLetterAction {
    /// List them, as JSON lines.
    List,
    /// Put one back; it is applied again in its stream's order.
    Replay {
        /// The message id.
        id: Uuid,
    },
    /// Pass one over; a skipped command is answered `rejected`.
    Skip {
        /// The message id.
        id: Uuid,
    },
}

/// An operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Rebuilding failed; nothing changed.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    /// The decision could not be made.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// Listing failed.
    #[error(transparent)]
    Store(#[from] stratavore_store::StoreError),
    /// Output could not be written.
    #[error("writing the output: {0}")]
    Output(#[from] serde_json::Error),
}

/// Run an operator command; returns what to print.
pub async fn execute<S: Decider + Projection>(
    command: &AdminCommand,
    drainer: &Drainer<S>,
    clock: &dyn Clock,
) -> Result<String, AdminError> {
    match command {
        AdminCommand::RebuildProjections => {
            let report = rebuild(
                &drainer.pool,
                &drainer.log,
                drainer.service.as_ref(),
                &drainer.name,
            )
            .await?;
            Ok(format!(
                "rebuilt {}'s projections from {} log rows and {} received messages",
                drainer.name, report.own, report.received
            ))
        }
        AdminCommand::DeadLetters { action } => match action {
            DeadLetterAction::List => {
                let rows = dead_letters::list(drainer).await?;
                let lines = rows
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(lines.join("\n"))
            }
            DeadLetterAction::Replay { id } => {
                let outcome = dead_letters::replay(drainer, clock, *id).await?;
                Ok(format!(
                    "replayed {id}: {} message(s) applied",
                    outcome.applied
                ))
            }
            DeadLetterAction::Skip { id } => {
                let outcome = dead_letters::skip(drainer, clock, *id).await?;
                Ok(format!(
                    "skipped {id}: {} later message(s) applied",
                    outcome.applied
                ))
            }
        },
    }
}

/// A boxed error, for a service's `main` to report.
pub type MainError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a consuming service's `main`: without a subcommand, run the
/// service until SIGTERM; with one, connect as the service (migrating its
/// schema), run the operator command and print what it says.
pub async fn run_service_or_command<C, S, Start, Fut, T, E>(
    service: &'static str,
    config: C,
    base: fn(&C) -> &stratavore_runtime::ServiceConfig,
    command: Option<AdminCommand>,
    start: Start,
    drainer: fn(&C, sqlx::PgPool) -> Drainer<S>,
) -> Result<(), MainError>
where
    S: Decider + Projection,
    Start: FnOnce(C, stratavore_runtime::Shutdown) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let common = base(&config).clone();
    match command {
        None => {
            stratavore_runtime::run_until_signalled(service, &common.telemetry, |shutdown| {
                start(config, shutdown)
            })
            .await?;
        }
        Some(command) => {
            let db = stratavore_store::services::service_db(service)
                .ok_or_else(|| format!("no schema is known for {service}"))?;
            let pool = stratavore_runtime::service_base::connect_and_migrate(&common, db).await?;
            let clock = stratavore_runtime::clock_from_section(&common.clock);
            println!(
                "{}",
                execute(&command, &drainer(&config, pool), clock.as_ref()).await?
            );
        }
    }
    Ok(())
}
