//! Accepting a client's command: record it in the gateway's log (with its
//! idempotency key, so the same key returns the same command and never a
//! second one), then wait for its outcome in the read model — the read
//! model, not a delivery, because with several gateway replicas the outcome
//! may be consumed by another one.

use crate::heartbeats::HeartbeatCache;
use crate::http::ApiError;
use crate::read_models::{self, CommandView, request_hash};
use crate::runner_logs::node_client::NodeTranscripts;
use crate::runner_logs::output_hub::OutputHub;
use crate::service::GatewayService;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use stratavore_consumer::{Commits, record_own};
use stratavore_events::Message;
use stratavore_runtime::{Clock, Shutdown};
use stratavore_store::{AppendError, Log, NewEntry};
use uuid::Uuid;

/// The CloudEvents source of everything the gateway writes.
pub const SOURCE: &str = "/stratavore/api-gateway";

/// What request handlers share once the database is reachable.
#[derive(Clone)]
pub struct Api {
    /// The gateway's pool.
    pub pool: PgPool,
    /// The gateway's log.
    pub log: Log,
    /// Its projection.
    pub service: Arc<GatewayService>,
    /// Wall clock for command times.
    pub clock: Arc<dyn Clock>,
    /// How often a waiting request reads the outcome at least (it reads
    /// again at once when this process's drain applies something).
    pub outcome_poll: Duration,
    /// The ticks of this process's drain.
    pub commits: Commits,
    /// The latest heartbeat of each node this process heard.
    pub heartbeats: HeartbeatCache,
    /// Reads transcripts from the nodes.
    pub transcripts: NodeTranscripts,
    /// Live output lines, by runner, for the followers of runner logs.
    pub outputs: OutputHub,
    /// The service's shutdown, which ends every follower's stream (an open
    /// stream would otherwise hold the server's graceful stop).
    pub shutdown: Shutdown,
    /// The embedding provider searches use.
    pub search: Arc<crate::search::Search>,
}

fn is_unique_violation(e: &AppendError) -> bool {
    match e {
        AppendError::Store(store) => matches!(
            &store.source,
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")
        ),
        _ => false,
    }
}

impl Api {
    /// Record `command` (about `subject`) and return its id; with a key
    /// seen before for the same request, the earlier command's id instead.
    pub async fn accept<M: Message>(
        &self,
        command: &M,
        subject: &str,
        key: Option<&str>,
    ) -> Result<Uuid, ApiError> {
        let hash = request_hash(command.type_name(), &command.to_data());
        // Two requests with one new key can race: the loser's insert of the
        // key fails, and it then finds the winner's command.
        for _ in 0..3 {
            let mut tx = stratavore_consumer::begin_shared(
                &self.pool,
                self.log.schema(),
                "opening a command transaction",
            )
            .await
            .map_err(ApiError::internal)?;
            if let Some(key) = key
                && let Some((id, earlier)) = read_models::command_for_key(&mut tx, key)
                    .await
                    .map_err(ApiError::internal)?
            {
                return if earlier == hash {
                    Ok(id)
                } else {
                    Err(ApiError::Conflict {
                        reason: "idempotency_key_reused".into(),
                        detail: "this Idempotency-Key was used for a different request".into(),
                    })
                };
            }
            let id = Uuid::now_v7();
            let mut entry = NewEntry::of(
                command,
                SOURCE,
                format!("command-{id}"),
                1,
                subject,
                self.clock.now(),
            );
            entry.envelope.id = id;
            entry.envelope.correlation_id = Some(id);
            entry.envelope.idempotency_key = key.map(str::to_owned);
            match record_own(&mut tx, &self.log, self.service.as_ref(), &[entry]).await {
                Ok(_) => {
                    tx.commit().await.map_err(ApiError::internal)?;
                    return Ok(id);
                }
                Err(e) if key.is_some() && is_unique_violation(&e) => continue,
                Err(e) => return Err(ApiError::internal(e)),
            }
        }
        Err(ApiError::internal("an idempotency key kept colliding"))
    }

    /// The command's view once it is decided, or None if it is still
    /// pending after `wait`. Read again each time this process's drain
    /// commits (most outcomes are applied here, and the request is answered
    /// as they commit), and every `outcome_poll` for those another replica
    /// applies.
    pub async fn await_outcome(
        &self,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<CommandView>, ApiError> {
        self.commits
            .wait_for(self.outcome_poll, wait, || async {
                let view = read_models::get_command(&self.pool, id)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(view.filter(|v| v.status != "pending"))
            })
            .await
    }
}
