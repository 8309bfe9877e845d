//! One runner's messages: the client's launch, and what the orchestrator
//! and the node running it say about it, in the order the gateway applies
//! them.

use super::{History, ORCHESTRATOR, Run, id};
use chrono::{DateTime, TimeDelta, Utc};
use stratavore_events::budget::{BudgetAlert, BudgetEvent};
use stratavore_events::process::{
    ProcessClaim, ProcessCostReconciled, ProcessEvent, ProcessExited, ProcessSessionBound,
    ProcessSessionStarted, ProcessStarted, TextChunked, TranscriptFile, UsageReported,
};
use stratavore_events::project::{ProjectEvent, RunnerAdmitted};
use stratavore_events::runner::{
    AttemptOffered, AttemptPlaced, AttemptRunning, LaunchApproved, LaunchMode, LaunchRunner,
    RunnerCommand, RunnerEnded, RunnerEvent, SessionBound,
};
use stratavore_store::NewEntry;
use uuid::Uuid;

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// Turns of successive sessions: 20 on average.
const TURNS: [u32; 5] = [4, 12, 20, 28, 36];
/// Every n-th runner resumes an earlier session of its project.
const RESUME_EVERY: u64 = 8;
/// A project's budget reaches its threshold at its n-th runner.
const THRESHOLD_AT_RUNNER: u64 = 10;
/// Every n-th runner is a Codex one, whose agent names its own session (a
/// thread) instead of the launch's.
const CODEX_EVERY: u64 = 20;
/// Every n-th runner's last reply is long: the node cuts it into pieces.
const LONG_REPLY_EVERY: u64 = 16;

