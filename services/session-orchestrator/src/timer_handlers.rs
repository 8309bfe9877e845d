//! Due timers: a launch that no node started in time, or a wait (a
//! restart's backoff, a provider's quota window) that is over. A quota wait
//! gave its project slot up, so its resume is admitted on the project's
//! stream like a launch.

use crate::domain::runners::{self, Fact, RunnerState};
use crate::handlers::{Orchestrator, SOURCE};
use crate::projections;
use crate::runner_store::{self, runner_stream};
use sqlx::PgConnection;
use stratavore_consumer::HandleError;
use stratavore_events::Envelope;
use stratavore_events::project::{ProjectEvent, RunnerAdmitted};
use stratavore_events::runner::RunnerEvent;
use stratavore_store::NewEntry;
use uuid::Uuid;

impl Orchestrator {
    /// A due timer: the launch timed out, or a wait is over.
    pub(crate) async fn decide_timer(
        &self,
        conn: &mut PgConnection,
        timer: &runner_store::DueTimer,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let Some((runner, version)) = runner_store::load_runner(conn, timer.runner_id).await?
        else {
            return Ok(Vec::new());
        };
        // A quota wait gave its slot up: its resume is admitted on the
        // project's stream like a launch, so a launch deciding at the same
        // time on the same version conflicts, and the last slot goes once.
        let admission =
            if timer.kind != "launch_timeout" && runner.state == RunnerState::WaitingQuota {
                let loaded = projections::load_project(conn, &runner.launch.project).await?;
                let active = runner_store::active_runners(conn, &runner.launch.project).await?;
                let free = loaded
                    .as_ref()
                    .is_none_or(|(p, _)| active < i64::from(p.max_concurrent_runners));
                Some((free, loaded.map_or(0, |(_, v)| v)))
            } else {
                None
            };
        let fact = if timer.kind == "launch_timeout" {
            Fact::LaunchTimedOut {
                attempt: timer.attempt,
            }
        } else {
            let retry = i64::try_from(self.runners.quota_slot_retry_ms).unwrap_or(i64::MAX);
            Fact::WaitOver {
                attempt: timer.attempt,
                fresh_session_id: Uuid::new_v4().to_string(),
                launch_deadline_ms: self.launch_deadline_ms(),
                slot_free: admission.is_none_or(|(free, _)| free),
                slot_retry_at_ms: self.now_ms().saturating_add(retry),
            }
        };
        // A timer has no message of its own: its entries are caused by a
        // synthetic envelope naming the runner, so correlation still works.
        let cause = Envelope {
            id: Uuid::now_v7(),
            source: SOURCE.to_owned(),
            type_name: format!("timer.{}", timer.kind),
            subject: timer.runner_id.to_string(),
            time: self.clock.now(),
            data: serde_json::Value::Null,
            stream: runner_stream(timer.runner_id),
            sequence: 0,
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            tracestate: None,
            idempotency_key: None,
        };
        let decision = runners::decide_fact(&runner, fact, self.now_ms(), self.policy());
        let offered = decision
            .events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Offered(_)));
        let mut entries = Vec::new();
        if let (Some((_, project_version)), true) = (admission, offered) {
            let admitted = ProjectEvent::RunnerAdmitted(RunnerAdmitted {
                command_id: cause.id,
                name: runner.launch.project.clone(),
                runner_id: runner.id,
            });
            entries.push(
                NewEntry::of(
                    &admitted,
                    SOURCE,
                    crate::handlers::project_stream(&runner.launch.project),
                    project_version + 1,
                    runner.launch.project.clone(),
                    self.clock.now(),
                )
                .caused_by(&cause),
            );
        }
        entries.extend(
            self.decided(conn, &runner, version, decision, &cause)
                .await?,
        );
        Ok(entries)
    }
}
