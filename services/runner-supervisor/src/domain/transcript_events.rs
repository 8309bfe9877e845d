//! The process stream of an attempt, derived from what the shim leaves in
//! its runner directory: the transcript (`stdout.jsonl`) line by line, then
//! `exit.json`.
//!
//! The derivation is a deterministic fold: versions follow the order of the
//! facts and each event's id is [`event_id`] of runner, attempt and version.
//! A supervisor that restarts reads the transcript again from the first line
//! and derives the very same (version, id, event) triples, which the log's
//! unique (stream, version) refuses where they were already appended:
//! nothing billed twice, nothing lost.

use stratavore_agent_protocols::{
    AgentFact, AgentParser, LineStats, Outcome, ParserKind, ParserStart, TextRole, TokenUsage,
    parser_for, split_text,
};
use stratavore_agent_shim::runner_dir::{ExitReason, ExitRecord};
use stratavore_events::process::{
    ProcessCostReconciled, ProcessErrorReported, ProcessEvent, ProcessExited, ProcessFailed,
    ProcessSessionBound, ProcessSessionStarted, ProcessStalled, TextChunked, TranscriptFile,
    UsageReported,
};
use uuid::Uuid;

use super::pricing::PriceTable;
use super::stall::{StallMarker, StallPolicy};

/// The namespace of process event ids: UUIDv5 of the URL namespace and
/// `urn:stratavore:process-events`. It is part of every id ever appended,
/// so it must never change.
pub const PROCESS_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x4aaa1cdc_5083_5e25_8652_4223466625e6);

/// Version of `process.spawning`, written when the `start` is accepted.
/// (A claim is not part of this stream: several nodes may claim one attempt,
/// and a stream has one writer, so each claim is a stream of its own,
/// [`claim_stream_name`].)
pub const SPAWNING_VERSION: u64 = 1;
/// Version of `process.started`, written once the shim runs the agent.
pub const STARTED_VERSION: u64 = 2;
/// The first version derived from the transcript: the two above are the
/// supervisor's own.
pub const FIRST_DERIVED_VERSION: u64 = 3;

/// The stream of one node incarnation's claim of an attempt.
#[must_use]
pub fn claim_stream_name(runner: Uuid, attempt: u32, node: &str, incarnation: Uuid) -> String {
    format!("claim-{runner}-{attempt}-{node}-{incarnation}")
}

/// The id of version `version` of the process stream of `runner`'s
/// `attempt`, for every event of that stream, the supervisor's own first
/// two included: a rewrite after a crash carries the same id.
#[must_use]
pub fn event_id(runner: Uuid, attempt: u32, version: u64) -> Uuid {
    let name = format!("{runner}/{attempt}/{version}");
    Uuid::new_v5(&PROCESS_EVENT_NAMESPACE, name.as_bytes())
}

/// The process stream of `runner`'s `attempt`: `process-<runner>-<attempt>`.
#[must_use]
pub fn stream_name(runner: Uuid, attempt: u32) -> String {
    format!("process-{runner}-{attempt}")
}

/// Which attempt a transcript belongs to, and the node running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptIdentity {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt (from 1).
    pub attempt: u32,
    /// The node running it, the stream's one writer.
    pub node: String,
}

impl AttemptIdentity {
    /// The attempt's process stream.
    #[must_use]
    pub fn stream_name(&self) -> String {
        stream_name(self.runner_id, self.attempt)
    }
}

/// One event of the process stream, with its place and id in it.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedEvent {
    /// Its version in the attempt's process stream.
    pub version: u64,
    /// [`event_id`] of the attempt and `version`.
    pub id: Uuid,
    /// The event.
    pub event: ProcessEvent,
}

/// The longest error message carried by `process.error_reported`: an
/// agent's error line can hold a whole HTTP body.
pub const ERROR_MESSAGE_MAX_BYTES: usize = 2 * 1024;

