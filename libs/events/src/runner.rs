//! Runners: one attempt after another of an agent process for a session.
//! The orchestrator is the one writer of a runner's lifecycle stream
//! (`runner-<id>`); clients ask through commands.

use crate::message_macro::message_family;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every state a runner can be in, as the API and metrics name them (the
/// orchestrator's state machine decides which it is in).
pub const RUNNER_STATES: &[&str] = &[
    "requested",
    "starting",
    "running",
    "paused",
    "stopping",
    "restarting",
    "waiting_quota",
    "exited",
    "failed",
    "lost",
    "rejected",
    "cancelled",
];

/// How a launch picks its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LaunchMode {
    /// A new session with a new id.
    New,
    /// The project's most recent resumable session.
    Continue,
    /// The session named by `session_id`.
    Resume,
}

/// What a client may ask of a running runner (a desired state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Want {
    /// Running (also: resume from a pause).
    Running,
    /// Frozen: every process of the runner stopped (SIGSTOP).
    Paused,
    /// Ended gracefully: SIGTERM, then SIGKILL after a grace period.
    Stopped,
    /// Ended at once: SIGKILL.
    Killed,
}

/// Why a runner is paused; only that cause lifts the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    /// A user asked.
    User,
    /// A budget with the pause action.
    Budget,
}

/// Launch a runner (sent by the gateway; decided by the orchestrator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRunner {
    /// The runner's id, assigned by the gateway.
    pub runner_id: Uuid,
    /// The project it works in.
    pub project: String,
    /// The agent profile (from config) to run.
    pub profile: String,
    /// The prompt.
    pub prompt: String,
    /// How the session is chosen.
    pub mode: LaunchMode,
    /// With `resume`: the session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// A model the profile allows.
    #[serde(default)]
    pub model: Option<String>,
    /// A permission setting the profile allows.
    #[serde(default)]
    pub permission: Option<String>,
    /// Tools the agent may use without asking, from the profile's allowlist.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// Restarts allowed after abnormal exits.
    #[serde(default)]
    pub max_restarts: Option<u32>,
}

/// Change a runner's desired state (stop, kill, pause, resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlRunner {
    /// The runner.
    pub runner_id: Uuid,
    /// What it should become.
    pub want: Want,
}

message_family! {
    /// Commands about runners, handled by the session-orchestrator.
    pub enum RunnerCommand: Command {
        /// Launch a runner.
        Launch(LaunchRunner) => "io.stratavore.command.runner.launch.v1", "session-orchestrator.runner.launch";
        /// Stop, kill, pause or resume a runner.
        Control(ControlRunner) => "io.stratavore.command.runner.control.v1", "session-orchestrator.runner.control";
    }
}

/// A launch passed every check; attempt 1 is being placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchApproved {
    /// The command this answers.
    pub command_id: Uuid,
    /// The runner.
    pub runner_id: Uuid,
    /// Its project.
    pub project: String,
    /// The project's path.
    pub path: String,
    /// Its profile.
    pub profile: String,
    /// The session it runs (a new id, or the one resumed).
    pub session_id: String,
    /// Whether attempt 1 resumes that session (continue/resume) or starts it.
    pub resume: bool,
    /// Model, when chosen.
    pub model: Option<String>,
    /// Permission setting, when chosen.
    pub permission: Option<String>,
    /// Restarts allowed.
    pub max_restarts: u32,
    /// The prompt (kept here because every attempt is offered with it).
    pub prompt: String,
    /// Tools the agent may use without asking (the launch's choice, or the
    /// profile's default).
    #[serde(default)]
    pub allowed_tools: Vec<String>,
}

/// A launch was refused; nothing runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRejected {
    /// The command this answers.
    pub command_id: Uuid,
    /// The runner.
    pub runner_id: Uuid,
    /// Stable reason (`unknown_project`, `project_archived`, `quota_reached`, …).
    pub reason: String,
    /// The input field at fault, when one is.
    pub field: Option<String>,
    /// A sentence for people.
    pub message: String,
}

/// An attempt was offered for placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptOffered {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// Whether this attempt resumes the session.
    pub resume: bool,
    /// The session.
    pub session_id: String,
    /// When the launch fails if no node has started it (unix milliseconds).
    pub launch_deadline_ms: i64,
}

/// A node's claim of the current attempt was accepted (`start` sent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptPlaced {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The node.
    pub node: String,
    /// The node's incarnation that claimed it.
    pub incarnation: Uuid,
}

/// The attempt's process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptRunning {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The agent's pid on its node.
    pub pid: u32,
}

