//! What the orchestrator does with each message it receives: load the
//! state, decide (pure, in `domain`), return the events to append.

use crate::domain::projects::{self, target};
use crate::projections;
use sqlx::PgConnection;
use std::path::PathBuf;
use std::sync::Arc;
use stratavore_consumer::{Decider, HandleError, Projection};
use stratavore_events::budget::BudgetCommand;
use stratavore_events::process::{NodeCommand, NodeEvent, ProcessEvent};
use stratavore_events::project::{ProjectCommand, ProjectEvent};
use stratavore_events::runner::RunnerCommand;
use stratavore_events::{Envelope, Message, MessageKind, TypeName};
use stratavore_runtime::Clock;
use stratavore_store::{NewEntry, StoreError};

/// The CloudEvents source of everything the orchestrator writes.
pub const SOURCE: &str = "/stratavore/session-orchestrator";

/// The stream of a project's lifecycle.
pub fn project_stream(name: &str) -> String {
    format!("project-{name}")
}

/// The stream of the rejection of one command (a rejected command changes
/// no aggregate, so its answer gets a stream of its own).
pub fn rejection_stream(command: &Envelope) -> String {
    format!("rejection-{}", command.id)
}

/// The orchestrator's decider and projection.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    /// Where projects may live.
    pub allowed_roots: Vec<PathBuf>,
    /// Wall clock for event times and timers.
    pub clock: Arc<dyn Clock>,
    /// The launch saga's settings.
    pub runners: crate::config::RunnersSection,
    /// The agent profiles a launch may name.
    pub profiles: Arc<stratavore_profiles::Profiles>,
    /// `budgets.time_zone`, recorded in each budget created.
    pub budget_time_zone: String,
}

impl Orchestrator {
    fn entry_for(
        &self,
        event: &ProjectEvent,
        version_after: u64,
        command: &Envelope,
        name: &str,
    ) -> NewEntry {
        let (stream, version) = match event {
            ProjectEvent::Rejected(_) => (rejection_stream(command), 1),
            _ => (project_stream(name), version_after),
        };
        NewEntry::of(event, SOURCE, stream, version, name, self.clock.now()).caused_by(command)
    }

    async fn decide_project(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        command: ProjectCommand,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let name = target(&command).to_owned();
        let loaded = projections::load_project(conn, &name).await?;
        let (state, version) = match loaded {
            Some((project, version)) => (Some(project), version),
            None => (None, 0),
        };
        let event = projects::decide(
            state.as_ref(),
            &command,
            message.id,
            &self.allowed_roots,
            self.runners.max_concurrent_per_project,
        );
        Ok(vec![self.entry_for(&event, version + 1, message, &name)])
    }
}

impl Decider for Orchestrator {
    async fn decide(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let kind =
            TypeName::parse(&message.type_name).map_err(|e| HandleError::Message(e.to_string()))?;
        let t = message.type_name.as_str();
        let poison = |e: stratavore_events::DecodeError| HandleError::Message(e.to_string());
        if RunnerCommand::has_type(t) {
            return match RunnerCommand::from_data(t, message.data.clone()).map_err(poison)? {
                RunnerCommand::Launch(launch) => {
                    self.decide_launch_command(conn, message, &launch).await
                }
                RunnerCommand::Control(c) => {
                    self.decide_control_command(conn, message, c.runner_id, c.want)
                        .await
                }
            };
        }
        if NodeCommand::has_type(t) {
            let NodeCommand::Drain(drain) =
                NodeCommand::from_data(t, message.data.clone()).map_err(poison)?;
            return self.decide_drain_command(conn, message, &drain).await;
        }
        if NodeEvent::has_type(t) {
            return match NodeEvent::from_data(t, message.data.clone()).map_err(poison)? {
                NodeEvent::Registered(registered) => {
                    self.decide_node_registered(conn, message, &registered)
                        .await
                }
                // Our own decisions, heard back: decided already.
                NodeEvent::Lost(_) | NodeEvent::DrainChanged(_) | NodeEvent::DrainRefused(_) => {
                    Ok(Vec::new())
                }
            };
        }
        if BudgetCommand::has_type(t) {
            let command = BudgetCommand::from_data(t, message.data.clone()).map_err(poison)?;
            return self.decide_budget_command(conn, message, &command).await;
        }
        if ProcessEvent::has_type(t) {
            let event = ProcessEvent::from_data(t, message.data.clone()).map_err(poison)?;
            // Usage and reconciliations change no lifecycle: they are
            // spending, counted against budgets.
            return match crate::budget_store::spend_of_event(&event) {
                Some(spend) => self.decide_budget_spend(conn, message, &event, spend).await,
                None => self.decide_process_event(conn, message, event).await,
            };
        }
        match ProjectCommand::from_data(t, message.data.clone()) {
            Ok(command) => self.decide_project(conn, message, command).await,
            // A command nobody here understands cannot be answered: it goes
            // dead, and an operator can skip it.
            Err(e) if kind.kind == MessageKind::Command => Err(poison(e)),
            // Facts of aggregates this service follows but does not act on
            // yet change nothing.
            Err(_) => Ok(Vec::new()),
        }
    }

    fn may_be_quiet(&self, type_name: &str) -> bool {
        // Most of what nodes report (usage, text) decides nothing.
        ProcessEvent::has_type(type_name)
    }

    async fn quiet_prefix(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<usize, StoreError> {
        self.quiet_process_events(conn, messages).await
    }

    fn on_skipped(&self, message: &Envelope) -> Vec<NewEntry> {
        // A project command gets its terminal `rejected` even when it never
        // parsed (the reason it went dead): the gateway tracks it by id, and
        // its subject names the project.
        let command_of = |prefix: &str| {
            TypeName::parse(&message.type_name)
                .is_ok_and(|t| t.kind == MessageKind::Command && t.subject_part.starts_with(prefix))
        };
        if command_of("budget.") {
            // The gateway names the budget in the subject.
            let budget_id = uuid::Uuid::parse_str(&message.subject).unwrap_or_default();
            let event = crate::domain::budgets::skipped(budget_id, message.id);
            return vec![self.budget_entry(&event, budget_id, 1, message)];
        }
        if !command_of("project.") {
            return Vec::new();
        }
        let event = projects::skipped(&message.subject, message.id);
        vec![self.entry_for(&event, 1, message, &message.subject)]
    }
}

impl Projection for Orchestrator {
    fn tables(&self) -> &'static [&'static str] {
        projections::TABLES
    }

    async fn project_own(
        &self,
        conn: &mut PgConnection,
        entry: &Envelope,
    ) -> Result<(), StoreError> {
        projections::project_own(conn, entry).await?;
        crate::budget_store::project_budget_event(conn, entry).await?;
        crate::node_store::project_node_event(conn, entry).await?;
        crate::runner_store::project_runner_event(conn, entry).await
    }

    async fn project_received(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<(), StoreError> {
        crate::received::fold(conn, std::slice::from_ref(message)).await
    }

    async fn project_received_batch(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<(), StoreError> {
        crate::received::fold(conn, messages).await
    }
}
