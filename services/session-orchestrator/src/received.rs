//! What received messages change in the orchestrator's tables: nodes'
//! registrations (`nodes`), spending (`budget_spend`) and sessions' token
//! totals (`session_usage`). Each message is parsed once.
//!
//! Registrations are folded in their order. Spending is inserted by message
//! id and sessions' totals are sums, so neither depends on the order of the
//! messages folded together: each is one statement per slice, whatever the
//! slice (a drain's quiet run, a rebuild's page, one message).

use crate::budget_store::{self, SpendRow};
use crate::{node_store, session_usage};
use sqlx::PgConnection;
use stratavore_events::process::{NodeEvent, ProcessEvent};
use stratavore_events::{Envelope, Message};
use stratavore_store::StoreError;

/// Fold applied received messages, in their order.
pub async fn fold(conn: &mut PgConnection, messages: &[Envelope]) -> Result<(), StoreError> {
    let mut spending = Vec::new();
    let mut usage = Vec::new();
    for message in messages {
        // Only the family's own messages are parsed: parsing copies the
        // payload, and most of what arrives is process events with text.
        let type_name = message.type_name.as_str();
        if NodeEvent::has_type(type_name) {
            // Registrations are the nodes' own; the losses and drains heard
            // back are folded from the log already.
            if let Ok(NodeEvent::Registered(_)) =
                NodeEvent::from_data(type_name, message.data.clone())
            {
                node_store::project_node_event(conn, message).await?;
            }
            continue;
        }
        if !ProcessEvent::has_type(type_name) {
            continue;
        }
        let Ok(event) = ProcessEvent::from_data(type_name, message.data.clone()) else {
            continue;
        };
        if let Some((runner_id, spend)) = budget_store::spend_of_event(&event) {
            spending.push(SpendRow {
                message_id: message.id,
                runner_id,
                time: message.time,
                spend,
            });
        }
        if let ProcessEvent::UsageReported(u) = event {
            usage.push(u);
        }
    }
    budget_store::record_spending(conn, &spending).await?;
    session_usage::add_usage(conn, &usage).await
}
