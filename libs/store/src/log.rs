//! The log: `<schema>.log`, both event store and outbox (DESIGN.md section 3).
//!
//! An append is the last step of a transaction: the caller decides first,
//! then appends, then commits. The append takes the log's transaction-scoped
//! advisory lock (with a bounded wait) before it draws positions, so
//! positions follow commit order: when a row is visible, every lower
//! position is visible too or was rolled back. No NOTIFY is sent: it would
//! serialise every commit of the cluster.

use crate::StoreError;
use crate::services::is_plain_identifier;
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use std::time::Duration;
use stratavore_events::{Envelope, MessageKind};
use uuid::Uuid;

/// One message to append. The envelope's `sequence` is the stream version
/// this row must get: appending a version that exists is a conflict.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The message.
    pub envelope: Envelope,
    /// Event or command.
    pub kind: MessageKind,
    /// The routing key the relay publishes it with.
    pub routing_key: String,
}

impl NewEntry {
    /// A new message (a fresh UUIDv7 id) of a catalogue type, as version
    /// `version` of `stream`, from `source` (`/stratavore/<service>`), at
    /// `time` by the writer's wall clock.
    pub fn of<M: stratavore_events::Message>(
        message: &M,
        source: &str,
        stream: impl Into<String>,
        version: u64,
        subject: impl Into<String>,
        time: DateTime<Utc>,
    ) -> Self {
        Self {
            envelope: Envelope {
                id: Uuid::now_v7(),
                source: source.to_owned(),
                type_name: message.type_name().to_owned(),
                subject: subject.into(),
                time,
                data: message.to_data(),
                stream: stream.into(),
                sequence: version,
                correlation_id: None,
                causation_id: None,
                traceparent: None,
                tracestate: None,
                idempotency_key: None,
            },
            kind: M::KIND,
            routing_key: message.routing_key(),
        }
    }

    /// Mark this message as caused by `cause`: same conversation (its
    /// correlation id, or its own id when it starts one) and trace.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.envelope.causation_id = Some(cause.id);
        self.envelope.correlation_id = Some(cause.correlation_id.unwrap_or(cause.id));
        self.envelope.traceparent = cause.traceparent.clone();
        self.envelope.tracestate = cause.tracestate.clone();
        self
    }
}

/// A row read back from a log.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// Its position, in commit order.
    pub position: i64,
    /// Event or command.
    pub kind: MessageKind,
    /// Routing key.
    pub routing_key: String,
    /// When the database recorded it (for relay lag).
    pub recorded_at: DateTime<Utc>,
    /// The message.
    pub envelope: Envelope,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended this stream version first: decide again.
    #[error("stream {stream} already has version {version}")]
    VersionConflict {
        /// The stream.
        stream: String,
        /// The version that was taken.
        version: u64,
    },
    /// A message with this id is already in the log.
    #[error("message {0} is already in the log")]
    DuplicateMessage(Uuid),
    /// The log's lock was not free within the bounded wait.
    #[error("the append lock of log {schema} was not free within {waited:?}")]
    LockTimeout {
        /// The log.
        schema: String,
        /// The wait allowed.
        waited: Duration,
    },
    /// Any other database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A schema's log.
#[derive(Debug, Clone)]
pub struct Log {
    schema: String,
    key: i32,
    lock_wait: Duration,
}