/// What an attempt's derivation starts from, all of it known at launch (from
/// the offer and the node's profile) so a restart derives the same events.
#[derive(Debug, Clone)]
pub struct AttemptSetup {
    /// How tokens are priced.
    pub pricing: PriceTable,
    /// How the agent's output is read.
    pub parser: ParserKind,
    /// The session's usage before this attempt, for agents that report a
    /// running total (Codex).
    pub usage_baseline: TokenUsage,
    /// The session the attempt was launched with.
    pub session_id: String,
    /// The model the launch chose: what prices a turn whose output names
    /// no model (Codex prints none).
    pub model: Option<String>,
    /// Stalls the node recorded for the attempt (empty at launch).
    pub stalls: Vec<StallMarker>,
}

impl AttemptSetup {
    /// A Claude Code attempt with the built-in prices, nothing else known.
    #[must_use]
    pub fn claude(session_id: impl Into<String>) -> Self {
        Self {
            pricing: PriceTable::default(),
            parser: ParserKind::ClaudeStreamJson,
            usage_baseline: TokenUsage::default(),
            session_id: session_id.into(),
            model: None,
            stalls: Vec::new(),
        }
    }
}

/// Folds an agent's transcript, then the exit record, into process events.
#[derive(Debug)]
pub struct TranscriptDeriver {
    identity: AttemptIdentity,
    pricing: PriceTable,
    /// The session the attempt was launched with, until the agent names one.
    launch_session_id: String,
    /// The session the agent named: a resume may run under another id, and
    /// Codex chooses its thread id itself.
    started_session_id: Option<String>,
    /// The model the agent named at its start, else the launch's.
    model: Option<String>,
    parser: Box<dyn AgentParser>,
    next_version: u64,
    bound: bool,
    outcome: Option<Outcome>,
    estimated_costs: u64,
    /// The attempt's cost so far as priced from the table.
    priced_cost_usd: f64,
    /// Stalls not yet derived, in the order they happened.
    stalls: std::collections::VecDeque<StallMarker>,
    /// The policy of the last stall derived: a `stop` makes the exit a stall.
    stalled: Option<StallMarker>,
    /// Set once the exit event is derived: the stream ends with it.
    finished: bool,
}

impl TranscriptDeriver {
    /// A deriver at the start of the attempt's transcript.
    #[must_use]
    pub fn new(identity: AttemptIdentity, setup: AttemptSetup) -> Self {
        let mut stalls = setup.stalls;
        stalls.sort_by_key(|m| m.after_line);
        Self {
            identity,
            pricing: setup.pricing,
            launch_session_id: setup.session_id,
            started_session_id: None,
            model: setup.model,
            parser: parser_for(
                setup.parser,
                ParserStart {
                    usage_baseline: setup.usage_baseline,
                },
            ),
            next_version: FIRST_DERIVED_VERSION,
            bound: false,
            outcome: None,
            estimated_costs: 0,
            priced_cost_usd: 0.0,
            stalls: stalls.into(),
            stalled: None,
            finished: false,
        }
    }

    /// Folds the next transcript line (without its newline) and returns the
    /// events it completes. Malformed and unknown lines derive nothing and
    /// are counted. After [`Self::finish`] the stream has ended with its
    /// exit event, so later lines derive nothing.
    pub fn feed_line(&mut self, line: &str) -> Vec<DerivedEvent> {
        if self.finished {
            return Vec::new();
        }
        // A stall recorded before this line was read goes first, where it
        // went when it was recorded.
        let mut events = self.due_stalls();
        let facts = self.parser.feed(line);
        events.extend(self.derive(facts));
        events.extend(self.due_stalls());
        events
    }

    /// Records a stall the node saw after the lines fed so far: its event
    /// now, and, with the `stop` policy, an exit that says the node stopped
    /// the agent for it. The marker must also be kept where a restart finds
    /// it (the runner directory), so the derivation is the same again.
    pub fn stall(&mut self, marker: StallMarker) -> Vec<DerivedEvent> {
        if self.finished {
            return Vec::new();
        }
        self.stalls.push_back(marker);
        self.due_stalls()
    }

