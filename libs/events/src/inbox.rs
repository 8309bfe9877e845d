//! Operator decisions about dead letters, recorded in the deciding
//! service's own log like any other fact.

use crate::message_macro::message_family;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An operator replayed or skipped a dead inbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterDecision {
    /// The service whose inbox holds the row.
    pub service: String,
    /// The dead message.
    pub message_id: Uuid,
    /// The log it came from.
    pub source_log: String,
    /// Its stream.
    pub stream: String,
    /// Its version in that stream.
    pub stream_version: u64,
    /// Its type (as received; may be unknown).
    pub message_type: String,
    /// Why it was dead.
    pub last_error: Option<String>,
}

message_family! {
    /// What operators decided about dead letters.
    pub enum InboxEvent: Event {
        /// The row goes back to `received` and is applied again.
        Replayed(DeadLetterDecision) => "io.stratavore.inbox.dead_letter_replayed.v1", "inbox.dead_letter_replayed";
        /// The row is passed over; its stream moves on without it.
        Skipped(DeadLetterDecision) => "io.stratavore.inbox.dead_letter_skipped.v1", "inbox.dead_letter_skipped";
    }
}
