//! Decisions about nodes: a client's drain, and what a node's loss means
//! for every runner it concerns (recorded together, in one transaction, by
//! the replica that convicted the node: see `liveness_watch`).

use crate::domain::nodes::decide_drain;
use crate::domain::runners::{self, Fact};
use crate::handlers::{Orchestrator, SOURCE};
use crate::node_store::{self, node_drain_stream, node_lost_stream};
use crate::runner_store;
use sqlx::PgConnection;
use stratavore_consumer::HandleError;
use stratavore_events::Envelope;
use stratavore_events::process::{DrainNode, NodeDrain, NodeEvent, NodeLost, ProcessCommand};
use stratavore_store::NewEntry;
use uuid::Uuid;

impl Orchestrator {
    /// A client's drain (or undrain) of a node: recorded on the node's
    /// drain stream and sent to the node's control queue with that stream's
    /// version as `rev`, or refused.
    pub(crate) async fn decide_drain_command(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        cmd: &DrainNode,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let state = node_store::node_state(conn, &cmd.node).await?;
        match decide_drain(state, cmd, message.id) {
            Err(refused) => {
                // A refusal changes no node: it gets a stream of its own.
                let event = NodeEvent::DrainRefused(refused);
                Ok(vec![
                    NewEntry::of(
                        &event,
                        SOURCE,
                        crate::handlers::rejection_stream(message),
                        1,
                        cmd.node.clone(),
                        self.clock.now(),
                    )
                    .caused_by(message),
                ])
            }
            Ok(changed) => {
                let rev = node_store::drain_version(conn, &cmd.node).await? + 1;
                let event = NodeEvent::DrainChanged(changed);
                let recorded = NewEntry::of(
                    &event,
                    SOURCE,
                    node_drain_stream(&cmd.node),
                    rev,
                    cmd.node.clone(),
                    self.clock.now(),
                )
                .caused_by(message);
                let command = ProcessCommand::Drain(NodeDrain {
                    node: cmd.node.clone(),
                    draining: cmd.draining,
                    rev,
                });
                let sent = self.command_entry(
                    &command,
                    &cmd.node,
                    format!("drain-{}-{rev}", cmd.node),
                    message,
                );
                Ok(vec![recorded, sent])
            }
        }
    }

    /// The entries that record the loss of `incarnation` of `node` (version
    /// 1 of its own stream, so a second replica's record conflicts) and
    /// decide every runner it concerns; None when the loss is recorded
    /// already.
    pub async fn node_lost_entries(
        &self,
        conn: &mut PgConnection,
        node: &str,
        incarnation: Uuid,
        missed: u32,
    ) -> Result<Option<Vec<NewEntry>>, HandleError> {
        if node_store::loss_recorded(conn, node, incarnation).await? {
            return Ok(None);
        }
        let lost = NewEntry::of(
            &NodeEvent::Lost(NodeLost {
                node: node.to_owned(),
                incarnation,
                missed,
            }),
            SOURCE,
            node_lost_stream(node, incarnation),
            1,
            node,
            self.clock.now(),
        );
        let cause = lost.envelope.clone();
        let mut entries = vec![lost];
        for runner_id in node_store::runners_touching(conn, node).await? {
            let Some((runner, version)) = runner_store::load_runner(conn, runner_id).await? else {
                continue;
            };
            let fact = Fact::NodeLost {
                node: node.to_owned(),
                incarnation,
                session_node: node_store::session_node(conn, &runner.session_id).await?,
                shared_storage: self.runners.shared_session_storage,
                fresh_session_id: Uuid::new_v4().to_string(),
                launch_deadline_ms: self.launch_deadline_ms(),
            };
            let decision = runners::decide_fact(&runner, fact, self.now_ms(), self.policy());
            entries.extend(
                self.decided(conn, &runner, version, decision, &cause)
                    .await?,
            );
        }
        Ok(Some(entries))
    }
}
