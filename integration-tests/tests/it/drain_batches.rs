//! Batched drains: the waiting rows of several streams are applied in one
//! transaction, each stream in version order up to its first gap; a
//! message's own failure stops only its stream; an infrastructure failure
//! is confined to its stream by draining one message at a time; and a
//! message that appends ends its transaction, so the log's append lock is
//! still taken last; a service's quiet runs are applied without a decision
//! each, up to the first message it does not count quiet, which is decided
//! alone. A probe service records, for each message it folds, the
//! transaction that folded it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratavore_consumer::received::{ReceivedMessage, read_delivery};
use stratavore_consumer::{Decider, DrainError, Drainer, HandleError, Projection};
use stratavore_events::Envelope;
use stratavore_store::{Log, NewEntry, StoreError};
use stratavore_testkit::TestEnv;
use uuid::Uuid;

const SCHEMA: &str = "gateway";

/// Folds each message into `drain_probe` with its transaction id; refuses,
/// breaks on, or appends for messages whose data asks it to. With `quiet`,
/// every type may be quiet and the leading messages whose data says
/// `quiet` are counted so; it records what it decided, the runs it was
/// asked about and the size of each fold.
#[derive(Default)]
struct Probe {
    quiet: bool,
    decided: Mutex<Vec<Uuid>>,
    quiet_runs: Mutex<Vec<usize>>,
    folds: Mutex<Vec<usize>>,
}

impl Decider for Probe {
    fn may_be_quiet(&self, _type_name: &str) -> bool {
        self.quiet
    }

    async fn quiet_prefix(
        &self,
        _conn: &mut sqlx::PgConnection,
        messages: &[Envelope],
    ) -> Result<usize, StoreError> {
        self.quiet_runs.lock().unwrap().push(messages.len());
        Ok(messages
            .iter()
            .take_while(|m| m.data["quiet"] == true)
            .count())
    }

    async fn decide(
        &self,
        _conn: &mut sqlx::PgConnection,
        message: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        self.decided.lock().unwrap().push(message.id);
        if message.data["refuse"] == true {
            return Err(HandleError::Message("refused by the probe".into()));
        }
        if message.data["append"] == true {
            let event = stratavore_events::project::ProjectEvent::Archived(
                stratavore_events::project::ProjectArchiveChanged {
                    command_id: Uuid::now_v7(),
                    name: "probe".into(),
                },
            );
            let stream = format!("probe-{}", message.id);
            return Ok(vec![NewEntry::of(
                &event,
                "/stratavore/api-gateway",
                stream,
                1,
                "probe",
                chrono::Utc::now(),
            )]);
        }
        Ok(Vec::new())
    }

    fn on_skipped(&self, _message: &Envelope) -> Vec<NewEntry> {
        Vec::new()
    }
}

impl Projection for Probe {
    fn tables(&self) -> &'static [&'static str] {
        &["drain_probe"]
    }

    async fn project_own(
        &self,
        _conn: &mut sqlx::PgConnection,
        _entry: &Envelope,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn project_received_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        messages: &[Envelope],
    ) -> Result<(), StoreError> {
        self.folds.lock().unwrap().push(messages.len());
        for message in messages {
            self.project_received(conn, message).await?;
        }
        Ok(())
    }

    async fn project_received(
        &self,
        conn: &mut sqlx::PgConnection,
        message: &Envelope,
    ) -> Result<(), StoreError> {
        if message.data["break"] == true {
            sqlx::query("SELECT 1 / 0")
                .execute(&mut *conn)
                .await
                .map_err(StoreError::new("folding a broken message"))?;
        }
        sqlx::query(
            "INSERT INTO drain_probe (message_id, stream, version, tx)
             VALUES ($1, $2, $3, txid_current())",
        )
        .bind(message.id)
        .bind(&message.stream)
        .bind(i64::try_from(message.sequence).unwrap())
        .execute(conn)
        .await
        .map_err(StoreError::new("folding into the probe"))?;
        Ok(())
    }
}

struct Fixture {
    env: TestEnv,
    pool: sqlx::PgPool,
}

