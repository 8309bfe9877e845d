//! The inbox table and the stream versions, in SQL. Every statement runs
//! on a service pool, whose search path puts the service's schema first.

use crate::received::{ReceivedMessage, envelope_of_stored};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use stratavore_events::Envelope;
use stratavore_store::StoreError;
use uuid::Uuid;

/// What inserting a batch of deliveries did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inserted {
    /// Rows that were new (the rest were in the inbox already).
    pub rows: u64,
    /// Of those, rows inserted as applied.
    pub applied: usize,
}

/// Insert a batch of deliveries; a message already in the inbox is left as
/// it is (a redelivery ends here). The messages in `applied`, which the
/// same transaction has applied on receipt, go in as applied, numbered in
/// that order (the order a rebuild replays); the others as received, or
/// as dead when they could not be read. The same statement records the
/// `versions` the streams' state now reflects (see
/// [`record_applied`]: one round trip, not two).
pub async fn insert_batch(
    conn: &mut PgConnection,
    batch: &[ReceivedMessage],
    owner: &str,
    applied: &[Uuid],
    versions: &[(&str, &str, i64)],
) -> Result<Inserted, StoreError> {
    let (version_sources, version_streams, version_numbers) = version_columns(versions);
    let mut ids = Vec::with_capacity(batch.len());
    let mut sources = Vec::with_capacity(batch.len());
    let mut streams = Vec::with_capacity(batch.len());
    let mut versions = Vec::with_capacity(batch.len());
    let mut types = Vec::with_capacity(batch.len());
    let mut statuses = Vec::with_capacity(batch.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(batch.len());
    let mut stored = Vec::with_capacity(batch.len());
    for m in batch {
        ids.push(m.message_id);
        sources.push(m.source_log.as_str());
        streams.push(m.stream.as_str());
        versions.push(m.stream_version);
        types.push(m.type_name.as_str());
        statuses.push(if m.unreadable.is_some() {
            "dead"
        } else {
            "received"
        });
        errors.push(m.unreadable.clone());
        stored.push(&m.stored);
    }
    // The numbers are drawn after the sort on the apply order: Postgres
    // evaluates a volatile target expression after the ORDER BY of its
    // SELECT (as in `record_applied`).
    let new: Vec<bool> = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH versions AS ({})
         INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, attempts,
                            last_error, message, owner, applied_seq)
         SELECT t.id, t.source, t.stream, t.version, t.type,
                CASE WHEN a.ord IS NULL THEN t.status ELSE 'applied' END,
                CASE WHEN t.status = 'dead' THEN 1 ELSE 0 END,
                t.error, t.message, $9,
                CASE WHEN a.ord IS NULL THEN NULL ELSE nextval('inbox_applied_seq') END
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::jsonb[])
              AS t(id, source, stream, version, type, status, error, message)
         LEFT JOIN unnest($10::uuid[]) WITH ORDINALITY AS a(id, ord) ON a.id = t.id
         ORDER BY a.ord
         ON CONFLICT (message_id) DO NOTHING
         RETURNING status = 'applied'",
        upsert_versions(11)
    )))
    .bind(&ids)
    .bind(&sources)
    .bind(&streams)
    .bind(&versions)
    .bind(&types)
    .bind(&statuses)
    .bind(&errors)
    .bind(&stored)
    .bind(owner)
    .bind(applied)
    .bind(&version_sources)
    .bind(&version_streams)
    .bind(&version_numbers)
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("inserting deliveries into the inbox"))?;
    Ok(Inserted {
        rows: new.len() as u64,
        applied: new.iter().filter(|a| **a).count(),
    })
}