/// The runner was paused, or resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseChanged {
    /// The runner.
    pub runner_id: Uuid,
    /// The cause (a resume lifts only its own cause).
    pub cause: PauseCause,
}

/// A stop or kill was asked for a runner that has a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequested {
    /// The runner.
    pub runner_id: Uuid,
    /// `stopped` (graceful) or `killed`.
    pub want: Want,
}

/// The agent's own session was bound (a first turn was saved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBound {
    /// The runner.
    pub runner_id: Uuid,
    /// The agent's session id.
    pub session_id: String,
}

/// An abnormal exit will be followed by another attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartScheduled {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt that ended.
    pub attempt: u32,
    /// When the next attempt may be offered (unix milliseconds).
    pub not_before_ms: i64,
    /// Why the attempt ended.
    pub reason: String,
}

/// An attempt was lost with its node; the next one follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptRelaunched {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt that was lost.
    pub attempt: u32,
    /// The node it was lost with.
    pub node: String,
    /// Why.
    pub reason: String,
}

/// The runner waits for a provider quota window to reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaWait {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt that hit the quota.
    pub attempt: u32,
    /// When it resumes (unix milliseconds).
    pub resume_at_ms: i64,
    /// The provider's message.
    pub message: String,
}

/// The runner ended: its terminal outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerEnded {
    /// The runner.
    pub runner_id: Uuid,
    /// The last attempt (0 when none was placed).
    pub attempt: u32,
    /// The agent's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Why it ended.
    pub reason: String,
}

/// A client's control command was decided: accepted (its effect, if any,
/// follows on the runner's stream; a request for the state the runner is
/// already in is accepted with no effect) or refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlDecided {
    /// The command this answers.
    pub command_id: Uuid,
    /// The runner.
    pub runner_id: Uuid,
    /// What was asked.
    pub want: Want,
    /// Why it was refused (`not_found`, `illegal_transition`); None when
    /// accepted.
    pub refused: Option<String>,
    /// A sentence for people.
    pub message: String,
}

message_family! {
    /// A runner's lifecycle, recorded by the session-orchestrator.
    pub enum RunnerEvent: Event {
        /// The launch was approved.
        LaunchApproved(LaunchApproved) => "io.stratavore.runner.launch_approved.v1", "runner.launch_approved";
        /// The launch was refused.
        LaunchRejected(LaunchRejected) => "io.stratavore.runner.launch_rejected.v1", "runner.launch_rejected";
        /// An attempt was offered to the nodes.
        Offered(AttemptOffered) => "io.stratavore.runner.offered.v1", "runner.offered";
        /// A node's claim was accepted.
        Placed(AttemptPlaced) => "io.stratavore.runner.placed.v1", "runner.placed";
        /// The attempt runs.
        Started(AttemptRunning) => "io.stratavore.runner.started.v1", "runner.started";
        /// Paused.
        Paused(PauseChanged) => "io.stratavore.runner.paused.v1", "runner.paused";
        /// Resumed.
        Resumed(PauseChanged) => "io.stratavore.runner.resumed.v1", "runner.resumed";
        /// Stopping.
        StopRequested(StopRequested) => "io.stratavore.runner.stop_requested.v1", "runner.stop_requested";
        /// Session bound.
        SessionBound(SessionBound) => "io.stratavore.runner.session_bound.v1", "runner.session_bound";
        /// Restart scheduled.
        RestartScheduled(RestartScheduled) => "io.stratavore.runner.restart_scheduled.v1", "runner.restart_scheduled";
        /// Waiting for a quota reset.
        WaitingQuota(QuotaWait) => "io.stratavore.runner.waiting_quota.v1", "runner.waiting_quota";
        /// Ended cleanly.
        Exited(RunnerEnded) => "io.stratavore.runner.exited.v1", "runner.exited";
        /// Failed.
        Failed(RunnerEnded) => "io.stratavore.runner.failed.v1", "runner.failed";
        /// Lost with its node, its session not resumable elsewhere.
        Lost(RunnerEnded) => "io.stratavore.runner.lost.v1", "runner.lost";
        /// Its attempt was lost with its node and it is offered again (its
        /// session was not bound, or lives on shared storage).
        Relaunched(AttemptRelaunched) => "io.stratavore.runner.relaunched.v1", "runner.relaunched";
        /// Cancelled before it ran, or while waiting.
        Cancelled(RunnerEnded) => "io.stratavore.runner.cancelled.v1", "runner.cancelled";
        /// A client's stop, kill, pause or resume was decided.
        ControlDecided(ControlDecided) => "io.stratavore.runner.control_decided.v1", "runner.control_decided";
    }
}