    fn due_stalls(&mut self) -> Vec<DerivedEvent> {
        let seen = self.parser.stats().lines_seen;
        let mut events = Vec::new();
        while let Some(marker) = self.stalls.pop_front() {
            if marker.after_line > seen {
                self.stalls.push_front(marker);
                break;
            }
            events.push(self.stall_event(marker));
        }
        events
    }

    fn stall_event(&mut self, marker: StallMarker) -> DerivedEvent {
        let event = ProcessEvent::Stalled(ProcessStalled {
            runner_id: self.identity.runner_id,
            attempt: self.identity.attempt,
            idle_ms: marker.idle_ms,
            policy: marker.policy.name().to_owned(),
        });
        self.stalled = Some(marker);
        self.next(event)
    }

    /// Ends the transcript with the shim's exit record: a turn the agent
    /// left open is still billed, then one `process.exited` (or
    /// `process.failed` when the agent never started) closes the stream.
    /// `transcript` describes the session's transcript file up to the end
    /// of the lines fed (the shell reads and hashes it; none when it could
    /// not), and goes into the exit as it is. Calling it again gives nothing.
    pub fn finish(
        &mut self,
        exit: &ExitRecord,
        transcript: Option<TranscriptFile>,
    ) -> Vec<DerivedEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut events = self.due_stalls();
        let facts = self.parser.finish();
        events.extend(self.derive(facts));
        events.extend(self.drain_stalls());
        let last = self.exit_event(exit, transcript);
        events.push(self.next(last));
        self.finished = true;
        events
    }

    /// Ends the transcript of an attempt whose end no shim recorded (this
    /// node killed it when it registered again): a turn left open is still
    /// billed, as in [`Self::finish`], then `exited` closes the stream.
    /// Calling it again, or after [`Self::finish`], gives nothing.
    pub fn finish_interrupted(&mut self, exited: ProcessEvent) -> Vec<DerivedEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut events = self.due_stalls();
        let facts = self.parser.finish();
        events.extend(self.derive(facts));
        events.extend(self.drain_stalls());
        events.push(self.next(exited));
        self.finished = true;
        events
    }

    /// The attempt this deriver derives for.
    #[must_use]
    pub fn identity(&self) -> &AttemptIdentity {
        &self.identity
    }

    /// The version the next derived event will have.
    #[must_use]
    pub fn next_version(&self) -> u64 {
        self.next_version
    }

    /// Whether the exit event was derived.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Line counts: fed, malformed, unknown, and the last that showed
    /// progress (what a stall timer counts from).
    #[must_use]
    pub fn stats(&self) -> LineStats {
        self.parser.stats()
    }

    /// Stalls recorded past the end of the transcript (it was cut short):
    /// derived at the end rather than lost.
    fn drain_stalls(&mut self) -> Vec<DerivedEvent> {
        let left: Vec<StallMarker> = self.stalls.drain(..).collect();
        left.into_iter().map(|m| self.stall_event(m)).collect()
    }

    /// Usage events priced by the price table's `default` row, since their
    /// model was unknown: their cost is an estimate.
    #[must_use]
    pub fn estimated_costs(&self) -> u64 {
        self.estimated_costs
    }

    fn derive(&mut self, facts: Vec<AgentFact>) -> Vec<DerivedEvent> {
        let mut events = Vec::with_capacity(facts.len());
        for fact in facts {
            if let Some(event) = self.event_of(fact) {
                events.push(self.next(event));
            }
        }
        events
    }

    fn next(&mut self, event: ProcessEvent) -> DerivedEvent {
        let version = self.next_version;
        self.next_version += 1;
        DerivedEvent {
            version,
            id: event_id(self.identity.runner_id, self.identity.attempt, version),
            event,
        }
    }

    fn event_of(&mut self, fact: AgentFact) -> Option<ProcessEvent> {
        let runner_id = self.identity.runner_id;
        let attempt = self.identity.attempt;
        match fact {
            AgentFact::SessionStarted {
                session_id, model, ..
            } => {
                if model.is_some() {
                    self.model.clone_from(&model);
                }
                // Said again with the same id, it changes nothing.
                if self.started_session_id.as_deref() == Some(session_id.as_str()) {
                    return None;
                }
                self.started_session_id = Some(session_id.clone());
                Some(ProcessEvent::SessionStarted(ProcessSessionStarted {
                    runner_id,
                    attempt,
                    session_id,
                    model,
                }))
            }
            AgentFact::UsageReported {
                turn, usage, model, ..
            } => Some(ProcessEvent::UsageReported(
                self.usage_event(turn, &usage, model),
            )),
            AgentFact::ErrorReported { message } => {
                let message = split_text(&message, ERROR_MESSAGE_MAX_BYTES)
                    .first()
                    .map(|piece| (*piece).to_owned())
                    .unwrap_or_default();
                Some(ProcessEvent::ErrorReported(ProcessErrorReported {
                    runner_id,
                    attempt,
                    message,
                }))
            }
            AgentFact::SessionBound { session_id } => {
                // Binding is a one-time transition of the runner, whatever
                // a parser might repeat.
                if self.bound {
                    return None;
                }
                self.bound = true;
                Some(ProcessEvent::SessionBound(ProcessSessionBound {
                    runner_id,
                    attempt,
                    session_id,
                }))
            }
            AgentFact::TextChunk { role, text } => Some(ProcessEvent::TextChunked(TextChunked {
                runner_id,
                attempt,
                session_id: self.session_id(),
                role: role_name(role).to_owned(),
                text,
            })),
            // The outcome waits for the exit record: only together do they
            // say how the attempt ended. The agent's own cost, when it gives
            // one, replaces what the table priced turn by turn.
            AgentFact::Finished {
                outcome,
                total_cost_usd,
                ..
            } => {
                self.outcome = Some(outcome);
                let reported = total_cost_usd.filter(|c| c.is_finite() && *c >= 0.0)?;
                Some(ProcessEvent::CostReconciled(ProcessCostReconciled {
                    runner_id,
                    attempt,
                    priced_cost_usd: self.priced_cost_usd,
                    reported_cost_usd: reported,
                }))
            }
        }
    }

    fn usage_event(
        &mut self,
        turn: u32,
        usage: &TokenUsage,
        model: Option<String>,
    ) -> UsageReported {
        // A turn that names no model (Codex's never do) is priced as the
        // model the agent started with, else the one the launch chose.
        let model = model.or_else(|| self.model.clone());
        let quote = self.pricing.quote(model.as_deref(), usage);
        if quote.estimated {
            self.estimated_costs += 1;
        }
        self.priced_cost_usd += quote.cost_usd;
        UsageReported {
            runner_id: self.identity.runner_id,
            attempt: self.identity.attempt,
            turn,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cost_usd: quote.cost_usd,
            model,
            session_id: self.session_id(),
        }
    }

    /// The session the agent runs: the one it named, else the launch's.
    fn session_id(&self) -> String {
        self.started_session_id
            .clone()
            .unwrap_or_else(|| self.launch_session_id.clone())
    }

    fn exit_event(&self, exit: &ExitRecord, transcript: Option<TranscriptFile>) -> ProcessEvent {
        let runner_id = self.identity.runner_id;
        let attempt = self.identity.attempt;
        let node = self.identity.node.clone();
        let Some(reason) = exit_reason_name(exit.reason) else {
            return ProcessEvent::Failed(ProcessFailed {
                runner_id,
                attempt,
                node,
                reason: exit
                    .detail
                    .clone()
                    .unwrap_or_else(|| "the agent could not be spawned".to_owned()),
            });
        };
        let stopped_for_stall = self
            .stalled
            .as_ref()
            .filter(|m| m.policy == StallPolicy::Stop)
            .filter(|_| {
                matches!(
                    exit.reason,
                    ExitReason::StoppedOnRequest | ExitReason::KilledOnRequest
                )
            });
        let (outcome, message, resets_at) = match (&self.outcome, stopped_for_stall) {
            // The node stopped it: whatever the agent printed last (a retry
            // error), the stall is why it ended.
            (_, Some(marker)) => ("stalled", Some(marker.describe()), None),
            (outcome, None) => match outcome {
                Some(Outcome::Succeeded) if exit.code == Some(0) => ("succeeded", None, None),
                // A success the process then contradicts (a non-zero code, a
                // signal) is no success: the work may not have been saved.
                Some(Outcome::Succeeded) | None => ("failed", Some(crash_message(exit)), None),
                Some(Outcome::Failed { reason }) => ("failed", Some(reason.clone()), None),
                Some(Outcome::RateLimited { resets_at, message }) => {
                    ("rate_limited", Some(message.clone()), *resets_at)
                }
            },
        };
        ProcessEvent::Exited(ProcessExited {
            runner_id,
            attempt,
            node,
            code: exit.code,
            signal: exit.signal,
            reason: reason.to_owned(),
            outcome: outcome.to_owned(),
            message,
            resets_at,
            transcript,
        })
    }
}