impl Fixture {
    async fn new() -> Fixture {
        let env = TestEnv::new().await.unwrap();
        let pool = env.db.service_pool("api-gateway").await.unwrap();
        sqlx::query(
            "CREATE TABLE drain_probe (message_id uuid PRIMARY KEY, stream text, version bigint,
                                       tx bigint)",
        )
        .execute(&pool)
        .await
        .unwrap();
        Fixture { env, pool }
    }

    fn drainer(&self, batch: usize) -> Drainer<Probe> {
        self.drainer_of(batch, Arc::new(Probe::default()))
    }

    fn drainer_of(&self, batch: usize, probe: Arc<Probe>) -> Drainer<Probe> {
        Drainer {
            pool: self.pool.clone(),
            log: Log::new(SCHEMA, Duration::from_secs(5)).unwrap(),
            service: probe,
            max_attempts: 3,
            batch,
            name: "probe".into(),
            owner: String::new(),
            lag: stratavore_consumer::ApplyLag::default(),
            commits: stratavore_consumer::Commits::default(),
            turn: Default::default(),
        }
    }

    /// Put version `version` of `stream` in the inbox as received.
    async fn receive(&self, stream: &str, version: u64, data: serde_json::Value) -> Uuid {
        let envelope = envelope(stream, version, data);
        let stored = serde_json::to_value(envelope.to_cloudevent().unwrap()).unwrap();
        sqlx::query(
            "INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, message)
             VALUES ($1, 'session-orchestrator', $2, $3, $4, 'received', $5)",
        )
        .bind(envelope.id)
        .bind(stream)
        .bind(i64::try_from(version).unwrap())
        .bind(&envelope.type_name)
        .bind(stored)
        .execute(&self.pool)
        .await
        .unwrap();
        envelope.id
    }

    /// Each stream's folded versions, in the order they were applied.
    async fn folded(&self) -> BTreeMap<String, Vec<i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT p.stream, p.version FROM drain_probe p
             JOIN inbox i ON i.message_id = p.message_id ORDER BY i.applied_seq",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut folded: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (stream, version) in rows {
            folded.entry(stream).or_default().push(version);
        }
        folded
    }

    async fn transactions(&self) -> i64 {
        sqlx::query_scalar("SELECT count(DISTINCT tx) FROM drain_probe")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn stream_version(&self, stream: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT version FROM stream_versions WHERE stream = $1")
            .bind(stream)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    async fn status(&self, id: Uuid) -> (String, i32) {
        sqlx::query_as("SELECT status, attempts FROM inbox WHERE message_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        self.pool.close().await;
        self.env.cleanup().await.unwrap();
    }
}

/// Version `version` of `stream`, from the orchestrator.
fn envelope(stream: &str, version: u64, data: serde_json::Value) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: "/stratavore/session-orchestrator".into(),
        type_name: "io.stratavore.project.updated.v1".into(),
        subject: stream.into(),
        time: chrono::Utc::now(),
        data,
        stream: stream.into(),
        sequence: version,
        correlation_id: None,
        causation_id: None,
        traceparent: None,
        tracestate: None,
        idempotency_key: None,
    }
}

/// The envelope as the consumer reads it off the wire.
fn delivery(envelope: &Envelope) -> ReceivedMessage {
    let message = stratavore_bus::encode_event(envelope.to_cloudevent().unwrap()).unwrap();
    read_delivery(&message.properties, &message.body)
}

fn streams(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ("session-orchestrator".to_owned(), (*n).to_owned()))
        .collect()
}

