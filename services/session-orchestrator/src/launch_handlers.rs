//! A client's launch: look up what the decision needs (the project and its
//! version, active runners, the sessions it may resolve to, budgets in
//! scope), decide (pure, `domain::launch`), and turn an approval into the
//! project's admission, the runner's first events and its first offer.

use crate::domain::launch::{LaunchFacts, decide_launch};
use crate::domain::runners::{self, Decision, Effect};
use crate::handlers::{Orchestrator, SOURCE};
use crate::metrics as m;
use crate::node_store;
use crate::projections;
use crate::runner_store;
use sqlx::PgConnection;
use stratavore_consumer::HandleError;
use stratavore_events::Envelope;
use stratavore_events::project::{ProjectEvent, RunnerAdmitted};
use stratavore_events::runner::{LaunchRunner, RunnerEvent};
use stratavore_store::NewEntry;
use uuid::Uuid;

impl Orchestrator {
    /// A client's launch.
    pub(crate) async fn decide_launch_command(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        cmd: &LaunchRunner,
    ) -> Result<Vec<NewEntry>, HandleError> {
        if runner_store::load_runner(conn, cmd.runner_id)
            .await?
            .is_some()
        {
            // The id is taken: answer on the command's own stream, never on
            // the existing runner's.
            let event = RunnerEvent::LaunchRejected(stratavore_events::runner::LaunchRejected {
                command_id: message.id,
                runner_id: cmd.runner_id,
                reason: "runner_exists".into(),
                field: Some("runner_id".into()),
                message: format!("runner {} exists already", cmd.runner_id),
            });
            let entry = NewEntry::of(
                &event,
                SOURCE,
                format!("rejection-{}", message.id),
                1,
                cmd.runner_id.to_string(),
                self.clock.now(),
            )
            .caused_by(message);
            return Ok(vec![entry]);
        }
        let loaded = projections::load_project(conn, &cmd.project).await?;
        let project_version = loaded.as_ref().map_or(0, |(_, v)| *v);
        let project = loaded.map(|(p, _)| p);
        let active_runners = runner_store::active_runners(conn, &cmd.project).await?;
        let latest_resumable = runner_store::latest_resumable(conn, &cmd.project)
            .await?
            .map(|s| s.session_id);
        let named_session = match &cmd.session_id {
            Some(id) => runner_store::session(conn, id)
                .await?
                .map(|s| (s.project, s.bound, s.active_runner.is_some())),
            None => None,
        };
        let sessions_on_lost_nodes = if self.runners.shared_session_storage {
            Vec::new()
        } else {
            let candidates: Vec<String> = latest_resumable
                .iter()
                .chain(cmd.session_id.iter())
                .cloned()
                .collect();
            node_store::sessions_on_lost_nodes(conn, &candidates).await?
        };
        let facts = LaunchFacts {
            project,
            active_runners,
            profile: self.profiles.get(&cmd.profile).cloned(),
            latest_resumable,
            named_session,
            sessions_on_lost_nodes,
            fresh_session_id: Uuid::new_v4().to_string(),
            default_max_restarts: self.runners.default_max_restarts,
            budgets: self
                .launch_budgets(conn, &cmd.project, &cmd.profile)
                .await?,
        };
        let decided = decide_launch(cmd, message.id, &facts);
        let outcome = match &decided {
            Ok(_) => "approved".to_owned(),
            Err(r) => r.reason.clone(),
        };
        metrics::counter!(m::LAUNCHES_TOTAL, "outcome" => outcome).increment(1);
        match decided {
            Err(rejected) => {
                let event = RunnerEvent::LaunchRejected(rejected);
                Ok(vec![self.entry(&event, cmd.runner_id, 1, message)])
            }
            Ok(approved) => {
                let approved_event = RunnerEvent::LaunchApproved(approved);
                let runner = runners::apply(None, &approved_event).ok_or_else(|| {
                    HandleError::Message("an approval that makes no runner".into())
                })?;
                // The admission takes the project's next version: a launch
                // deciding at the same time on the same version conflicts
                // and decides again, so the last slot is taken once.
                let admitted = ProjectEvent::RunnerAdmitted(RunnerAdmitted {
                    command_id: message.id,
                    name: cmd.project.clone(),
                    runner_id: cmd.runner_id,
                });
                let mut entries = vec![
                    NewEntry::of(
                        &admitted,
                        SOURCE,
                        crate::handlers::project_stream(&cmd.project),
                        project_version + 1,
                        cmd.project.clone(),
                        self.clock.now(),
                    )
                    .caused_by(message),
                    self.entry(&approved_event, cmd.runner_id, 1, message),
                ];
                let offered = RunnerEvent::Offered(stratavore_events::runner::AttemptOffered {
                    runner_id: runner.id,
                    attempt: 1,
                    resume: runner.session_bound,
                    session_id: runner.session_id.clone(),
                    launch_deadline_ms: self.launch_deadline_ms(),
                });
                let decision = Decision {
                    events: vec![offered],
                    effects: vec![Effect::Offer {
                        attempt: 1,
                        resume: runner.session_bound,
                    }],
                };
                entries.extend(self.decided(conn, &runner, 1, decision, message).await?);
                Ok(entries)
            }
        }
    }
}