/// Record what the broker dead-lettered (past its delivery limit) as a dead
/// row, unless the message is already in the inbox.
pub async fn insert_dead(
    conn: &mut PgConnection,
    m: &ReceivedMessage,
    reason: &str,
    owner: &str,
) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, attempts,
                            last_error, message, owner)
         VALUES ($1, $2, $3, $4, $5, 'dead', 0, $6, $7, $8)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(m.message_id)
    .bind(&m.source_log)
    .bind(&m.stream)
    .bind(m.stream_version)
    .bind(&m.type_name)
    .bind(reason)
    .bind(&m.stored)
    .bind(owner)
    .execute(conn)
    .await
    .map_err(StoreError::new("recording a dead letter"))?;
    Ok(result.rows_affected())
}

/// The version of a stream this service's state reflects (0: none yet).
pub async fn stream_version(
    conn: &mut PgConnection,
    source_log: &str,
    stream: &str,
) -> Result<i64, StoreError> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM stream_versions WHERE source_log = $1 AND stream = $2",
    )
    .bind(source_log)
    .bind(stream)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("reading a stream version"))?;
    Ok(v.unwrap_or(0))
}

/// Record that the state now reflects `version` of the stream.
pub async fn set_stream_version(
    conn: &mut PgConnection,
    source_log: &str,
    stream: &str,
    version: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO stream_versions (source_log, stream, version) VALUES ($1, $2, $3)
         ON CONFLICT (source_log, stream) DO UPDATE SET version = excluded.version",
    )
    .bind(source_log)
    .bind(stream)
    .bind(version)
    .execute(conn)
    .await
    .map_err(StoreError::new("recording a stream version"))?;
    Ok(())
}

/// What a stream's state reflects, and whether it has rows waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamState {
    /// The version its state reflects (0: none yet).
    pub version: i64,
    /// Whether the inbox holds rows of it, of this owner, waiting to be
    /// applied (received or skipped).
    pub waiting: bool,
}

/// The state of each of `streams`, in the order given, each stream's
/// version row locked for this transaction: a drain that applies messages
/// on receipt holds them, so another replica's drain of the same stream
/// waits for its commit and then reads the version it moved to. Locked in
/// (source log, stream) order, so two such drains cannot deadlock on them.
/// A stream with no row yet is not locked; its first versions are kept
/// apart by the inbox's primary key (see `Drainer::apply_delivered`).
pub const LOCK_STREAM_VERSIONS_SQL: &str = "WITH locked AS (
         SELECT source_log, stream, version FROM stream_versions
         WHERE (source_log, stream) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY source_log, stream
         FOR UPDATE)
     SELECT coalesce(l.version, 0),
            EXISTS (SELECT 1 FROM inbox n
                    WHERE n.owner = $3 AND n.source_log = t.source_log AND n.stream = t.stream
                      AND n.status IN ('received', 'skipped'))
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(source_log, stream, ord)
     LEFT JOIN locked l ON l.source_log = t.source_log AND l.stream = t.stream
     ORDER BY t.ord";

/// Lock the version rows of `streams` and read their state (see
/// [`LOCK_STREAM_VERSIONS_SQL`]).
pub async fn lock_stream_versions(
    conn: &mut PgConnection,
    streams: &[(String, String)],
    owner: &str,
) -> Result<Vec<StreamState>, StoreError> {
    let (sources, names) = stream_columns(streams);
    let rows: Vec<(i64, bool)> = sqlx::query_as(LOCK_STREAM_VERSIONS_SQL)
        .bind(&sources)
        .bind(&names)
        .bind(owner)
        .fetch_all(conn)
        .await
        .map_err(StoreError::new("locking stream versions"))?;
    Ok(rows
        .into_iter()
        .map(|(version, waiting)| StreamState { version, waiting })
        .collect())
}

/// The source logs and the stream names of `streams`, as the two arrays a
/// statement unnests.
fn stream_columns(streams: &[(String, String)]) -> (Vec<&str>, Vec<&str>) {
    streams
        .iter()
        .map(|(source, stream)| (source.as_str(), stream.as_str()))
        .unzip()
}

