//! What a consuming service provides: a decider (what a message leads to)
//! and a projection (how messages change its read tables). The consumer
//! machinery does the rest: ordering, idempotence, retries, dead rows,
//! rebuilds.

use sqlx::PgConnection;
use std::future::Future;
use stratavore_events::Envelope;
use stratavore_store::{NewEntry, StoreError};

/// Why a message could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message's own fault (it does not parse, fails validation, the
    /// handler refuses it): it would fail the same way again. Counts an
    /// attempt; at the limit the row is dead.
    #[error("{0}")]
    Message(String),
    /// The database or another dependency failed: the transaction is
    /// rolled back and the stream drained again later, without limit.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The transaction setting that is `on` while a rebuild replays (see
/// [`Projection::finish_rebuild`]).
pub const REBUILDING: &str = "stratavore.rebuilding";

/// Decides what a received message leads to. It reads state through `conn`
/// (inside the drain transaction), decides with pure domain code, and
/// returns the messages to append. It writes nothing itself.
pub trait Decider: Send + Sync + 'static {
    /// The messages that applying `message` appends to the log.
    fn decide(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> impl Future<Output = Result<Vec<NewEntry>, HandleError>> + Send;

    /// The terminal answer to a message an operator skipped (a command
    /// gets its `rejected`, so it still has an outcome).
    fn on_skipped(&self, message: &Envelope) -> Vec<NewEntry>;

    /// Whether `decide` reads what the projection writes. When it does, a
    /// drain folds each message before deciding the next (a decision must
    /// see the messages before it); when it does not, the drain decides a
    /// whole batch first and folds it in one
    /// [`Projection::project_received_batch`].
    fn reads_projection(&self) -> bool {
        true
    }

    /// Whether a message of this type may be applied in a quiet run (see
    /// [`Decider::quiet_prefix`]). Only types whose decision usually
    /// appends nothing are worth it: a drain gathers the eligible messages
    /// that follow each other into one run.
    fn may_be_quiet(&self, _type_name: &str) -> bool {
        false
    }

    /// Of `messages` (consecutive in the drain's order, each of a type
    /// [`Decider::may_be_quiet`] accepts), how many leading ones `decide`
    /// would return no entries for without failing, were each decided
    /// after the ones before it had been folded. The drain applies those
    /// without calling `decide` and folds them together, then decides the
    /// next one alone, as usual. So the answer may err only towards
    /// fewer: a message counted quiet is never decided. It reads through
    /// `conn` and writes nothing.
    ///
    /// What it is for: a service whose decider reads what its projection
    /// writes (a budget's spending) folds before every decision, so each
    /// message costs its decision's and its fold's round trips. Most such
    /// messages decide to nothing (usage that crosses no threshold); a
    /// run of them can be decided from a few reads, with the run's own
    /// effects added in memory, and folded with a statement per table.
    fn quiet_prefix(
        &self,
        _conn: &mut PgConnection,
        _messages: &[Envelope],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        async { Ok(0) }
    }
}

/// Folds messages into a service's read tables. Both folds must be
/// deterministic (no `now()`, no serial ids) and independent of how the
/// service's own messages interleave with received ones, because a rebuild
/// replays the log and the inbox one after the other.
pub trait Projection: Send + Sync + 'static {
    /// The tables a rebuild empties (with DELETE) before replaying.
    fn tables(&self) -> &'static [&'static str];

    /// Fold one of the service's own log rows.
    fn project_own(
        &self,
        conn: &mut PgConnection,
        entry: &Envelope,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Fold some of the service's own log rows, in their order: the same
    /// rows as folding each with [`Projection::project_own`], but a
    /// projection may fold them with a statement per table.
    fn project_own_batch(
        &self,
        conn: &mut PgConnection,
        entries: &[&Envelope],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            for entry in entries {
                self.project_own(conn, entry).await?;
            }
            Ok(())
        }
    }

    /// Fold one applied received message.
    fn project_received(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Called once a rebuild has replayed every message, in its
    /// transaction. While a rebuild replays, the transaction's setting
    /// [`REBUILDING`] is `on` (SQL reads it with `current_setting`), so a
    /// projection may leave rows it derives from other rows (a session's
    /// from its attempts') to be computed here, once, instead of after
    /// every message; the setting is `off` again when this runs.
    fn finish_rebuild(
        &self,
        _conn: &mut PgConnection,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// Fold applied received messages in their order: the same rows as
    /// folding each with [`Projection::project_received`], whatever the
    /// slices a history is cut into (a drain batch live, a page in a
    /// rebuild), but a projection may fold a run of them with a statement
    /// per table instead of statements per message.
    fn project_received_batch(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            for message in messages {
                self.project_received(conn, message).await?;
            }
            Ok(())
        }
    }
}
