//! Live output: each line the watcher reads from a running attempt's
//! transcript also goes out on the live exchange, as
//! `io.stratavore.runner.output.v1` with routing key
//! `runner.output.<runner>`, for `GET /api/v1/runners/{id}/logs?follow=true`.
//!
//! Telemetry, not state: not persistent, unconfirmed, dropped when nobody
//! listens. A line lost on the way is still in the transcript, where the
//! gateway fetches it when the offsets show a gap. The watcher must not
//! wait on the broker, so it only offers lines to a bounded channel
//! ([`OutputSink`]); [`OutputPublisher`] drains it, and a line that finds
//! the channel full is dropped and counted.
//!
//! The watcher reaches its node's sink through a task-local set around the
//! watcher's task ([`with_sink`]): every incarnation's watcher of one node
//! shares the node's sink, and code run outside it (registration, tests)
//! offers nothing.

use crate::metrics;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Connection};
use std::future::Future;
use std::time::{Duration, Instant};
use stratavore_bus::{Topology, connect, live_outgoing};
use stratavore_events::process::{LiveMessage, MAX_OUTPUT_LINE_BYTES, RunnerOutput};
use stratavore_runtime::Shutdown;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Lines that may wait for the publisher; more are dropped.
pub const QUEUE_CAPACITY: usize = 4096;

/// How long a publish (or a connect) may take before the line is given up.
const PUBLISH_WITHIN: Duration = Duration::from_secs(2);

/// Where the watcher offers lines; cheap to clone.
#[derive(Clone, Debug)]
pub struct OutputSink {
    lines: mpsc::Sender<RunnerOutput>,
}

impl OutputSink {
    /// Offer one line; never waits.
    pub fn offer(&self, output: RunnerOutput) {
        match self.lines.try_send(output) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => metrics::output_line("dropped_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => metrics::output_line("dropped_closed"),
        }
    }
}

tokio::task_local! {
    static SINK: OutputSink;
}

/// Run `task` (the node's watcher) with `sink` as where its lines go.
pub async fn with_sink<F: Future>(sink: OutputSink, task: F) -> F::Output {
    SINK.scope(sink, task).await
}

/// The lines one look read of an attempt's transcript. The look runs off
/// the runtime, where the watcher's sink is out of reach, so it hands these
/// back and the watcher offers them ([`LinesRead::offer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesRead {
    /// The runner.
    pub runner_id: Uuid,
    /// The attempt.
    pub attempt: u32,
    /// The first line's offset in the attempt's part.
    pub first: u64,
    /// The lines, without their newlines.
    pub lines: Vec<String>,
    /// How far the read moved.
    pub bytes_read: u64,
}

impl LinesRead {
    /// Offer the lines; does nothing outside [`with_sink`].
    pub fn offer(&self) {
        offer_lines(
            self.runner_id,
            self.attempt,
            self.first,
            &self.lines,
            self.bytes_read,
        );
    }
}

/// Offer the lines the watcher just read of an attempt: `first` is the
/// first line's offset in the attempt's part and `bytes_read` how far the
/// read moved. Does nothing outside [`with_sink`].
pub fn offer_lines(runner_id: Uuid, attempt: u32, first: u64, lines: &[String], bytes_read: u64) {
    if lines.is_empty() {
        return;
    }
    let _ = SINK.try_with(|sink| {
        for output in outputs(runner_id, attempt, first, lines, bytes_read) {
            sink.offer(output);
        }
    });
}

/// The live messages of lines read from offset `first`, the read having
/// moved `bytes_read`. Each line's offset is exact, or the line is left
/// out: the reader replaces invalid UTF-8, which may lengthen a line, and
/// then only the lines before the first replaced one are known to sit
/// where their lengths say (the gateway sees the gap and reads the rest
/// from the node).
pub fn outputs(
    runner_id: Uuid,
    attempt: u32,
    first: u64,
    lines: &[String],
    bytes_read: u64,
) -> Vec<RunnerOutput> {
    let text: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let count = lines.len() as u64;
    // Every line ended with a newline, except perhaps the last one of an
    // attempt that has ended.
    let exact = text + count == bytes_read || (count > 0 && text + count - 1 == bytes_read);
    let mut offset = first;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if !exact && line.contains(char::REPLACEMENT_CHARACTER) {
            break;
        }
        let (text, truncated) = capped(line);
        out.push(RunnerOutput {
            runner_id,
            attempt,
            offset,
            line: text,
            truncated,
        });
        offset += line.len() as u64 + 1;
    }
    out
}

