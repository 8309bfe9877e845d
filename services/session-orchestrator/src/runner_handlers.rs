//! The launch saga's shell: load what a decision needs, decide (pure, in
//! `domain`), and turn the decision into entries for the log — runner
//! events on the runner's stream, commands to nodes on streams of their own.
//! A client's launch is in `launch_handlers`, due timers in
//! `timer_handlers`.

use crate::domain::runners::{self, Decision, Effect, ExitOutcome, Fact, RestartPolicy, Runner};
use crate::handlers::{Orchestrator, SOURCE};
use crate::metrics as m;
use crate::node_store;
use crate::runner_store::{self, runner_stream};
use crate::session_usage;
use sqlx::PgConnection;
use stratavore_consumer::HandleError;
use stratavore_events::process::{
    ClaimAnswer, DesiredState, OfferAttempt, ProcessCommand, ProcessEvent, TokenTotals, address,
    root_key,
};
use stratavore_events::runner::{RunnerEvent, Want};
use stratavore_events::{Envelope, Message};
use stratavore_store::NewEntry;
use uuid::Uuid;

/// What was looked up for a decision's offer.
#[derive(Debug, Default)]
struct Lookups {
    /// With a resume: the session's usage so far.
    usage_baseline: TokenTotals,
    /// With a resume, unless storage is shared: the node holding the
    /// session's files, whose own offer queue gets the offer.
    offer_node: Option<String>,
}

/// `process.exited` reasons that say the node ended the agent (it
/// restarted, or stopped renewing the lease), not the agent itself: the
/// runner goes on as after the node's loss, using no restart.
const NODE_FAILURE_REASONS: &[&str] = &["supervisor_restart", "lease_expired"];