/// A row waiting in its stream: to apply, or skipped by an operator.
#[derive(Debug, Clone)]
pub struct NextRow {
    /// Skipped by an operator: the stream moves past it with no effect.
    pub skipped: bool,
    /// The message.
    pub message_id: Uuid,
    /// Its version.
    pub stream_version: i64,
    /// The message.
    pub message: Message,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// A waiting message: as the inbox stores it, or as read from its delivery
/// by a drain that applies it on receipt, before it has a row.
#[derive(Debug, Clone)]
pub enum Message {
    /// The stored CloudEvent (or, for an unreadable message, what was
    /// kept of it).
    Stored(serde_json::Value),
    /// The message as read.
    Read(Box<Envelope>),
}

impl Message {
    /// Its type, when it can tell.
    pub fn type_name(&self) -> Option<&str> {
        match self {
            Message::Stored(stored) => stored.get("type").and_then(serde_json::Value::as_str),
            Message::Read(envelope) => Some(&envelope.type_name),
        }
    }

    /// The message to apply, or why it cannot be read.
    pub fn envelope(&self) -> Result<Envelope, String> {
        match self {
            Message::Stored(stored) => envelope_of_stored(stored),
            Message::Read(envelope) => Ok(envelope.as_ref().clone()),
        }
    }
}

/// A row fetched for a drain transaction, with the version its stream's
/// state reflected.
#[derive(Debug, Clone)]
pub struct WaitingRow {
    /// Index of its stream in the streams asked for.
    pub stream: usize,
    /// What its stream's state reflects (0: nothing yet).
    pub current: i64,
    /// The row.
    pub next: NextRow,
}

/// The drain's fetch of the next rows of several streams at once, each
/// stream's `received`/`skipped` rows from its current version + 1 up to
/// `$4` of them, at most `$5` in all, locked (`SKIP LOCKED`: a row another
/// replica is applying is left to it, and the gap it leaves stops that
/// stream here).
///
/// Each stream's rows are looked up by every column of `inbox_next`
/// (owner, source log, stream and the version range) in a lateral
/// subquery that `OFFSET 0` keeps whole; the rows found are then locked
/// through their primary key. Written as one join, the planner (which
/// estimates one row for every step) chose index conditions of the owner
/// and the version range alone, or the owner alone, and filtered the
/// streams in the join: each stream's lookup then read every waiting row
/// in that range, so a drain slowed as its backlog grew, the more so the
/// further behind it fell (7 ms a fetch in the gateway at 900 runners,
/// `make bench`, supervision scale). A test checks the plan, custom and
/// generic.
pub const LOCK_NEXT_ROWS_SQL: &str =
    "SELECT s.ord, s.current, i.message_id, i.stream_version, i.message, i.attempts,
            i.status = 'skipped'
     FROM (SELECT t.ord, t.source_log, t.stream, coalesce(v.version, 0) AS current
           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(source_log, stream, ord)
           LEFT JOIN stream_versions v ON v.source_log = t.source_log AND v.stream = t.stream) s
     CROSS JOIN LATERAL (
         SELECT n.message_id FROM inbox n
         WHERE n.owner = $3 AND n.source_log = s.source_log AND n.stream = s.stream
           AND n.status IN ('received', 'skipped')
           AND n.stream_version > s.current AND n.stream_version <= s.current + $4
         OFFSET 0) k
     JOIN inbox i ON i.message_id = k.message_id AND i.status IN ('received', 'skipped')
     ORDER BY s.ord, i.stream_version
     LIMIT $5
     FOR UPDATE OF i SKIP LOCKED";

/// Fetch and lock the next rows of `streams` (see [`LOCK_NEXT_ROWS_SQL`]).
pub async fn lock_next_rows(
    conn: &mut PgConnection,
    streams: &[(String, String)],
    per_stream: usize,
    limit: usize,
    owner: &str,
) -> Result<Vec<WaitingRow>, StoreError> {
    let (sources, names) = stream_columns(streams);
    let rows = sqlx::query(LOCK_NEXT_ROWS_SQL)
        .bind(&sources)
        .bind(&names)
        .bind(owner)
        .bind(i64::try_from(per_stream).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await
        .map_err(StoreError::new("locking the next inbox rows"))?;
    Ok(rows
        .iter()
        .map(|r| WaitingRow {
            // ORDINALITY counts from 1.
            stream: usize::try_from(r.get::<i64, _>(0) - 1).unwrap_or(usize::MAX),
            current: r.get(1),
            next: NextRow {
                message_id: r.get(2),
                stream_version: r.get(3),
                message: Message::Stored(r.get(4)),
                attempts: r.get(5),
                skipped: r.get(6),
            },
        })
        .collect())
}

/// Mark rows applied, numbered in the order given (the order they were
/// applied in, which a rebuild replays), and record the `versions` (source
/// log, stream, version) the streams' state now reflects, in one
/// statement: a drain transaction's bookkeeping costs one round trip.
/// The numbers are drawn after the sort on that order: Postgres evaluates
/// a volatile target expression after the ORDER BY of its SELECT.
pub async fn record_applied(
    conn: &mut PgConnection,
    message_ids: &[Uuid],
    versions: &[(&str, &str, i64)],
) -> Result<(), StoreError> {
    if message_ids.is_empty() && versions.is_empty() {
        return Ok(());
    }
    let (sources, streams, numbers) = version_columns(versions);
    sqlx::query(AssertSqlSafe(format!(
        "WITH versions AS ({})
         UPDATE inbox SET status = 'applied', applied_seq = o.seq
         FROM (SELECT id, nextval('inbox_applied_seq') AS seq
               FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord) ORDER BY ord) o
         WHERE inbox.message_id = o.id",
        upsert_versions(2)
    )))
    .bind(message_ids)
    .bind(&sources)
    .bind(&streams)
    .bind(&numbers)
    .execute(conn)
    .await
    .map_err(StoreError::new("recording applied inbox rows"))?;
    Ok(())
}

/// The upsert of the versions streams' state now reflects, from the three
/// arrays of [`version_columns`] bound from parameter `$first` on: the
/// `WITH` part of each statement that records what a transaction applied.
fn upsert_versions(first: usize) -> String {
    format!(
        "INSERT INTO stream_versions (source_log, stream, version)
         SELECT * FROM unnest(${}::text[], ${}::text[], ${}::bigint[])
         ON CONFLICT (source_log, stream) DO UPDATE SET version = excluded.version",
        first,
        first + 1,
        first + 2
    )
}

/// The columns of stream versions to record, as the arrays a statement
/// unnests.
fn version_columns<'a>(
    versions: &[(&'a str, &'a str, i64)],
) -> (Vec<&'a str>, Vec<&'a str>, Vec<i64>) {
    let mut columns = (
        Vec::with_capacity(versions.len()),
        Vec::with_capacity(versions.len()),
        Vec::with_capacity(versions.len()),
    );
    for &(source, stream, version) in versions {
        columns.0.push(source);
        columns.1.push(stream);
        columns.2.push(version);
    }
    columns
}