/// Numbers that vary from runner to runner and turn to turn, the same in
/// every run (splitmix64).
fn varied(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one runner's streams have reached while its messages are built.
struct RunStreams {
    runner_id: Uuid,
    /// The client's launch, which every orchestrator event follows from.
    cause: stratavore_events::Envelope,
    node_source: String,
    at: DateTime<Utc>,
    runner_version: u64,
    process_version: u64,
}

impl RunStreams {
    fn runner(&mut self, event: RunnerEvent) -> NewEntry {
        self.runner_version += 1;
        NewEntry::of(
            &event,
            ORCHESTRATOR,
            format!("runner-{}", self.runner_id),
            self.runner_version,
            self.runner_id.to_string(),
            self.at,
        )
        .caused_by(&self.cause)
    }

    fn process(&mut self, event: ProcessEvent) -> NewEntry {
        self.process_version += 1;
        NewEntry::of(
            &event,
            &self.node_source,
            format!("process-{}-1", self.runner_id),
            self.process_version,
            self.runner_id.to_string(),
            self.at,
        )
    }
}

impl History {
    /// One runner of one attempt: the client's launch and what the gateway
    /// receives about it, in the order it applies them.
    pub(super) fn run(&mut self, launched_at: DateTime<Utc>) -> anyhow::Result<Run> {
        let n = self.runners;
        self.runners += 1;
        let p = usize::try_from(n)? % self.projects.len();
        let node_index = usize::try_from(n)? % self.nodes.len();
        let (node, incarnation) = (
            self.nodes[node_index].name.clone(),
            self.nodes[node_index].incarnation,
        );
        let turns = TURNS[usize::try_from(n)? % TURNS.len()];
        let resumed = (n % RESUME_EVERY == RESUME_EVERY - 1)
            .then(|| self.projects[p].sessions.last().cloned())
            .flatten();
        let session = resumed
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let codex = resumed.is_none() && n % CODEX_EVERY == CODEX_EVERY - 1;
        let (profile, model) = if codex {
            ("codex", "gpt-5-codex")
        } else {
            ("claude-code", MODEL)
        };
        // The session the agent runs: the launch's, or the thread a Codex
        // agent starts.
        let agent_session = if codex {
            Uuid::new_v4().to_string()
        } else {
            session.clone()
        };
        let (project, budget) = (self.projects[p].name.clone(), self.projects[p].budget);
        let path = format!("/srv/projects/{project}");
        let prompt = self.texts.prompt(usize::try_from(n)?).to_owned();
        let runner_id = id();
        let launch = self.command(
            &RunnerCommand::Launch(LaunchRunner {
                runner_id,
                project: project.clone(),
                profile: profile.into(),
                prompt: prompt.clone(),
                mode: if resumed.is_some() {
                    LaunchMode::Resume
                } else {
                    LaunchMode::New
                },
                session_id: resumed.clone(),
                model: Some(model.into()),
                permission: None,
                allowed_tools: None,
                max_restarts: None,
            }),
            &runner_id.to_string(),
            n.is_multiple_of(2).then(|| format!("launch-{runner_id}")),
            launched_at,
        );
        let mut s = RunStreams {
            runner_id,
            cause: launch.envelope.clone(),
            node_source: format!("/stratavore/runner-supervisor/{node}"),
            at: launched_at,
            runner_version: 0,
            process_version: 0,
        };
        let resume = resumed.is_some();
        let attempt = 1;
        let pid = 10_000 + u32::try_from(n % 50_000)?;
        let mut out = Vec::with_capacity(2 * usize::try_from(turns)? + 16);

        self.projects[p].version += 1;
        self.projects[p].runners += 1;
        out.push(
            NewEntry::of(
                &ProjectEvent::RunnerAdmitted(RunnerAdmitted {
                    command_id: s.cause.id,
                    name: project.clone(),
                    runner_id,
                }),
                ORCHESTRATOR,
                format!("project-{project}"),
                self.projects[p].version,
                &project,
                launched_at,
            )
            .caused_by(&s.cause),
        );
        out.push(s.runner(RunnerEvent::LaunchApproved(LaunchApproved {
            command_id: s.cause.id,
            runner_id,
            project: project.clone(),
            path,
            profile: profile.into(),
            session_id: session.clone(),
            resume,
            model: Some(model.into()),
            permission: None,
            max_restarts: 3,
            prompt,
            allowed_tools: Vec::new(),
        })));
        out.push(s.runner(RunnerEvent::Offered(AttemptOffered {
            runner_id,
            attempt,
            resume,
            session_id: session.clone(),
            launch_deadline_ms: launched_at.timestamp_millis() + 60_000,
        })));
        let claim = ProcessClaim {
            runner_id,
            attempt,
            node: node.clone(),
            incarnation,
        };
        out.push(
            NewEntry::of(
                &ProcessEvent::Claimed(claim.clone()),
                &s.node_source,
                format!("claim-{runner_id}-{attempt}-{node}-{incarnation}"),
                1,
                runner_id.to_string(),
                launched_at,
            )
            .caused_by(&s.cause),
        );
        out.push(s.runner(RunnerEvent::Placed(AttemptPlaced {
            runner_id,
            attempt,
            node: node.clone(),
            incarnation,
        })));
        out.push(s.process(ProcessEvent::Spawning(claim)));
        out.push(s.process(ProcessEvent::Started(ProcessStarted {
            runner_id,
            attempt,
            node: node.clone(),
            pid,
        })));
        out.push(s.runner(RunnerEvent::Started(AttemptRunning {
            runner_id,
            attempt,
            pid,
        })));
        out.push(
            s.process(ProcessEvent::SessionStarted(ProcessSessionStarted {
                runner_id,
                attempt,
                session_id: agent_session.clone(),
                model: Some(model.into()),
            })),
        );
        let mut priced = 0.0;
        let mut transcript_bytes = 0;
        for turn in 1..=turns {
            let v = varied(n * 1_000 + u64::from(turn));
            let pieces = if turn == turns && n % LONG_REPLY_EVERY == 5 {
                self.texts.long(usize::try_from(n)?).to_vec()
            } else {
                vec![self.texts.reply(usize::try_from(v % 1_000_003)?).to_owned()]
            };
            for text in pieces {
                transcript_bytes += 3 * text.len() as u64 + 2_000;
                out.push(s.process(ProcessEvent::TextChunked(TextChunked {
                    runner_id,
                    attempt,
                    session_id: agent_session.clone(),
                    role: "assistant".into(),
                    text,
                })));
            }
            let (input, output) = (3 + v % 8, 40 + v % 360);
            let (cache_creation, cache_read) = (300 + v % 4_700, 10_000 + v % 20_000);
            // Claude Sonnet's prices per million tokens.
            let cost_usd = (input as f64 * 3.0
                + output as f64 * 15.0
                + cache_creation as f64 * 3.75
                + cache_read as f64 * 0.3)
                / 1e6;
            priced += cost_usd;
            out.push(s.process(ProcessEvent::UsageReported(UsageReported {
                runner_id,
                attempt,
                turn,
                input_tokens: input,
                output_tokens: output,
                cache_creation_input_tokens: cache_creation,
                cache_read_input_tokens: cache_read,
                cost_usd,
                model: Some(model.into()),
                session_id: agent_session.clone(),
            })));
            if turn == 1 {
                out.push(s.process(ProcessEvent::SessionBound(ProcessSessionBound {
                    runner_id,
                    attempt,
                    session_id: agent_session.clone(),
                })));
                out.push(s.runner(RunnerEvent::SessionBound(SessionBound {
                    runner_id,
                    session_id: agent_session.clone(),
                })));
            }
            if turn == 2 && self.projects[p].runners == THRESHOLD_AT_RUNNER {
                out.push(threshold(budget, launched_at, &s.cause)?);
            }
        }
        let result = self
            .texts
            .reply(usize::try_from(varied(n) % 1_000_003)?)
            .to_owned();
        out.push(s.process(ProcessEvent::TextChunked(TextChunked {
            runner_id,
            attempt,
            session_id: agent_session.clone(),
            role: "result".into(),
            text: result,
        })));
        out.push(
            s.process(ProcessEvent::CostReconciled(ProcessCostReconciled {
                runner_id,
                attempt,
                priced_cost_usd: priced,
                reported_cost_usd: (priced * 1e4).round() / 1e4,
            })),
        );
        out.push(s.process(ProcessEvent::Exited(ProcessExited {
            runner_id,
            attempt,
            node,
            code: Some(0),
            signal: None,
            reason: "exited".into(),
            outcome: "succeeded".into(),
            message: None,
            resets_at: None,
            transcript: Some(TranscriptFile {
                path: format!(
                    "/home/agent/.claude/projects/-srv-projects-{project}/{agent_session}.jsonl"
                ),
                bytes: transcript_bytes,
                sha256: format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    varied(n),
                    varied(n + 1),
                    varied(n + 2),
                    varied(n + 3)
                ),
            }),
        })));
        out.push(s.runner(RunnerEvent::Exited(RunnerEnded {
            runner_id,
            attempt,
            exit_code: Some(0),
            reason: "completed".into(),
        })));
        self.ended.push((p, agent_session));
        Ok(Run {
            launch,
            received: out,
        })
    }
}

/// A project budget's threshold alert, the once a day it is raised.
fn threshold(
    budget_id: Uuid,
    at: DateTime<Utc>,
    cause: &stratavore_events::Envelope,
) -> anyhow::Result<NewEntry> {
    let day = at
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| anyhow::anyhow!("midnight exists"))?
        .and_utc();
    let alert = BudgetEvent::ThresholdReached(BudgetAlert {
        budget_id,
        period_start: day,
        period_end: day + TimeDelta::days(1),
        used_tokens: 1_250_000,
        used_usd: 32.5,
        limit_tokens: None,
        limit_usd: Some(40.0),
        stopped_runners: Vec::new(),
    });
    Ok(NewEntry::of(
        &alert,
        ORCHESTRATOR,
        format!("budget-{budget_id}"),
        2,
        budget_id.to_string(),
        at,
    )
    .caused_by(cause))
}
