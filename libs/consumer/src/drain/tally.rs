//! What one drain transaction has applied so far: the rows to mark
//! applied, each stream's last version and whether it stopped, the
//! messages decided but not folded yet, and the pass's counts.

use crate::inbox::NextRow;
use chrono::{DateTime, Utc};
use stratavore_events::Envelope;
use uuid::Uuid;

/// What one drain transaction did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    /// Rows applied or passed over (skipped by an operator).
    pub applied: usize,
    /// Received messages applied (what the metrics count).
    pub folded: u64,
    /// Per stream asked for: whether it may have more rows to apply now.
    pub more: Vec<bool>,
    /// Rows that failed, with their error and whether they are dead now.
    pub failures: Vec<(Uuid, usize, String, bool)>,
    /// The own time of the oldest message applied.
    pub oldest: Option<DateTime<Utc>>,
}

/// The transaction's running account, per stream asked for.
#[derive(Debug)]
pub(super) struct Tally {
    /// Counts and failures, returned when the transaction commits.
    pub pass: Pass,
    /// Streams stopped at a failing row.
    pub blocked: Vec<bool>,
    /// Rows applied or passed over, per stream.
    pub done: Vec<usize>,
    /// Messages applied, in the order they were.
    pub applied_ids: Vec<Uuid>,
    /// Each row applied or passed over: its stream and version.
    pub versions: Vec<(usize, i64)>,
    /// Messages applied but not folded yet.
    pub unfolded: Vec<Envelope>,
}

impl Tally {
    pub fn new(streams: usize) -> Self {
        Self {
            pass: Pass {
                more: vec![false; streams],
                ..Pass::default()
            },
            blocked: vec![false; streams],
            done: vec![0; streams],
            applied_ids: Vec::new(),
            versions: Vec::new(),
            unfolded: Vec::new(),
        }
    }

    /// An operator passed over this row: its stream moves past it.
    pub fn passed_over(&mut self, stream: usize, row: &NextRow) {
        self.versions.push((stream, row.stream_version));
        self.done[stream] += 1;
        self.pass.applied += 1;
    }

    /// The message of this row is applied; it waits to be folded.
    pub fn applied(&mut self, stream: usize, row: &NextRow, envelope: Envelope) {
        let time = envelope.time;
        self.pass.oldest = Some(self.pass.oldest.map_or(time, |t| t.min(time)));
        self.unfolded.push(envelope);
        self.applied_ids.push(row.message_id);
        self.versions.push((stream, row.stream_version));
        self.done[stream] += 1;
        self.pass.applied += 1;
        self.pass.folded += 1;
    }

    /// The message of this row failed (recorded already): its stream stops.
    pub fn failed(&mut self, stream: usize, message_id: Uuid, error: String, dead: bool) {
        self.pass.failures.push((message_id, stream, error, dead));
        self.blocked[stream] = true;
    }
}