/// Mark a row applied, numbering it in apply order (the order a rebuild
/// replays received messages in).
pub async fn mark_applied(conn: &mut PgConnection, message_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET status = 'applied', applied_seq = nextval('inbox_applied_seq') WHERE message_id = $1")
        .bind(message_id)
        .execute(conn)
        .await
        .map_err(StoreError::new("marking an inbox row applied"))?;
    Ok(())
}

/// Count a failed attempt; at `max_attempts` the row becomes dead. Returns
/// whether it is dead now.
pub async fn record_failure(
    conn: &mut PgConnection,
    message_id: Uuid,
    error: &str,
    max_attempts: i32,
) -> Result<bool, StoreError> {
    let dead: bool = sqlx::query_scalar(
        "UPDATE inbox SET attempts = attempts + 1, last_error = $2,
                status = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE status END
         WHERE message_id = $1 AND status = 'received'
         RETURNING status = 'dead'",
    )
    .bind(message_id)
    .bind(error)
    .bind(max_attempts)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("recording a failed attempt"))?
    .unwrap_or(false);
    Ok(dead)
}

/// A dead row, as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadRow {
    /// The message.
    pub message_id: Uuid,
    /// The log it came from.
    pub source_log: String,
    /// Its stream.
    pub stream: String,
    /// Its version.
    pub stream_version: i64,
    /// Its type.
    pub type_name: String,
    /// Failed attempts.
    pub attempts: i32,
    /// Why it is dead.
    pub last_error: Option<String>,
    /// When it arrived.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// The stored message.
    pub stored: serde_json::Value,
}