impl Orchestrator {
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    pub(crate) fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            base_ms: i64::try_from(self.runners.restart_base_ms).unwrap_or(i64::MAX),
            max_ms: i64::try_from(self.runners.restart_max_ms).unwrap_or(i64::MAX),
        }
    }

    pub(crate) fn launch_deadline_ms(&self) -> i64 {
        self.now_ms() + i64::try_from(self.runners.launch_timeout_ms).unwrap_or(i64::MAX)
    }

    /// The allowed root a path lies in (the longest), whose offer queue
    /// the nodes serving it consume.
    fn root_of(&self, path: &str) -> String {
        self.allowed_roots
            .iter()
            .filter_map(|r| r.to_str())
            .map(|r| r.trim_end_matches('/'))
            .filter(|r| path == *r || path.starts_with(&format!("{r}/")))
            .max_by_key(|r| r.len())
            .unwrap_or(path)
            .to_owned()
    }

    pub(crate) fn entry(
        &self,
        event: &RunnerEvent,
        runner_id: Uuid,
        version: u64,
        cause: &Envelope,
    ) -> NewEntry {
        NewEntry::of(
            event,
            SOURCE,
            runner_stream(runner_id),
            version,
            runner_id.to_string(),
            self.clock.now(),
        )
        .caused_by(cause)
    }

    pub(crate) fn command_entry(
        &self,
        command: &ProcessCommand,
        target: &str,
        stream: String,
        cause: &Envelope,
    ) -> NewEntry {
        let mut entry =
            NewEntry::of(command, SOURCE, stream, 1, target, self.clock.now()).caused_by(cause);
        entry.routing_key = address(&command.routing_key(), target);
        entry
    }

    /// Entries for a decision about a runner whose stream is at `version`,
    /// with what the decision needs looked up first: when it offers an
    /// attempt that resumes a session, the session's usage so far and the
    /// node holding its files.
    pub(crate) async fn decided(
        &self,
        conn: &mut PgConnection,
        runner: &Runner,
        version: u64,
        decision: Decision,
        cause: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let resumes = decision
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Offer { resume: true, .. }));
        let mut lookups = Lookups::default();
        if resumes {
            // The session the offer resumes is the one the decision's own
            // events leave the runner with.
            let after = decision
                .events
                .iter()
                .fold(Some(runner.clone()), runners::apply)
                .unwrap_or_else(|| runner.clone());
            lookups.usage_baseline = session_usage::session_usage(conn, &after.session_id).await?;
            if !self.runners.shared_session_storage {
                lookups.offer_node = node_store::session_node(conn, &after.session_id).await?;
            }
        }
        if decision
            .events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Placed(_)))
        {
            self.observe_placement(conn, runner.id).await?;
        }
        Ok(self.decision_entries(runner, version, decision, lookups, cause))
    }

    /// Record how long the current attempt waited from its offer to the
    /// decision to start it.
    async fn observe_placement(
        &self,
        conn: &mut PgConnection,
        runner_id: Uuid,
    ) -> Result<(), HandleError> {
        let offered_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT time FROM log WHERE stream = $1 AND routing_key = 'runner.offered'
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(runner_stream(runner_id))
        .fetch_optional(conn)
        .await
        .map_err(stratavore_store::StoreError::new("reading an offer's time"))?;
        if let Some(offered_at) = offered_at {
            let waited = (self.clock.now() - offered_at).num_milliseconds().max(0);
            metrics::histogram!(m::PLACEMENT_SECONDS).record(waited as f64 / 1000.0);
        }
        Ok(())
    }

    /// Entries for a decision about a runner whose stream is at `version`,
    /// with what was looked up for its offer.
    fn decision_entries(
        &self,
        runner: &Runner,
        version: u64,
        decision: Decision,
        lookups: Lookups,
        cause: &Envelope,
    ) -> Vec<NewEntry> {
        let Lookups {
            usage_baseline,
            offer_node,
        } = lookups;
        let mut entries = Vec::new();
        let mut state = Some(runner.clone());
        let mut v = version;
        for event in &decision.events {
            v += 1;
            state = runners::apply(state, event);
            entries.push(self.entry(event, runner.id, v, cause));
        }
        let after = state.unwrap_or_else(|| runner.clone());
        let labels = [
            ("project", after.launch.project.clone()),
            ("profile", after.launch.profile.clone()),
        ];
        for event in &decision.events {
            match event {
                RunnerEvent::RestartScheduled(_) => {
                    metrics::counter!(m::RESTARTS_TOTAL, &labels).increment(1);
                }
                RunnerEvent::Relaunched(_) => {
                    metrics::counter!(m::RELAUNCHES_TOTAL, &labels).increment(1);
                }
                _ => {}
            }
        }
        // A session's files live on the node that ran it (unless storage is
        // shared): its resume goes to that node's own offer queue; anything
        // else to the nodes serving the root.
        let offer_target = |resume: bool| match (resume, &offer_node) {
            (true, Some(node)) => node.clone(),
            _ => root_key(&self.root_of(&after.launch.path)),
        };
        for effect in decision.effects {
            if matches!(effect, Effect::Revoke { .. }) {
                metrics::counter!(m::OFFERS_REVOKED_TOTAL).increment(1);
            }
            let command = match &effect {
                Effect::Offer { attempt, resume } => ProcessCommand::Offer(OfferAttempt {
                    runner_id: runner.id,
                    attempt: *attempt,
                    project: after.launch.project.clone(),
                    path: after.launch.path.clone(),
                    profile: after.launch.profile.clone(),
                    session_id: after.session_id.clone(),
                    resume: *resume,
                    prompt: after.launch.prompt.clone(),
                    model: after.launch.model.clone(),
                    permission: after.launch.permission.clone(),
                    allowed_tools: after.launch.allowed_tools.clone(),
                    usage_baseline: if *resume {
                        usage_baseline
                    } else {
                        TokenTotals::default()
                    },
                    target: offer_target(*resume),
                }),
                Effect::Start {
                    node,
                    incarnation,
                    attempt,
                }
                | Effect::Revoke {
                    node,
                    incarnation,
                    attempt,
                } => {
                    let answer = ClaimAnswer {
                        runner_id: runner.id,
                        attempt: *attempt,
                        node: node.clone(),
                        incarnation: *incarnation,
                        ttl_ms: self.runners.liveness_ttl_ms,
                    };
                    if matches!(effect, Effect::Start { .. }) {
                        ProcessCommand::Start(answer)
                    } else {
                        ProcessCommand::Revoke(answer)
                    }
                }
                Effect::Control {
                    node,
                    attempt,
                    want,
                } => ProcessCommand::Control(DesiredState {
                    runner_id: runner.id,
                    attempt: *attempt,
                    node: node.clone(),
                    want: *want,
                    rev: v,
                }),
            };
            let (target, stream) = match &effect {
                Effect::Offer { attempt, resume } => (
                    offer_target(*resume),
                    format!("offer-{}-{attempt}", runner.id),
                ),
                Effect::Start { node, attempt, .. } | Effect::Revoke { node, attempt, .. } => (
                    node.clone(),
                    format!("claim-answer-{}-{attempt}-{}", runner.id, cause.id),
                ),
                Effect::Control { node, attempt, .. } => (
                    node.clone(),
                    format!("desired-{}-{attempt}-{v}-{}", runner.id, cause.id),
                ),
            };
            entries.push(self.command_entry(&command, &target, stream, cause));
        }
        entries
    }

    /// A client's stop, kill, pause or resume.
    pub(crate) async fn decide_control_command(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        runner_id: Uuid,
        want: Want,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let decided = |refused: Option<&str>, message_text: String| {
            RunnerEvent::ControlDecided(stratavore_events::runner::ControlDecided {
                command_id: message.id,
                runner_id,
                want,
                refused: refused.map(str::to_owned),
                message: message_text,
            })
        };
        let Some((runner, version)) = runner_store::load_runner(conn, runner_id).await? else {
            // Every command gets its answer: a refusal on a stream of its own.
            let event = decided(Some("not_found"), format!("no runner {runner_id}"));
            let entry = NewEntry::of(
                &event,
                SOURCE,
                format!("rejection-{}", message.id),
                1,
                runner_id.to_string(),
                self.clock.now(),
            )
            .caused_by(message);
            return Ok(vec![entry]);
        };
        match runners::decide_control(&runner, want) {
            Ok(mut decision) => {
                // The answer first, then what it changes, on the runner's
                // stream.
                decision.events.insert(
                    0,
                    decided(None, format!("{want:?} accepted").to_lowercase()),
                );
                self.decided(conn, &runner, version, decision, message)
                    .await
            }
            Err(illegal) => {
                let event = decided(Some("illegal_transition"), illegal.to_string());
                Ok(vec![self.entry(&event, runner.id, version + 1, message)])
            }
        }
    }

    /// A fact a node reported.
    pub(crate) async fn decide_process_event(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        event: ProcessEvent,
    ) -> Result<Vec<NewEntry>, HandleError> {
        match self.lifecycle_fact(event) {
            Some((runner_id, fact)) => self.decide_fact_for(conn, message, runner_id, fact).await,
            None => Ok(Vec::new()),
        }
    }

    /// The fact a process event tells about its runner's lifecycle, if it
    /// tells one.
    pub(crate) fn lifecycle_fact(&self, event: ProcessEvent) -> Option<(Uuid, Fact)> {
        Some(match event {
            ProcessEvent::Claimed(c) => (
                c.runner_id,
                Fact::Claimed {
                    attempt: c.attempt,
                    node: c.node,
                    incarnation: c.incarnation,
                },
            ),
            ProcessEvent::Started(s) => (
                s.runner_id,
                Fact::ProcessStarted {
                    attempt: s.attempt,
                    node: s.node,
                    pid: s.pid,
                },
            ),
            ProcessEvent::SessionBound(b) => (
                b.runner_id,
                Fact::SessionBound {
                    attempt: b.attempt,
                    session_id: b.session_id,
                },
            ),
            ProcessEvent::Exited(e) => {
                let outcome = match e.outcome.as_str() {
                    "succeeded" => ExitOutcome::Clean,
                    // The node, not the agent, ended it.
                    _ if NODE_FAILURE_REASONS.contains(&e.reason.as_str()) => {
                        ExitOutcome::NodeFailure {
                            reason: e.message.clone().unwrap_or_else(|| e.reason.clone()),
                            fresh_session_id: Uuid::new_v4().to_string(),
                            launch_deadline_ms: self.launch_deadline_ms(),
                        }
                    }
                    "rate_limited" => ExitOutcome::RateLimited {
                        resume_at_ms: e.resets_at.map(|s| s.saturating_mul(1000)).unwrap_or_else(
                            || {
                                self.now_ms()
                                    + i64::try_from(self.runners.quota_wait_default_ms)
                                        .unwrap_or(i64::MAX)
                            },
                        ),
                        message: e.message.clone().unwrap_or_default(),
                    },
                    _ => ExitOutcome::Error(e.message.clone().unwrap_or_else(|| e.reason.clone())),
                };
                (
                    e.runner_id,
                    Fact::ProcessExited {
                        attempt: e.attempt,
                        code: e.code,
                        outcome,
                    },
                )
            }
            ProcessEvent::Failed(f) => (
                f.runner_id,
                Fact::ProcessExited {
                    attempt: f.attempt,
                    code: None,
                    outcome: ExitOutcome::Error(f.reason),
                },
            ),
            // Usage changes no lifecycle: it is spending (see
            // `decide_budget_spend`, which also counts it for dashboards).
            ProcessEvent::UsageReported(_) => return None,
            // Spawning, text, the agent's own session id and errors, cost
            // reconciliation and stalls change no lifecycle (a stall the
            // node acts on ends the attempt, which arrives as an exit).
            ProcessEvent::Spawning(_)
            | ProcessEvent::TextChunked(_)
            | ProcessEvent::SessionStarted(_)
            | ProcessEvent::ErrorReported(_)
            | ProcessEvent::CostReconciled(_)
            | ProcessEvent::Stalled(_) => return None,
        })
    }

    async fn decide_fact_for(
        &self,
        conn: &mut PgConnection,
        cause: &Envelope,
        runner_id: Uuid,
        fact: Fact,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let Some((runner, version)) = runner_store::load_runner(conn, runner_id).await? else {
            return Ok(Vec::new());
        };
        let decision = runners::decide_fact(&runner, fact, self.now_ms(), self.policy());
        self.decided(conn, &runner, version, decision, cause).await
    }

    /// A node registered: attempts its older incarnations claimed and never
    /// started are offered again as the next attempt.
    pub(crate) async fn decide_node_registered(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        registered: &stratavore_events::process::NodeRegistered,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let mut entries = Vec::new();
        for runner_id in runner_store::starting_on(conn, &registered.node).await? {
            let fact = Fact::NodeReincarnated {
                node: registered.node.clone(),
                incarnation: registered.incarnation,
                fresh_session_id: Uuid::new_v4().to_string(),
                launch_deadline_ms: self.launch_deadline_ms(),
            };
            entries.extend(self.decide_fact_for(conn, message, runner_id, fact).await?);
        }
        Ok(entries)
    }
}
