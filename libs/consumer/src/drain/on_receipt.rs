//! Applying a delivery batch on receipt: in the one transaction that
//! inserts it into the inbox, the messages that continue their streams are
//! applied too, and go in as applied. Nothing is acked before that
//! transaction commits, as with an insert alone; what it saves is the
//! second transaction, the fetch of the rows it just wrote and the
//! rewrite of each of them to mark it applied.
//!
//! What it does not apply (a stream with a gap or rows already waiting, a
//! message that fails, whatever follows a message that appends) goes in as
//! received, and the inbox's drain takes it from there as before. When the
//! transaction fails for any reason, the caller inserts the batch alone.

use super::{DrainError, Drainer, Source, roll_back};
use crate::batch::{Candidate, contiguous};
use crate::inbox::{self, Message, NextRow};
use crate::received::ReceivedMessage;
use crate::service::{Decider, Projection};
use std::collections::{HashMap, HashSet};
use stratavore_store::StoreError;

/// What applying a delivery batch on receipt did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Messages that were new to the inbox (the rest were redeliveries).
    pub inserted: u64,
    /// Messages applied.
    pub applied: usize,
    /// The streams of the batch with rows waiting in the inbox (left of
    /// this batch, or there before it), for the inbox's drain.
    pub waiting: Vec<(String, String)>,
}

impl<S: Decider + Projection> Drainer<S> {
    /// Insert a delivery batch into the inbox and, in the same
    /// transaction, apply the messages that continue their streams.
    ///
    /// Each stream's version row is locked first (in a fixed order), so a
    /// replica draining the same stream waits, and the versions read are
    /// the ones to continue. A stream with no row yet has nothing to lock;
    /// there the inbox's primary key keeps two copies of one message from
    /// both being applied: the insert reports which rows were new, and a
    /// message applied here whose row was in the inbox already rolls the
    /// whole transaction back ([`DrainError::AlreadyReceived`]).
    pub async fn apply_delivered(
        &self,
        received: &[ReceivedMessage],
    ) -> Result<Delivered, DrainError> {
        let (_turn, mut tx) = self.begin_applying().await?;
        let (streams, of_message) = streams_of(received);
        let state = match inbox::lock_stream_versions(&mut tx, &streams, &self.owner).await {
            Ok(state) => state,
            Err(e) => return Err(roll_back(tx, e.into()).await),
        };
        let runs = contiguous(
            received
                .iter()
                .zip(&of_message)
                .filter_map(|(r, stream)| {
                    let (envelope, stream) = (r.envelope.as_ref()?, (*stream)?);
                    Some(Candidate {
                        stream,
                        version: r.stream_version,
                        current: state[stream].version,
                        row: NextRow {
                            skipped: false,
                            message_id: r.message_id,
                            stream_version: r.stream_version,
                            message: Message::Read(Box::new(envelope.clone())),
                            attempts: 0,
                        },
                    })
                })
                .collect(),
        );
        let (tally, inserted) = match self
            .apply_runs(&mut tx, &streams, runs, Source::Delivered(received))
            .await
        {
            Ok(applied) => applied,
            Err(e) => return Err(roll_back(tx, e).await),
        };
        tx.commit()
            .await
            .map_err(StoreError::new("committing deliveries"))?;
        self.count(&tally.pass);
        let applied: HashSet<_> = tally.applied_ids.iter().collect();
        // A stream had rows waiting already (they may continue what was
        // applied now), or has some of this batch left (not a redelivery
        // of what its state reflected already).
        let mut waiting_streams: Vec<bool> = state.iter().map(|s| s.waiting).collect();
        for (r, stream) in received.iter().zip(&of_message) {
            if let Some(stream) = *stream
                && r.stream_version > state[stream].version
                && !applied.contains(&r.message_id)
            {
                waiting_streams[stream] = true;
            }
        }
        Ok(Delivered {
            inserted: inserted.rows,
            applied: tally.applied_ids.len(),
            waiting: streams
                .into_iter()
                .zip(waiting_streams)
                .filter_map(|(stream, waiting)| waiting.then_some(stream))
                .collect(),
        })
    }
}

/// The streams of a batch's readable messages, in the order they first
/// appear, and each message's stream among them (none when it cannot be
/// read).
pub(crate) fn streams_of(
    received: &[ReceivedMessage],
) -> (Vec<(String, String)>, Vec<Option<usize>>) {
    let mut streams = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let of_message = received
        .iter()
        .map(|r| {
            r.envelope.as_ref()?;
            let key = (r.source_log.as_str(), r.stream.as_str());
            Some(*index.entry(key).or_insert_with(|| {
                streams.push((r.source_log.clone(), r.stream.clone()));
                streams.len() - 1
            }))
        })
        .collect();
    (streams, of_message)
}
