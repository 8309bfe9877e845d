//! Processes and nodes: what a supervisor node reports about the agent
//! processes it runs (stream `process-<runner>-<attempt>`, one writer: the
//! node running that attempt: `spawning` is version 1, `started` 2, then
//! what its transcript shows), about its claims (each claim a stream of its
//! own, `claim-<runner>-<attempt>-<node>-<incarnation>`, since several nodes
//! may claim one attempt) and about itself (stream `node-<node>`), and the
//! commands the orchestrator sends to nodes.
//!
//! Commands to a node are addressed: their routing key template holds
//! `{node}` (a node's control queue) or `{target}` (a shared offer queue of
//! a project root, see [`root_key`], or one node's own offer queue); fill it
//! with [`address`].

use crate::message_macro::message_family;
use crate::runner::Want;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The routing-key word naming a project root: `root-` and a stable hash
/// of the normalised path (paths hold dots and slashes, which routing keys
/// give meaning to).
pub fn root_key(root: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.trim_end_matches('/').bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("root-{hash:016x}")
}

/// Fill a routing key template's `{node}` or `{target}`.
pub fn address(template: &str, value: &str) -> String {
    template.replace("{node}", value).replace("{target}", value)
}

/// Offer an attempt for placement (to nodes serving its root, or to the
/// node that holds its session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferAttempt {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt offered.
    pub attempt: u32,
    /// The project.
    pub project: String,
    /// Where it works.
    pub path: String,
    /// The agent profile.
    pub profile: String,
    /// The session to start or resume.
    pub session_id: String,
    /// Whether to resume it.
    pub resume: bool,
    /// The prompt.
    pub prompt: String,
    /// Model, when chosen.
    pub model: Option<String>,
    /// Permission setting, when chosen.
    pub permission: Option<String>,
    /// Tools the agent may use without asking (from the profile's allowlist).
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// With `resume`: the session's usage so far, for an agent that reports
    /// usage as a running total of the session (Codex), so the resumed run
    /// counts from it rather than from zero.
    #[serde(default)]
    pub usage_baseline: TokenTotals,
    /// Where it was sent: a root key (the shared queue of the nodes serving
    /// that root) or a node id (that node's own queue). A node at capacity
    /// sends it back there for another node, or for later.
    #[serde(default)]
    pub target: String,
}

/// Token counters: uncached input, output, and the two prompt-cache kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenTotals {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// The orchestrator's answer to a claim: spawn it (`start`), or do not
/// (`revoke`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimAnswer {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// The node incarnation the answer is for; another ignores it.
    pub incarnation: Uuid,
    /// The liveness TTL (milliseconds) the node's leases derive from.
    pub ttl_ms: u64,
}

/// The desired state of an attempt's process tree on its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// What the tree should be.
    pub want: Want,
    /// The runner stream's version when this was decided: a node applies
    /// only a `rev` above the last it applied, so late duplicates and
    /// reorderings cannot undo a later decision.
    pub rev: u64,
}

message_family! {
    /// Commands to supervisor nodes.
    pub enum ProcessCommand: Command {
        /// Offer an attempt for placement.
        Offer(OfferAttempt) => "io.stratavore.command.process.offer.v1", "runner-supervisor.process.offer.{target}";
        /// Spawn the claimed attempt.
        Start(ClaimAnswer) => "io.stratavore.command.process.start.v1", "runner-supervisor.process.start.{node}";
        /// Do not spawn the claimed attempt.
        Revoke(ClaimAnswer) => "io.stratavore.command.process.revoke.v1", "runner-supervisor.process.revoke.{node}";
        /// Bring an attempt's process tree to a desired state.
        Control(DesiredState) => "io.stratavore.command.process.control.v1", "runner-supervisor.process.control.{node}";
        /// Stop taking offers (drain), or take them again.
        Drain(NodeDrain) => "io.stratavore.command.process.drain.v1", "runner-supervisor.process.drain.{node}";
    }
}

/// Whether a node takes new offers: a draining node lets its runners finish
/// and takes none. `rev` orders the orchestrator's decisions for the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDrain {
    /// The node.
    pub node: String,
    /// True: take no more offers.
    pub draining: bool,
    /// The drain stream's version when decided; a lower one changes nothing.
    pub rev: u64,
}

/// A node claimed an offered attempt, or is spawning it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessClaim {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// The node's current incarnation.
    pub incarnation: Uuid,
}

/// The attempt's agent was spawned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessStarted {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// The agent's pid.
    pub pid: u32,
}

/// Tokens (and cost) one agent turn used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageReported {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The turn within the attempt (from 1).
    pub turn: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Cost priced from the model's table, in USD.
    pub cost_usd: f64,
    /// The model, when the agent said.
    pub model: Option<String>,
    /// The agent's session the tokens were spent in (empty in events
    /// written before it was recorded).
    #[serde(default)]
    pub session_id: String,
}

/// The agent named its session (Claude Code's init, Codex's thread): the
/// runner shows it while it runs, before a first turn binds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSessionStarted {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The agent's session id.
    pub session_id: String,
    /// The model, when the agent said.
    pub model: Option<String>,
}