fn ok() -> serde_json::Value {
    serde_json::json!({})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rows_of_many_streams_are_applied_in_one_transaction_each_stream_in_order_up_to_its_gap()
 {
    let f = Fixture::new().await;
    // Arrival order mixed; stream c lacks its version 3.
    for (stream, version) in [
        ("a", 2),
        ("b", 1),
        ("a", 1),
        ("c", 4),
        ("c", 1),
        ("b", 3),
        ("a", 3),
        ("c", 2),
        ("b", 2),
    ] {
        f.receive(stream, version, ok()).await;
    }
    let outcome = f
        .drainer(100)
        .drain_streams(&streams(&["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.blocked), (8, false));
    let folded = f.folded().await;
    assert_eq!(folded["a"], vec![1, 2, 3]);
    assert_eq!(folded["b"], vec![1, 2, 3]);
    assert_eq!(folded["c"], vec![1, 2], "c stops at its gap");
    assert_eq!(f.transactions().await, 1, "one transaction for the batch");
    assert_eq!(f.stream_version("c").await, Some(2));
    // Version 3 arrives: c goes on past it.
    f.receive("c", 3, ok()).await;
    f.drainer(100)
        .drain_stream("session-orchestrator", "c")
        .await
        .unwrap();
    assert_eq!(f.folded().await["c"], vec![1, 2, 3, 4]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_cut_at_its_size_and_a_long_stream_does_not_take_it_from_the_others() {
    let f = Fixture::new().await;
    // A long backlog behind a missing first row, and a short stream.
    for version in 2..=60 {
        f.receive("long", version, ok()).await;
    }
    for version in 1..=25 {
        f.receive("busy", version, ok()).await;
    }
    f.receive("short", 1, ok()).await;
    let outcome = f
        .drainer(10)
        .drain_streams(&streams(&["long", "busy", "short"]))
        .await
        .unwrap();
    assert_eq!(outcome.applied, 26);
    let folded = f.folded().await;
    assert_eq!(folded["busy"], (1..=25).collect::<Vec<_>>());
    assert_eq!(folded["short"], vec![1]);
    assert!(!folded.contains_key("long"));
    // 26 messages in batches of at most 10.
    assert!(f.transactions().await >= 3, "{}", f.transactions().await);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_stops_its_own_stream_and_the_rest_of_the_batch_is_applied() {
    let f = Fixture::new().await;
    f.receive("good", 1, ok()).await;
    f.receive("bad", 1, ok()).await;
    let refused = f
        .receive("bad", 2, serde_json::json!({"refuse": true}))
        .await;
    f.receive("bad", 3, ok()).await;
    f.receive("good", 2, ok()).await;
    let outcome = f
        .drainer(100)
        .drain_streams(&streams(&["bad", "good"]))
        .await
        .unwrap();
    assert!(outcome.blocked);
    let folded = f.folded().await;
    assert_eq!(folded["good"], vec![1, 2]);
    assert_eq!(folded["bad"], vec![1]);
    assert_eq!(f.status(refused).await, ("received".to_owned(), 1));
    assert_eq!(f.stream_version("bad").await, Some(1));
    assert_eq!(f.transactions().await, 1);
    // Refused again until the limit: then dead, and the stream waits.
    for _ in 0..2 {
        f.drainer(100)
            .drain_stream("session-orchestrator", "bad")
            .await
            .unwrap();
    }
    assert_eq!(f.status(refused).await, ("dead".to_owned(), 3));
    assert_eq!(f.folded().await["bad"], vec![1]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_in_a_batch_holds_up_only_its_own_stream() {
    let f = Fixture::new().await;
    f.receive("x", 1, ok()).await;
    f.receive("broken", 1, ok()).await;
    let broken = f
        .receive("broken", 2, serde_json::json!({"break": true}))
        .await;
    f.receive("y", 1, ok()).await;
    f.receive("y", 2, ok()).await;
    let result = f
        .drainer(100)
        .drain_streams(&streams(&["x", "broken", "y"]))
        .await;
    assert!(result.is_err(), "the failure is reported");
    let folded = f.folded().await;
    assert_eq!(folded["x"], vec![1]);
    assert_eq!(folded["y"], vec![1, 2]);
    assert_eq!(folded["broken"], vec![1], "its stream applied up to it");
    // An infrastructure failure counts no attempt: it is tried again.
    assert_eq!(f.status(broken).await, ("received".to_owned(), 0));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_appends_commits_its_batch_with_the_append_last() {
    let f = Fixture::new().await;
    f.receive("s", 1, ok()).await;
    f.receive("s", 2, serde_json::json!({"append": true})).await;
    f.receive("s", 3, ok()).await;
    f.receive("t", 1, ok()).await;
    let outcome = f
        .drainer(100)
        .drain_streams(&streams(&["s", "t"]))
        .await
        .unwrap();
    assert_eq!(outcome.applied, 4);
    let folded = f.folded().await;
    assert_eq!(folded["s"], vec![1, 2, 3]);
    assert_eq!(folded["t"], vec![1]);
    let txs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, tx FROM drain_probe WHERE stream = 's' ORDER BY version")
            .fetch_all(&f.pool)
            .await
            .unwrap();
    assert_eq!(txs[0].1, txs[1].1, "1 and 2 share a transaction");
    assert_ne!(txs[1].1, txs[2].1, "the append ended it");
    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM log WHERE stream LIKE 'probe-%'")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(appended, 1);
    f.cleanup().await;
}

fn quiet() -> serde_json::Value {
    serde_json::json!({"quiet": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_is_applied_without_decisions_up_to_the_first_loud_message_which_is_decided_alone()
 {
    let f = Fixture::new().await;
    f.receive("a", 1, quiet()).await;
    f.receive("a", 2, quiet()).await;
    let loud = f.receive("a", 3, serde_json::json!({"append": true})).await;
    f.receive("a", 4, quiet()).await;
    f.receive("b", 1, quiet()).await;
    f.receive("b", 2, quiet()).await;
    let probe = Arc::new(Probe {
        quiet: true,
        ..Probe::default()
    });
    let outcome = f
        .drainer_of(100, probe.clone())
        .drain_streams(&streams(&["a", "b"]))
        .await
        .unwrap();
    assert_eq!((outcome.applied, outcome.blocked), (6, false));
    let folded = f.folded().await;
    assert_eq!(folded["a"], vec![1, 2, 3, 4]);
    assert_eq!(folded["b"], vec![1, 2]);
    assert_eq!(
        *probe.decided.lock().unwrap(),
        vec![loud],
        "only the loud one"
    );
    // The whole batch was offered as one run; a1 and a2 were quiet. The
    // loud a3 appended, which ends a transaction; the next took the rest
    // as one run.
    assert_eq!(*probe.quiet_runs.lock().unwrap(), vec![6, 3]);
    // Folds: the quiet two together, then a3 before its append, then the
    // last run together.
    assert_eq!(*probe.folds.lock().unwrap(), vec![2, 1, 3]);
    assert_eq!(f.transactions().await, 2);
    assert_eq!(f.stream_version("a").await, Some(4));
    assert_eq!(f.stream_version("b").await, Some(2));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_quiet_run_stops_before_that_fails_stops_only_its_stream() {
    let f = Fixture::new().await;
    f.receive("bad", 1, quiet()).await;
    let refused = f
        .receive("bad", 2, serde_json::json!({"refuse": true}))
        .await;
    f.receive("bad", 3, quiet()).await;
    f.receive("good", 1, quiet()).await;
    f.receive("good", 2, ok()).await;
    f.receive("good", 3, quiet()).await;
    let probe = Arc::new(Probe {
        quiet: true,
        ..Probe::default()
    });
    let outcome = f
        .drainer_of(100, probe.clone())
        .drain_streams(&streams(&["bad", "good"]))
        .await
        .unwrap();
    assert!(outcome.blocked);
    let folded = f.folded().await;
    assert_eq!(folded["bad"], vec![1], "stopped at the refused one");
    assert_eq!(
        folded["good"],
        vec![1, 2, 3],
        "decided alone, then quiet again"
    );
    assert_eq!(f.status(refused).await, ("received".to_owned(), 1));
    assert_eq!(f.stream_version("bad").await, Some(1));
    assert_eq!(f.stream_version("good").await, Some(3));
    // bad2 and good2 were each decided alone (neither is quiet); bad3
    // never was.
    assert_eq!(probe.decided.lock().unwrap().len(), 2);
    assert_eq!(f.transactions().await, 1);
    f.cleanup().await;
}

/// Count every update of an inbox row from now on.
async fn count_inbox_updates(pool: &sqlx::PgPool) {
    for statement in [
        "CREATE TABLE inbox_updates (message_id uuid, status text)",
        "CREATE FUNCTION count_inbox_update() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO inbox_updates VALUES (NEW.message_id, NEW.status); RETURN NULL; END $$",
        "CREATE TRIGGER count_inbox_update AFTER UPDATE ON inbox FOR EACH ROW
         EXECUTE FUNCTION count_inbox_update()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

async fn inbox_updates(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox_updates")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_batch_that_continues_its_streams_is_applied_by_the_transaction_that_inserts_it()
{
    let f = Fixture::new().await;
    count_inbox_updates(&f.pool).await;
    // c's version 1 is still on its way; its version 3 waits in the inbox.
    let waiting_c3 = f.receive("c", 3, ok()).await;
    let batch: Vec<Envelope> = [("a", 2), ("b", 1), ("a", 1), ("c", 2), ("a", 3)]
        .iter()
        .map(|(stream, version)| envelope(stream, *version, ok()))
        .collect();
    let received: Vec<ReceivedMessage> = batch.iter().map(delivery).collect();
    let drainer = f.drainer(100);
    let delivered = drainer.apply_delivered(&received).await.unwrap();
    assert_eq!((delivered.inserted, delivered.applied), (5, 4));
    assert_eq!(delivered.waiting, streams(&["c"]), "c has a gap");
    let folded = f.folded().await;
    assert_eq!(folded["a"], vec![1, 2, 3], "in version order, numbered so");
    assert_eq!(folded["b"], vec![1]);
    assert!(!folded.contains_key("c"));
    // The rows went in applied, by the transaction that folded them.
    assert_eq!(inbox_updates(&f.pool).await, 0);
    let same_transaction: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inbox i JOIN drain_probe p USING (message_id)
         WHERE i.status = 'applied' AND i.xmin::text::bigint = p.tx % 4294967296",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(same_transaction, 4);
    assert_eq!(f.transactions().await, 1);
    assert_eq!(f.status(batch[3].id).await, ("received".into(), 0));
    assert_eq!(
        (f.stream_version("a").await, f.stream_version("b").await),
        (Some(3), Some(1))
    );
    // The same batch again (redelivered, all of it): nothing new, nothing
    // applied twice.
    let again = drainer.apply_delivered(&received).await.unwrap();
    assert_eq!((again.inserted, again.applied), (0, 0));
    assert_eq!(again.waiting, streams(&["c"]));
    // c's version 1 arrives: applied on receipt, and c is handed to the
    // drain, which applies the versions that waited for it.
    let c1 = delivery(&envelope("c", 1, ok()));
    let delivered = drainer.apply_delivered(&[c1]).await.unwrap();
    assert_eq!(delivered.applied, 1);
    assert_eq!(delivered.waiting, streams(&["c"]), "c has rows waiting");
    drainer.drain_streams(&delivered.waiting).await.unwrap();
    assert_eq!(f.folded().await["c"], vec![1, 2, 3]);
    assert_eq!(f.status(waiting_c3).await, ("applied".into(), 0));
    assert_eq!(f.stream_version("c").await, Some(3));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_applied_on_receipt_whose_row_another_transaction_inserted_is_rolled_back_whole()
{
    let f = Fixture::new().await;
    // Another replica inserted version 1 (its first copy) and has not
    // drained it yet; the redelivered copy arrives here with b's first.
    let first = envelope("a", 1, ok());
    let stored = serde_json::to_value(first.to_cloudevent().unwrap()).unwrap();
    sqlx::query(
        "INSERT INTO inbox (message_id, source_log, stream, stream_version, type, status, message)
         VALUES ($1, 'session-orchestrator', 'a', 1, $2, 'received', $3)",
    )
    .bind(first.id)
    .bind(&first.type_name)
    .bind(stored)
    .execute(&f.pool)
    .await
    .unwrap();
    let b1 = envelope("b", 1, ok());
    let drainer = f.drainer(100);
    let raced = drainer
        .apply_delivered(&[delivery(&first), delivery(&b1)])
        .await;
    assert!(
        matches!(raced, Err(DrainError::AlreadyReceived)),
        "{raced:?}"
    );
    assert!(f.folded().await.is_empty(), "nothing of the batch stayed");
    assert_eq!(f.stream_version("b").await, None);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "b's row went with the rollback");
    // The drain applies the first copy once.
    drainer.drain_streams(&streams(&["a"])).await.unwrap();
    assert_eq!(f.folded().await["a"], vec![1]);
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_fails_on_receipt_goes_in_received_and_the_drain_records_its_failure() {
    let f = Fixture::new().await;
    let refused = envelope("a", 1, serde_json::json!({"refuse": true}));
    let after = envelope("a", 2, ok());
    let other = envelope("b", 1, ok());
    let drainer = f.drainer(100);
    let delivered = drainer
        .apply_delivered(&[delivery(&refused), delivery(&after), delivery(&other)])
        .await
        .unwrap();
    assert_eq!((delivered.inserted, delivered.applied), (3, 1));
    assert_eq!(delivered.waiting, streams(&["a"]));
    assert_eq!(f.status(refused.id).await, ("received".into(), 0));
    assert_eq!(f.status(after.id).await, ("received".into(), 0));
    assert_eq!(f.status(other.id).await, ("applied".into(), 0));
    let outcome = drainer.drain_streams(&delivered.waiting).await.unwrap();
    assert!(outcome.blocked);
    assert_eq!(
        f.status(refused.id).await,
        ("received".into(), 1),
        "the drain counted the attempt"
    );
    assert_eq!(f.status(after.id).await, ("received".into(), 0));
    f.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_receipt_a_message_that_appends_ends_what_is_applied_and_the_rest_waits_for_the_drain() {
    let f = Fixture::new().await;
    let batch = [
        envelope("a", 1, ok()),
        envelope("a", 2, serde_json::json!({"append": true})),
        envelope("a", 3, ok()),
        envelope("b", 1, ok()),
    ];
    let received: Vec<ReceivedMessage> = batch.iter().map(delivery).collect();
    let drainer = f.drainer(100);
    let delivered = drainer.apply_delivered(&received).await.unwrap();
    assert_eq!((delivered.inserted, delivered.applied), (4, 2));
    assert_eq!(delivered.waiting, streams(&["a", "b"]));
    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM log WHERE stream LIKE 'probe-%'")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(appended, 1);
    drainer.drain_streams(&delivered.waiting).await.unwrap();
    let folded = f.folded().await;
    assert_eq!(folded["a"], vec![1, 2, 3]);
    assert_eq!(folded["b"], vec![1]);
    f.cleanup().await;
}
