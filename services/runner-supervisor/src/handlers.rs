//! What the node does with each command it receives: load what the node
//! knows, decide (pure, in `domain::node_commands`), return the entries to
//! append. Effects outside the database (spawning, control files) happen
//! after the commit, in the runner watcher, from the committed tables.

use crate::domain::node_commands::{
    NodeIdentity, OfferDecision, OfferFacts, StartFacts, decide_offer, decide_start,
};
use crate::domain::transcript_events::{
    SPAWNING_VERSION, claim_stream_name, event_id, stream_name,
};
use crate::projections;
use sqlx::PgConnection;
use std::sync::Arc;
use stratavore_consumer::{Decider, HandleError, Projection};
use stratavore_events::process::{
    OfferAttempt, ProcessClaim, ProcessCommand, ProcessEvent, address,
};
use stratavore_events::{Envelope, Message, MessageKind, TypeName};
use stratavore_runtime::Clock;
use stratavore_store::{NewEntry, StoreError};

/// The supervisor node's decider and projection.
#[derive(Debug, Clone)]
pub struct Supervisor {
    /// This node and its current incarnation.
    pub me: NodeIdentity,
    /// The roots it serves, as offers name them.
    pub roots: Vec<String>,
    /// Runners it takes at once.
    pub capacity: u32,
    /// Wall clock for event times.
    pub clock: Arc<dyn Clock>,
}

impl Supervisor {
    /// The CloudEvents source of everything this node writes.
    pub fn source(&self) -> String {
        format!("/stratavore/{}/{}", crate::SERVICE, self.me.node)
    }

    /// An entry of an attempt's process stream at `version`, with the
    /// deterministic id a rewrite after a crash would carry too.
    pub fn process_entry(
        &self,
        event: &ProcessEvent,
        runner: uuid::Uuid,
        attempt: u32,
        version: u64,
    ) -> NewEntry {
        let mut entry = NewEntry::of(
            event,
            &self.source(),
            stream_name(runner, attempt),
            version,
            runner.to_string(),
            self.clock.now(),
        );
        entry.envelope.id = event_id(runner, attempt, version);
        entry
    }

    /// Room and drain, read under this node's claim lock, so two offers
    /// decided at once (one per offer queue) cannot both take the last slot.
    async fn offer_facts(&self, conn: &mut PgConnection) -> Result<OfferFacts, HandleError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("supervisor-claims-{}", self.me.node))
            .execute(&mut *conn)
            .await
            .map_err(StoreError::new("taking the claim lock"))?;
        let used =
            crate::node_store::used_slots(&mut *conn, &self.me.node, self.me.incarnation).await?;
        let draining = crate::node_store::draining(&mut *conn, &self.me.node).await?;
        Ok(OfferFacts {
            used,
            capacity: self.capacity,
            draining,
        })
    }

    /// The offer again, to `target`'s queue, as a command of its own.
    fn bounce_entry(&self, offer: OfferAttempt, target: &str, cause: &Envelope) -> NewEntry {
        let stream = format!(
            "offer-bounce-{}-{}-{}",
            offer.runner_id, offer.attempt, cause.id
        );
        let subject = offer.runner_id.to_string();
        let command = ProcessCommand::Offer(offer);
        let mut entry = NewEntry::of(
            &command,
            &self.source(),
            stream,
            1,
            subject,
            self.clock.now(),
        )
        .caused_by(cause);
        entry.routing_key = address(&command.routing_key(), target);
        entry
    }

    fn claim_entry(&self, claim: ProcessClaim, cause: &Envelope) -> NewEntry {
        let stream = claim_stream_name(
            claim.runner_id,
            claim.attempt,
            &claim.node,
            claim.incarnation,
        );
        let runner = claim.runner_id;
        NewEntry::of(
            &ProcessEvent::Claimed(claim),
            &self.source(),
            stream,
            1,
            runner.to_string(),
            self.clock.now(),
        )
        .caused_by(cause)
    }

    async fn start_facts(
        &self,
        conn: &mut PgConnection,
        runner: uuid::Uuid,
        attempt: u32,
    ) -> Result<StartFacts, StoreError> {
        let offer_known: Option<bool> = sqlx::query_scalar(
            "SELECT NOT revoked FROM offers WHERE runner_id = $1 AND attempt = $2",
        )
        .bind(runner)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::new("reading an offer"))?;
        let already: Option<i64> = sqlx::query_scalar(
            "SELECT 1::bigint FROM attempts WHERE runner_id = $1 AND attempt = $2",
        )
        .bind(runner)
        .bind(i64::from(attempt))
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::new("reading an attempt"))?;
        Ok(StartFacts {
            offer_known: offer_known.unwrap_or(false),
            already_spawning: already.is_some(),
        })
    }
}

impl Decider for Supervisor {
    async fn decide(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let kind =
            TypeName::parse(&message.type_name).map_err(|e| HandleError::Message(e.to_string()))?;
        let command = match ProcessCommand::from_data(&message.type_name, message.data.clone()) {
            Ok(command) => command,
            // A command nobody here understands cannot be answered: it goes
            // dead, and an operator can skip it.
            Err(e) if kind.kind == MessageKind::Command => {
                return Err(HandleError::Message(e.to_string()));
            }
            Err(_) => return Ok(Vec::new()),
        };
        match command {
            ProcessCommand::Offer(offer) => {
                let facts = self.offer_facts(conn).await?;
                match decide_offer(&self.me, &self.roots, &offer, facts) {
                    OfferDecision::Claim(claim) => Ok(vec![self.claim_entry(claim, message)]),
                    OfferDecision::Bounce { target } => {
                        crate::metrics::offer_bounced();
                        Ok(vec![self.bounce_entry(offer, &target, message)])
                    }
                    OfferDecision::Ignore => Ok(Vec::new()),
                }
            }
            ProcessCommand::Start(answer) => {
                let facts = self
                    .start_facts(conn, answer.runner_id, answer.attempt)
                    .await?;
                let Some(spawning) = decide_start(&self.me, &answer, facts) else {
                    tracing::info!(runner = %answer.runner_id, attempt = answer.attempt,
                        incarnation = %answer.incarnation, "a start this incarnation does not honour");
                    return Ok(Vec::new());
                };
                let (runner, attempt) = (spawning.runner_id, spawning.attempt);
                let entry = self
                    .process_entry(
                        &ProcessEvent::Spawning(spawning),
                        runner,
                        attempt,
                        SPAWNING_VERSION,
                    )
                    .caused_by(message);
                Ok(vec![entry])
            }
            // These only change the tables (projected when applied): a
            // revoke forgets the offer, a desired state is applied to the
            // runner's control file by the watcher, a drain closes the offer
            // gate.
            ProcessCommand::Revoke(_) | ProcessCommand::Control(_) | ProcessCommand::Drain(_) => {
                Ok(Vec::new())
            }
        }
    }

    fn on_skipped(&self, _message: &Envelope) -> Vec<NewEntry> {
        Vec::new()
    }
}

impl Projection for Supervisor {
    fn tables(&self) -> &'static [&'static str] {
        projections::TABLES
    }

    async fn project_own(
        &self,
        conn: &mut PgConnection,
        entry: &Envelope,
    ) -> Result<(), StoreError> {
        projections::project_own(conn, entry).await
    }

    async fn project_own_batch(
        &self,
        conn: &mut PgConnection,
        entries: &[&Envelope],
    ) -> Result<(), StoreError> {
        projections::project_own_batch(conn, entries).await
    }

    async fn project_received(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<(), StoreError> {
        projections::project_received(conn, message).await
    }
}