/// The agent printed an error it may still recover from (a retry, a lost
/// connection): the runner's latest error while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessErrorReported {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The agent's words (size-capped).
    pub message: String,
}

/// The agent's own cost figure for the attempt arrived: it replaces the sum
/// priced from the table turn by turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessCostReconciled {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The attempt's cost as priced from the table, in USD.
    pub priced_cost_usd: f64,
    /// The agent's own figure, in USD.
    pub reported_cost_usd: f64,
}

/// The agent made no progress (a turn, an item, assistant text) for its
/// profile's stall timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessStalled {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// How long it went without progress, in milliseconds.
    pub idle_ms: u64,
    /// `stop` (the node stops it) or `flag` (it keeps running, flagged).
    pub policy: String,
}

/// The agent's own session is bound (a first turn was saved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSessionBound {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The agent's session id.
    pub session_id: String,
}

/// A piece of the session's text, for search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextChunked {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The session.
    pub session_id: String,
    /// `user`, `assistant` or `result`.
    pub role: String,
    /// The text (size-capped).
    pub text: String,
}

/// How an attempt's process ended, once no descendant of it remained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessExited {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when one ended it.
    pub signal: Option<i32>,
    /// `exited`, `stopped_on_request`, `killed_on_request`,
    /// `lease_expired` or `supervisor_restart`.
    pub reason: String,
    /// What the agent's output says: `succeeded`, `failed`, `rate_limited`,
    /// or `stalled` (the node stopped it for making no progress).
    pub outcome: String,
    /// The failure or rate-limit message.
    pub message: Option<String>,
    /// With `rate_limited`: when the quota resets (unix seconds).
    pub resets_at: Option<i64>,
    /// The session's transcript file as it stood when the attempt ended
    /// (none when it could not be read, and in events written before it
    /// was recorded).
    #[serde(default)]
    pub transcript: Option<TranscriptFile>,
}

/// A session transcript file on the node that holds it: where it is, and
/// its size and checksum over the bytes written up to a given moment, so a
/// reader can tell whether the file it finds is still the one described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscriptFile {
    /// The file's path on the node.
    pub path: String,
    /// Bytes covered (the whole file then: every attempt of the session so far).
    pub bytes: u64,
    /// The sha256 of those bytes, lower-case hex.
    pub sha256: String,
}

/// An attempt could not be spawned (executable missing, path refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessFailed {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// Why.
    pub reason: String,
}

message_family! {
    /// What supervisor nodes report about agent processes.
    pub enum ProcessEvent: Event {
        /// An offer was claimed.
        Claimed(ProcessClaim) => "io.stratavore.process.claimed.v1", "process.claimed";
        /// A `start` was accepted; the spawn is about to happen.
        Spawning(ProcessClaim) => "io.stratavore.process.spawning.v1", "process.spawning";
        /// The agent runs.
        Started(ProcessStarted) => "io.stratavore.process.started.v1", "process.started";
        /// A turn's usage.
        UsageReported(UsageReported) => "io.stratavore.process.usage_reported.v1", "process.usage_reported";
        /// The session is bound.
        SessionBound(ProcessSessionBound) => "io.stratavore.process.session_bound.v1", "process.session_bound";
        /// The agent named its session.
        SessionStarted(ProcessSessionStarted) => "io.stratavore.process.session_started.v1", "process.session_started";
        /// The agent reported an error it may recover from.
        ErrorReported(ProcessErrorReported) => "io.stratavore.process.error_reported.v1", "process.error_reported";
        /// The agent's own cost figure replaced the priced one.
        CostReconciled(ProcessCostReconciled) => "io.stratavore.process.cost_reconciled.v1", "process.cost_reconciled";
        /// The agent made no progress for its stall timeout.
        Stalled(ProcessStalled) => "io.stratavore.process.stalled.v1", "process.stalled";
        /// Session text for search.
        TextChunked(TextChunked) => "io.stratavore.process.text_chunked.v1", "process.text_chunked";
        /// The process tree is gone.
        Exited(ProcessExited) => "io.stratavore.process.exited.v1", "process.exited";
        /// It could not be spawned.
        Failed(ProcessFailed) => "io.stratavore.process.failed.v1", "process.failed";
    }
}

/// A supervisor node (re)registered: the one moment it starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistered {
    /// The node's stable id.
    pub node: String,
    /// A UUIDv7 it made for this registration.
    pub incarnation: Uuid,
    /// How many runners it takes at once.
    pub capacity: u32,
    /// The project roots it serves.
    pub roots: Vec<String>,
    /// Its HTTP address (transcripts are read from it).
    pub address: String,
}

/// The orchestrator declared a node incarnation lost: it missed `missed`
/// ticks in a row (covering the liveness TTL and a grace period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeLost {
    /// The node.
    pub node: String,
    /// The incarnation declared lost.
    pub incarnation: Uuid,
    /// Ticks counted since its last heartbeat.
    pub missed: u32,
}