/// The log's lock key: a stable 32-bit FNV-1a hash of the schema name.
pub fn log_lock_key(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in schema.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

impl Log {
    /// The log of `schema`, waiting at most `lock_wait` for its append lock.
    /// Returns None for a name that is not a plain identifier.
    pub fn new(schema: &str, lock_wait: Duration) -> Option<Self> {
        is_plain_identifier(schema).then(|| Self {
            schema: schema.to_owned(),
            key: log_lock_key(schema),
            lock_wait,
        })
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Append entries in order, in the caller's transaction (`conn` must be
    /// inside one: the lock lasts until it ends). Returns their positions.
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        entries: &[NewEntry],
    ) -> Result<Vec<i64>, AppendError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let wait = format!("{}ms", self.lock_wait.as_millis().max(1));
        let n = entries.len();
        let mut ids = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut subjects = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut datas = Vec::with_capacity(n);
        let mut exts = Vec::with_capacity(n);
        for e in entries {
            let env = &e.envelope;
            ids.push(env.id);
            kinds.push(e.kind.as_str().to_owned());
            streams.push(env.stream.clone());
            versions.push(i64::try_from(env.sequence).unwrap_or(i64::MAX));
            types.push(env.type_name.clone());
            subjects.push(env.subject.clone());
            sources.push(env.source.clone());
            keys.push(e.routing_key.clone());
            times.push(env.time);
            datas.push(env.data.clone());
            exts.push(env.extensions_json());
        }
        // One round trip: `log_append` takes the lock, then draws the
        // positions row by row in the order given
        // (migrations/service-log/0005_log_append.sql).
        let sql = format!(
            "SELECT p FROM {}.log_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             AS p",
            self.schema
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(self.key)
            .bind(&wait)
            .bind(&ids)
            .bind(&kinds)
            .bind(&streams)
            .bind(&versions)
            .bind(&types)
            .bind(&subjects)
            .bind(&sources)
            .bind(&keys)
            .bind(&times)
            .bind(&datas)
            .bind(&exts)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| self.classify(e, entries))?;
        let mut positions: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
        // RETURNING order is not promised; positions were drawn in entry
        // order, so sorting restores it.
        positions.sort_unstable();
        Ok(positions)
    }

    fn classify(&self, e: sqlx::Error, entries: &[NewEntry]) -> AppendError {
        if let sqlx::Error::Database(db) = &e {
            match (db.code().as_deref(), db.constraint()) {
                (Some("55P03"), _) => {
                    return AppendError::LockTimeout {
                        schema: self.schema.clone(),
                        waited: self.lock_wait,
                    };
                }
                (Some("23505"), Some("log_stream_version_unique")) => {
                    let (stream, version) = conflict_detail(db.message(), entries);
                    return AppendError::VersionConflict { stream, version };
                }
                (Some("23505"), Some("log_message_id_key")) => {
                    let id = entries.first().map(|e| e.envelope.id).unwrap_or_default();
                    return AppendError::DuplicateMessage(id);
                }
                _ => {}
            }
        }
        AppendError::Store(StoreError {
            context: "appending to the log",
            source: e,
        })
    }

    /// The current version of a stream (0 when it has no rows).
    pub async fn stream_version(
        &self,
        conn: &mut PgConnection,
        stream: &str,
    ) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT max(stream_version) FROM {}.log WHERE stream = $1",
            self.schema
        )))
        .bind(stream)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::new("reading a stream version"))?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    /// The rows above `after`, in position order, at most `limit`.
    pub async fn read_after(
        &self,
        conn: &mut PgConnection,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogRow>, StoreError> {
        Ok(self
            .read_after_checking(conn, after, limit, "true")
            .await?
            .0)
    }

    /// The rows above `after`, as [`Log::read_after`], and whether `check`
    /// held as they were read: a boolean SQL expression of constants (the
    /// caller's own, never a user's text), evaluated once, and only when
    /// there is a row to read. So a reader that must check something
    /// before it acts on a batch (the relay, its lease) pays no round trip
    /// for it, and nothing when the log has nothing new. With no row the
    /// flag is true.
    pub async fn read_after_checking(
        &self,
        conn: &mut PgConnection,
        after: i64,
        limit: i64,
        check: &str,
    ) -> Result<(Vec<LogRow>, bool), StoreError> {
        // An uncorrelated subquery is an init plan: run at the first row
        // that needs it, never when the scan finds none.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT position, message_id, kind, stream, stream_version, type, subject, source,
                    routing_key, time, data, extensions, recorded_at, (SELECT {check}) AS checked
             FROM {}.log WHERE position > $1 ORDER BY position LIMIT $2",
            self.schema
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::new("reading the log"))?;
        let checked = match rows.first() {
            Some(row) => row
                .try_get::<bool, _>("checked")
                .map_err(StoreError::new("decoding a log row"))?,
            None => true,
        };
        Ok((
            rows.iter().map(row_to_log_row).collect::<Result<_, _>>()?,
            checked,
        ))
    }

    /// The highest position of the log and how many seconds the oldest row
    /// above `after` has waited (0 when none waits), by the database's clock
    /// so relay hosts with skewed clocks still report true lag.
    pub async fn lag_after(
        &self,
        conn: &mut PgConnection,
        after: i64,
    ) -> Result<(i64, f64), StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT (SELECT coalesce(max(position), 0) FROM {s}.log),
                    coalesce(extract(epoch FROM now() - (SELECT recorded_at FROM {s}.log
                        WHERE position > $1 ORDER BY position LIMIT 1))::float8, 0)",
            s = self.schema
        )))
        .bind(after)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::new("measuring relay lag"))?;
        Ok((row.get(0), row.get::<f64, _>(1).max(0.0)))
    }
}

fn conflict_detail(message: &str, entries: &[NewEntry]) -> (String, u64) {
    // Postgres names the key in the message detail only; the first entry's
    // stream is the best answer when several streams were appended at once.
    let first = entries.first();
    let stream = first
        .map(|e| e.envelope.stream.clone())
        .unwrap_or_else(|| message.to_owned());
    (stream, first.map_or(0, |e| e.envelope.sequence))
}

fn row_to_log_row(row: &sqlx::postgres::PgRow) -> Result<LogRow, StoreError> {
    let decode = |e: sqlx::Error| StoreError {
        context: "decoding a log row",
        source: e,
    };
    let kind: String = row.try_get("kind").map_err(decode)?;
    let version: i64 = row.try_get("stream_version").map_err(decode)?;
    let envelope = Envelope {
        id: row.try_get("message_id").map_err(decode)?,
        source: row.try_get("source").map_err(decode)?,
        type_name: row.try_get("type").map_err(decode)?,
        subject: row.try_get("subject").map_err(decode)?,
        time: row.try_get("time").map_err(decode)?,
        data: row.try_get("data").map_err(decode)?,
        stream: row.try_get("stream").map_err(decode)?,
        sequence: u64::try_from(version).unwrap_or(0),
        correlation_id: None,
        causation_id: None,
        traceparent: None,
        tracestate: None,
        idempotency_key: None,
    };
    let ext: serde_json::Value = row.try_get("extensions").map_err(decode)?;
    let envelope = envelope
        .with_extensions_json(&ext)
        .map_err(|e| StoreError {
            context: "decoding a log row's extensions",
            source: sqlx::Error::Decode(Box::new(e)),
        })?;
    Ok(LogRow {
        position: row.try_get("position").map_err(decode)?,
        kind: MessageKind::parse(&kind).unwrap_or(MessageKind::Event),
        routing_key: row.try_get("routing_key").map_err(decode)?,
        recorded_at: row.try_get("recorded_at").map_err(decode)?,
        envelope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_differ_per_schema() {
        assert_eq!(log_lock_key("orchestrator"), log_lock_key("orchestrator"));
        assert_ne!(log_lock_key("orchestrator"), log_lock_key("gateway"));
    }

    #[test]
    fn only_plain_schema_names_make_a_log() {
        assert!(Log::new("gateway", Duration::from_secs(1)).is_some());
        assert!(Log::new("x; drop table", Duration::from_secs(1)).is_none());
    }
}
