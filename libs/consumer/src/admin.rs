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
