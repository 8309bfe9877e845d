//! Quiet runs: messages that follow each other in a drain and that the
//! service counts as deciding to nothing are applied together, without a
//! decision or a fold each (see [`Decider::quiet_prefix`]).

use super::tally::Tally;
use super::{DrainError, Drainer};
use crate::batch::Candidate;
use crate::inbox::NextRow;
use crate::service::{Decider, Projection};
use sqlx::PgConnection;
use std::collections::VecDeque;
use stratavore_events::Envelope;

impl<S: Decider + Projection> Drainer<S> {
    /// Apply `first` and the messages right after it in `queue` that may be
    /// quiet too, as far as the service counts them quiet; put the rest
    /// back at the front of the queue. Returns the message the run stopped
    /// before, if any, which is then decided alone.
    pub(super) async fn apply_quiet_run(
        &self,
        conn: &mut PgConnection,
        tally: &mut Tally,
        queue: &mut VecDeque<Candidate<NextRow>>,
        first: (Candidate<NextRow>, Envelope),
    ) -> Result<Option<uuid::Uuid>, DrainError> {
        let (mut run, mut envelopes) = (vec![first.0], vec![first.1]);
        while let Some(next) = queue.front() {
            let eligible = !next.row.skipped
                && !tally.blocked[next.stream]
                && next
                    .row
                    .message
                    .type_name()
                    .is_some_and(|t| self.service.may_be_quiet(t));
            // An unreadable one is left to the usual path, which records
            // its failure.
            let Some(envelope) = eligible.then(|| next.row.message.envelope().ok()).flatten()
            else {
                break;
            };
            run.extend(queue.pop_front());
            envelopes.push(envelope);
        }
        let quiet = self
            .service
            .quiet_prefix(conn, &envelopes)
            .await?
            .min(run.len());
        let rest = run.split_off(quiet);
        for (c, envelope) in run.iter().zip(envelopes) {
            tally.applied(c.stream, &c.row, envelope);
        }
        let stopped_before = rest.first().map(|c| c.row.message_id);
        for c in rest.into_iter().rev() {
            queue.push_front(c);
        }
        Ok(stopped_before)
    }
}