/// The `reason` of `process.exited`; None for a spawn failure, which is
/// `process.failed` instead. Spelt here rather than through serde so the
/// event's vocabulary cannot drift with the shim's file format unnoticed.
fn exit_reason_name(reason: ExitReason) -> Option<&'static str> {
    match reason {
        ExitReason::Exited => Some("exited"),
        ExitReason::KilledOnRequest => Some("killed_on_request"),
        ExitReason::StoppedOnRequest => Some("stopped_on_request"),
        ExitReason::LeaseExpired => Some("lease_expired"),
        ExitReason::SpawnFailed => None,
    }
}

fn role_name(role: TextRole) -> &'static str {
    match role {
        TextRole::User => "user",
        TextRole::Assistant => "assistant",
        TextRole::Result => "result",
    }
}

/// Why an attempt failed when its output does not say.
fn crash_message(exit: &ExitRecord) -> String {
    match (exit.code, exit.signal) {
        (_, Some(signal)) => format!("killed by signal {signal}"),
        (Some(0), None) => "exited with code 0 without reporting success".to_owned(),
        (Some(code), None) => format!("exited with code {code}"),
        (None, None) => "ended with no exit status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNER: Uuid = Uuid::from_u128(0x0192_3c4d_5e6f_7a8b_9c0d_1e2f_3a4b_5c6d);

    fn identity() -> AttemptIdentity {
        AttemptIdentity {
            runner_id: RUNNER,
            attempt: 2,
            node: "node-a".to_owned(),
        }
    }

    #[test]
    fn the_namespace_is_the_documented_derivation_and_never_changes() {
        assert_eq!(
            PROCESS_EVENT_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:stratavore:process-events")
        );
        // Pinned: a changed id format would let a restart append duplicates.
        assert_eq!(
            event_id(Uuid::nil(), 1, 1),
            Uuid::from_u128(0x7d31_5b2d_da9f_5e4d_81a9_41bb_8dfd_2ab8)
        );
    }

    #[test]
    fn event_ids_differ_by_runner_attempt_and_version() {
        let id = event_id(RUNNER, 1, 4);
        assert_eq!(id, event_id(RUNNER, 1, 4));
        assert_ne!(id, event_id(RUNNER, 1, 5));
        assert_ne!(id, event_id(RUNNER, 2, 4));
        assert_ne!(id, event_id(Uuid::nil(), 1, 4));
    }

    #[test]
    fn the_stream_is_named_after_runner_and_attempt() {
        assert_eq!(
            stream_name(RUNNER, 3),
            "process-01923c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d-3"
        );
        assert_eq!(identity().stream_name(), stream_name(RUNNER, 2));
    }
}