/// `line`, cut to [`MAX_OUTPUT_LINE_BYTES`] at a character boundary, and
/// whether it was cut.
pub fn capped(line: &str) -> (String, bool) {
    if line.len() <= MAX_OUTPUT_LINE_BYTES {
        return (line.to_owned(), false);
    }
    let mut end = MAX_OUTPUT_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    (line[..end].to_owned(), true)
}

/// Publishes what the sink collects, for the node's lifetime.
pub struct OutputPublisher {
    lines: mpsc::Receiver<RunnerOutput>,
    broker_url: String,
    topology: Topology,
    /// The `source` of its messages (`/stratavore/runner-supervisor/<node>`).
    source: String,
    /// Wait after a broker failure before connecting again.
    retry_backoff: Duration,
}

/// An open channel, with the connection it lives on.
struct Open {
    connection: Connection,
    channel: Channel,
}

impl OutputPublisher {
    /// A sink and the publisher that drains it.
    pub fn new(
        broker_url: String,
        topology: Topology,
        source: String,
        retry_backoff: Duration,
    ) -> (OutputSink, Self) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let publisher = Self {
            lines: rx,
            broker_url,
            topology,
            source,
            retry_backoff,
        };
        (OutputSink { lines: tx }, publisher)
    }

    /// Publish until `shutdown`.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut open: Option<Open> = None;
        // While the broker is away lines are dropped rather than each one
        // waiting for a connect that will fail.
        let mut retry_at: Option<Instant> = None;
        loop {
            let output = tokio::select! {
                _ = shutdown.wait() => break,
                next = self.lines.recv() => match next {
                    Some(output) => output,
                    None => break,
                },
            };
            if open
                .as_ref()
                .is_none_or(|o| !o.channel.status().connected())
            {
                open = None;
                if retry_at.is_some_and(|at| Instant::now() < at) {
                    metrics::output_line("dropped_broker");
                    continue;
                }
                match self.open().await {
                    Some(o) => {
                        open = Some(o);
                        retry_at = None;
                    }
                    None => {
                        retry_at = Some(Instant::now() + self.retry_backoff);
                        metrics::output_line("dropped_broker");
                        continue;
                    }
                }
            }
            let Some(o) = &open else { continue };
            if self.publish(&o.channel, &output).await {
                metrics::output_line("published");
            } else {
                metrics::output_line("dropped_broker");
                open = None;
                retry_at = Some(Instant::now() + self.retry_backoff);
            }
        }
        if let Some(o) = open {
            let close = async {
                let _ = o.channel.close(200, "node stopping".into()).await;
                let _ = o.connection.close(200, "node stopping".into()).await;
            };
            let _ = tokio::time::timeout(PUBLISH_WITHIN, close).await;
        }
    }

    async fn open(&self) -> Option<Open> {
        let opened = async {
            let connection = connect(&self.broker_url, "runner-supervisor live output").await?;
            let channel = connection.create_channel().await.map_err(|source| {
                stratavore_bus::BrokerError::Operation {
                    operation: "channel.open",
                    source,
                }
            })?;
            Ok::<_, stratavore_bus::BrokerError>(Open {
                connection,
                channel,
            })
        };
        match tokio::time::timeout(PUBLISH_WITHIN, opened).await {
            Ok(Ok(open)) => Some(open),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach the broker for live output");
                None
            }
            Err(_) => {
                tracing::warn!("connecting to the broker for live output timed out");
                None
            }
        }
    }

    /// One line, fire and forget: the channel is not in confirm mode and
    /// the message is not mandatory (no follower, no queue, no message).
    async fn publish(&self, channel: &Channel, output: &RunnerOutput) -> bool {
        let who = output.runner_id.to_string();
        let message = LiveMessage::Output(output.clone());
        let out = match live_outgoing(
            &self.topology,
            &message,
            &self.source,
            &who,
            chrono::Utc::now(),
        ) {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an output line");
                return true;
            }
        };
        let properties = out.message.properties.with_delivery_mode(1);
        let sent = channel.basic_publish(
            out.exchange.as_str().into(),
            out.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &out.message.body,
            properties,
        );
        match tokio::time::timeout(PUBLISH_WITHIN, sent).await {
            Ok(Ok(_unconfirmed)) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "an output line was not published");
                false
            }
            Err(_) => {
                tracing::warn!("publishing an output line timed out");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_line_carries_its_offset_in_the_attempts_part() {
        let read = lines(&["{\"a\":1}", "", "{\"b\":22}"]);
        let out = outputs(Uuid::nil(), 2, 100, &read, 8 + 1 + 9);
        let offsets: Vec<u64> = out.iter().map(|o| o.offset).collect();
        assert_eq!(offsets, vec![100, 108, 109]);
        assert!(out.iter().all(|o| o.attempt == 2 && !o.truncated));
        assert_eq!(out[2].line, "{\"b\":22}");
        // The last line of an ended attempt may have no newline.
        let last = outputs(Uuid::nil(), 1, 0, &lines(&["x", "yz"]), 4);
        assert_eq!(
            last.iter().map(|o| o.offset).collect::<Vec<_>>(),
            vec![0, 2]
        );
    }

    #[test]
    fn lines_after_one_whose_bytes_were_replaced_are_left_to_the_transcript() {
        // "ok\n", then 0xff 0xfe (two invalid bytes, one replacement char of
        // three bytes), then "after\n": the lengths no longer add up.
        let raw: &[u8] = b"ok\n\xff\xfe\nafter\n";
        let read: Vec<String> = raw[..raw.len() - 1]
            .split(|b| *b == b'\n')
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let out = outputs(Uuid::nil(), 1, 0, &read, raw.len() as u64);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].offset, out[0].line.as_str()), (0, "ok"));
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary_and_marked() {
        let long = format!("{}é", "x".repeat(MAX_OUTPUT_LINE_BYTES - 1));
        let (text, truncated) = capped(&long);
        assert!(truncated);
        assert_eq!(text.len(), MAX_OUTPUT_LINE_BYTES - 1);
        let out = outputs(
            Uuid::nil(),
            1,
            0,
            &[long.clone(), "next".to_owned()],
            long.len() as u64 + 6,
        );
        assert!(out[0].truncated);
        assert_eq!(
            out[1].offset,
            long.len() as u64 + 1,
            "offsets count the whole line"
        );
        assert_eq!(capped("short"), ("short".to_owned(), false));
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_line_instead_of_waiting() {
        let (sink, publisher) = OutputPublisher::new(
            "amqp://127.0.0.1:1/%2f".to_owned(),
            Topology::new("t", 10),
            "/stratavore/runner-supervisor/n".to_owned(),
            Duration::from_secs(1),
        );
        let line = |offset| RunnerOutput {
            runner_id: Uuid::nil(),
            attempt: 1,
            offset,
            line: "x".to_owned(),
            truncated: false,
        };
        for offset in 0..(QUEUE_CAPACITY as u64 + 10) {
            sink.offer(line(offset));
        }
        assert_eq!(publisher.lines.len(), QUEUE_CAPACITY);
    }

    #[tokio::test]
    async fn lines_reach_the_sink_only_inside_its_scope() {
        let (sink, mut publisher) = OutputPublisher::new(
            "amqp://127.0.0.1:1/%2f".to_owned(),
            Topology::new("t", 10),
            "/stratavore/runner-supervisor/n".to_owned(),
            Duration::from_secs(1),
        );
        offer_lines(Uuid::nil(), 1, 0, &lines(&["outside"]), 8);
        with_sink(sink, async {
            offer_lines(Uuid::nil(), 1, 0, &lines(&["inside"]), 7);
        })
        .await;
        let got = publisher.lines.recv().await.unwrap();
        assert_eq!(got.line, "inside");
        assert!(publisher.lines.try_recv().is_err());
    }
}