/// A node was set to drain (take no new offers) or to take offers again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDrainChanged {
    /// The command that asked.
    pub command_id: Uuid,
    /// The node.
    pub node: String,
    /// Whether it now drains.
    pub draining: bool,
}

/// A client's drain command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDrainRefused {
    /// The command this answers.
    pub command_id: Uuid,
    /// The node named.
    pub node: String,
    /// What was asked.
    pub draining: bool,
    /// Why: `not_found` (no node registered by that id) or `node_lost`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

message_family! {
    /// What is known of supervisor nodes: their registrations (written by
    /// each node), their loss and drain (written by the orchestrator).
    pub enum NodeEvent: Event {
        /// A node registered.
        Registered(NodeRegistered) => "io.stratavore.node.registered.v1", "node.registered";
        /// A node incarnation was declared lost.
        Lost(NodeLost) => "io.stratavore.node.lost.v1", "node.lost";
        /// A node's drain was set or lifted.
        DrainChanged(NodeDrainChanged) => "io.stratavore.node.drain_changed.v1", "node.drain_changed";
        /// A drain command was refused.
        DrainRefused(NodeDrainRefused) => "io.stratavore.node.drain_refused.v1", "node.drain_refused";
    }
}

/// Drain a node, or lift its drain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainNode {
    /// The node.
    pub node: String,
    /// True to drain, false to take offers again.
    pub draining: bool,
}

message_family! {
    /// Client commands about nodes.
    pub enum NodeCommand: Command {
        /// Drain a node or lift its drain.
        Drain(DrainNode) => "io.stratavore.command.node.drain.v1", "session-orchestrator.node.drain";
    }
}

/// One runner's process as a heartbeat samples it from `/proc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerSample {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The agent's pid.
    pub pid: u32,
    /// CPU time used by the agent and its descendants, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory of the agent and its descendants, in bytes.
    pub rss_bytes: u64,
}

/// A supervisor node is alive (telemetry on the live exchange, routing key
/// `node.heartbeat.<node>`; never logged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHeartbeat {
    /// The node.
    pub node: String,
    /// Its current incarnation.
    pub incarnation: Uuid,
    /// Heartbeats of this incarnation before this one.
    pub seq: u64,
    /// How often it sends them, in milliseconds.
    pub interval_ms: u64,
    /// Runners it takes at once.
    pub capacity: u32,
    /// Whether it drains.
    pub draining: bool,
    /// Its runners' processes.
    pub runners: Vec<RunnerSample>,
}

/// An orchestrator replica's clock tick (live exchange, routing key
/// `orchestrator.tick.<replica>`, read only by that replica): ticks, not
/// seconds, are what a node's missed heartbeats are counted in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorTick {
    /// The replica.
    pub replica: Uuid,
    /// Ticks of this replica before this one.
    pub seq: u64,
}

/// The longest line a [`RunnerOutput`] carries, in bytes: a longer one is
/// cut (at a character boundary) and marked `truncated`; the whole line
/// stays in the transcript.
pub const MAX_OUTPUT_LINE_BYTES: usize = 16 * 1024;

/// One line an agent wrote to its stdout (live exchange, routing key
/// `runner.output.<runner>`, published by the node that runs it; never
/// logged). The transcript on the node keeps every line; this is only the
/// live copy, and one that is lost is still there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerOutput {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// Where the line starts, in bytes from the start of the attempt's
    /// part of its session transcript (the offsets the node's transcript
    /// endpoint counts in), so a reader can tell a line it already has.
    pub offset: u64,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
    /// The line was longer than 16 KiB and was cut to that (at a character
    /// boundary); the transcript has all of it.
    #[serde(default)]
    pub truncated: bool,
}

message_family! {
    /// Telemetry on the live exchange: not persistent, never logged or
    /// inboxed. The routing key gets the node, replica or runner appended.
    pub enum LiveMessage: Event {
        /// A node's heartbeat.
        Heartbeat(NodeHeartbeat) => "io.stratavore.node.heartbeat.v1", "node.heartbeat";
        /// An orchestrator replica's tick.
        Tick(OrchestratorTick) => "io.stratavore.orchestrator.tick.v1", "orchestrator.tick";
        /// A line of a runner's output.
        Output(RunnerOutput) => "io.stratavore.runner.output.v1", "runner.output";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keys_are_stable_routing_words_and_ignore_a_trailing_slash() {
        let k = root_key("/srv/projects");
        assert_eq!(k, root_key("/srv/projects/"));
        assert_ne!(k, root_key("/srv/other"));
        assert!(
            k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{k}"
        );
    }

    #[test]
    fn addressed_routing_keys_are_filled_in() {
        use crate::Message;
        let cmd = ProcessCommand::Control(DesiredState {
            runner_id: Uuid::nil(),
            attempt: 1,
            node: "n1".into(),
            want: Want::Paused,
            rev: 3,
        });
        assert_eq!(
            address(&cmd.routing_key(), "n1"),
            "runner-supervisor.process.control.n1"
        );
    }
}
