//! `GET /api/v1/runners/{id}/logs?follow=true`: a runner's output as
//! Server-Sent Events, history first, then live, across its attempts,
//! until it reaches a terminal state.
//!
//! The follower subscribes to the runner's live lines before it reads the
//! history from the node, so no line falls between the two; a live line
//! already read is recognised by its offset and skipped. A line that
//! shows a gap (lines lost on the way, a line cut for size, a follower
//! that lagged, a new attempt) sends the follower back to the node for
//! what is missing, so every line is sent once and in order. The runner's
//! state is read from the read model every [`POLL`]; once it is terminal
//! the rest of the transcript is read and `end` is sent.
//!
//! Events: `line` (`{attempt, offset, line}`, id `<attempt>:<next
//! offset>`), `error` (a problem, when a node cannot be read; following
//! goes on), `end` (`{state}`, last).

use super::lines::{Cursor, LiveStep, LogLine, split_part};
use super::node_client::{NodeAddress, NodeReadError, PartRequest};
use super::output_hub::OutputSubscription;
use super::{TERMINAL_STATES, current_attempt, locate};
use crate::commands::Api;
use crate::http::ApiError;
use crate::runner_models::{self, RunnerView};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use stratavore_events::process::RunnerOutput;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use uuid::Uuid;

/// How often the runner's state is read.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the transcript is read again anyway, for a line lost on the
/// way that no later line reveals.
const RESYNC: Duration = Duration::from_secs(5);
/// Bytes asked of a node at a time.
const CHUNK: u64 = 1024 * 1024;

/// One follower.
pub struct Follow {
    api: Api,
    runner: Uuid,
    cursor: Cursor,
    live: OutputSubscription,
    queue: VecDeque<Event>,
    ticks: Interval,
    /// When the transcript was last read.
    last_read: Instant,
    /// The attempt last read from its node: until the current one is, every
    /// tick tries.
    read_attempt: Option<u32>,
    /// The last error sent, so a node that stays away is reported once.
    last_error: Option<String>,
    finished: bool,
}

impl Follow {
    /// Follow `runner` from `offset` of `attempt` (default: the current
    /// attempt from its start). The history is read before this returns,
    /// so a node that cannot be read is the request's error.
    pub async fn start(
        api: Api,
        runner: RunnerView,
        attempt: Option<u32>,
        offset: u64,
    ) -> Result<Self, ApiError> {
        // Before the history: a line written meanwhile comes live.
        let live = api.outputs.subscribe(runner.id);
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut follow = Self {
            runner: runner.id,
            cursor: Cursor {
                attempt: attempt.unwrap_or(current_attempt(&runner).max(1)),
                next: offset,
            },
            api,
            live,
            queue: VecDeque::new(),
            ticks,
            last_read: Instant::now(),
            read_attempt: None,
            last_error: None,
            finished: false,
        };
        follow
            .catch_up(&runner, current_attempt(&runner), true)
            .await?;
        Ok(follow)
    }