fn dead_row(r: &sqlx::postgres::PgRow) -> DeadRow {
    DeadRow {
        message_id: r.get(0),
        source_log: r.get(1),
        stream: r.get(2),
        stream_version: r.get(3),
        type_name: r.get(4),
        attempts: r.get(5),
        last_error: r.get(6),
        received_at: r.get(7),
        stored: r.get(8),
    }
}

const DEAD_COLUMNS: &str = "message_id, source_log, stream, stream_version, type, attempts, last_error, received_at, message";

/// Every dead row, oldest first.
pub async fn list_dead(conn: &mut PgConnection) -> Result<Vec<DeadRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEAD_COLUMNS} FROM inbox WHERE status = 'dead' ORDER BY received_at, message_id"
    )))
    .fetch_all(conn)
    .await
    .map_err(StoreError::new("listing dead rows"))?;
    Ok(rows.iter().map(dead_row).collect())
}

/// One dead row, locked for this transaction.
pub async fn lock_dead(
    conn: &mut PgConnection,
    message_id: Uuid,
) -> Result<Option<DeadRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEAD_COLUMNS} FROM inbox WHERE message_id = $1 AND status = 'dead' FOR UPDATE"
    )))
    .bind(message_id)
    .fetch_optional(conn)
    .await
    .map_err(StoreError::new("reading a dead row"))?;
    Ok(row.as_ref().map(dead_row))
}

/// Put a dead row back to `received`, attempts reset.
pub async fn revive(conn: &mut PgConnection, message_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET status = 'received', attempts = 0, last_error = NULL WHERE message_id = $1")
        .bind(message_id)
        .execute(conn)
        .await
        .map_err(StoreError::new("replaying a dead row"))?;
    Ok(())
}

/// Mark a dead row skipped, numbered in apply order like an applied one
/// (a rebuild moves its stream past it at the same point).
pub async fn mark_skipped(conn: &mut PgConnection, message_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET status = 'skipped', applied_seq = nextval('inbox_applied_seq') WHERE message_id = $1")
        .bind(message_id)
        .execute(conn)
        .await
        .map_err(StoreError::new("skipping a dead row"))?;
    Ok(())
}

/// The streams with rows of owner `$2` waiting to be applied, the longest
/// waiting first, at most `$1`. Read through `inbox_next`, whose predicate
/// `status = 'received'` implies.
pub const WAITING_STREAMS_SQL: &str =
    "SELECT source_log, stream FROM inbox WHERE status = 'received' AND owner = $2
     GROUP BY source_log, stream ORDER BY min(received_at) LIMIT $1";

/// Every stream with rows of `owner` waiting to be applied.
pub async fn waiting_streams(
    conn: &mut PgConnection,
    limit: i64,
    owner: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(WAITING_STREAMS_SQL)
        .bind(limit)
        .bind(owner)
        .fetch_all(conn)
        .await
        .map_err(StoreError::new("listing waiting streams"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Dead rows and the age of the oldest row still waiting, for metrics.
pub async fn health(conn: &mut PgConnection) -> Result<(i64, f64), StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM inbox WHERE status = 'dead'),
                coalesce(extract(epoch FROM now() - (SELECT min(received_at) FROM inbox
                                                     WHERE status = 'received'))::float8, 0)",
    )
    .fetch_one(conn)
    .await
    .map_err(StoreError::new("measuring the inbox"))?;
    Ok((row.get(0), row.get(1)))
}