    /// The events, as an SSE response.
    pub fn into_sse(self) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
        let events = futures::stream::unfold(self, |mut follow| async move {
            let event = follow.next_event().await?;
            Some((Ok(event), follow))
        });
        Sse::new(events).keep_alive(KeepAlive::default())
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            self.step().await;
        }
    }

    async fn step(&mut self) {
        let shutdown = self.api.shutdown.clone();
        tokio::select! {
            // The client reconnects to another replica, or this one later.
            _ = shutdown.wait() => self.finished = true,
            received = self.live.recv() => match received {
                Ok(output) => self.on_live(&output).await,
                Err(RecvError::Lagged(_)) => self.resync(0).await,
                Err(RecvError::Closed) => self.finished = true,
            },
            _ = self.ticks.tick() => self.on_tick().await,
        }
    }

    async fn on_live(&mut self, output: &RunnerOutput) {
        match self.cursor.on_live(output) {
            LiveStep::Send(line) => self.queue.push_back(line_event(&line)),
            LiveStep::Skip => {}
            LiveStep::Gap => self.resync(output.attempt).await,
        }
    }

    async fn on_tick(&mut self) {
        let runner = match runner_models::get_runner(&self.api.pool, self.runner).await {
            Ok(Some(runner)) => runner,
            Ok(None) => {
                // Gone from the read model (a rebuild in progress): the
                // client may follow again.
                self.finished = true;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, runner = %self.runner, "cannot read a followed runner");
                return;
            }
        };
        let attempt = current_attempt(&runner);
        if TERMINAL_STATES.contains(&runner.state.as_str()) {
            self.catch_up_reporting(&runner, attempt).await;
            self.queue.push_back(end_event(&runner.state));
            self.finished = true;
            return;
        }
        let behind = attempt > self.cursor.attempt || self.read_attempt != Some(attempt);
        if behind || self.last_read.elapsed() >= RESYNC {
            self.catch_up_reporting(&runner, attempt).await;
        }
    }

    /// Read what is missing, up to attempt `at_least` or the runner's
    /// current one, whichever is later.
    async fn resync(&mut self, at_least: u32) {
        match runner_models::get_runner(&self.api.pool, self.runner).await {
            Ok(Some(runner)) => {
                let target = current_attempt(&runner).max(at_least);
                self.catch_up_reporting(&runner, target).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, runner = %self.runner, "cannot read a followed runner")
            }
        }
    }

    async fn catch_up_reporting(&mut self, runner: &RunnerView, target: u32) {
        if let Err(e) = self.catch_up(runner, target, false).await {
            let problem = e.into_problem();
            if self.last_error.as_deref() != Some(problem.detail.as_str()) {
                self.last_error = Some(problem.detail.clone());
                match Event::default().event("error").json_data(&problem) {
                    Ok(event) => self.queue.push_back(event),
                    Err(e) => tracing::warn!(error = %e, "cannot encode a problem event"),
                }
            }
        }
    }

    /// Send every line from the cursor up to the end of attempt `target`
    /// as the nodes have it now. `strict`: the first read, whose errors
    /// (an offset past the end included) are the request's.
    async fn catch_up(
        &mut self,
        runner: &RunnerView,
        target: u32,
        strict: bool,
    ) -> Result<(), ApiError> {
        self.last_read = Instant::now();
        while self.cursor.attempt <= target {
            let attempt = self.cursor.attempt;
            let earlier = attempt < target;
            match locate(&self.api, runner, attempt).await {
                Ok(Some(at)) => self.read_attempt(&at, strict).await?,
                // Not started yet: its lines will come.
                Ok(None) => return Ok(()),
                // An attempt that never ran, or whose node is lost, is
                // passed over for the next one.
                Err(ApiError::NotFound { .. } | ApiError::NodeLost { .. }) if earlier => {}
                // The node has not recorded the attempt yet.
                Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
            if !earlier {
                break;
            }
            self.cursor.start_attempt(attempt + 1);
        }
        Ok(())
    }

    /// Read the cursor's attempt from `at` up to what the node has now.
    async fn read_attempt(&mut self, at: &NodeAddress, strict: bool) -> Result<(), ApiError> {
        loop {
            let attempt = self.cursor.attempt;
            let request = PartRequest {
                runner: self.runner,
                attempt,
                offset: self.cursor.next,
                limit: Some(CHUNK),
            };
            let (head, bytes) = match self.api.transcripts.read(at, request).await {
                Ok(read) => read,
                // A live last line without its newline counted one byte
                // too many: nothing is left.
                Err(NodeReadError::PastEnd) if !strict => return Ok(()),
                Err(e) => return Err(e.into_api(self.runner)),
            };
            self.read_attempt = Some(attempt);
            let lines = split_part(attempt, request.offset, &bytes, head.is_final());
            let moved = !lines.is_empty();
            for line in lines {
                if self.cursor.wants(&line) {
                    self.cursor.sent(&line);
                    self.queue.push_back(line_event(&line));
                }
            }
            if !moved || head.next_offset >= head.size {
                return Ok(());
            }
        }
    }
}

fn line_event(line: &LogLine) -> Event {
    let data = serde_json::json!({
        "attempt": line.attempt,
        "offset": line.offset,
        "line": line.text,
    });
    Event::default()
        .event("line")
        .id(format!("{}:{}", line.attempt, line.next))
        // JSON escapes every newline and carriage return, which SSE data
        // could not hold raw.
        .data(data.to_string())
}

fn end_event(state: &str) -> Event {
    Event::default()
        .event("end")
        .data(serde_json::json!({ "state": state }).to_string())
}
