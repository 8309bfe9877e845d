//! The node records what all its runners showed in a scan in one
//! transaction; when some of it was recorded before (a restart derived it
//! again), each runner's part is recorded on its own, the rest kept.

use runner_supervisor::config::SupervisorConfig;
use runner_supervisor::recording::Recorder;
use stratavore_events::process::{ProcessEvent, UsageReported};
use stratavore_store::NewEntry;
use stratavore_testkit::TestEnv;
use uuid::Uuid;

fn usage(recorder: &Recorder, runner: Uuid, version: u64) -> NewEntry {
    let event = ProcessEvent::UsageReported(UsageReported {
        runner_id: runner,
        attempt: 1,
        turn: u32::try_from(version).unwrap(),
        input_tokens: 10,
        output_tokens: 5,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        cost_usd: 0.0,
        model: None,
        session_id: "s".into(),
    });
    recorder.service.process_entry(&event, runner, 1, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runners_new_entries_are_recorded_once_whether_or_not_some_were_recorded_before() {
    let env = TestEnv::new().await.unwrap();
    let pool = env.db.service_pool("runner-supervisor").await.unwrap();
    let config = SupervisorConfig::default();
    let drainer = runner_supervisor::drainer(&config, pool.clone());
    let recorder = Recorder {
        pool: pool.clone(),
        log: drainer.log.clone(),
        service: drainer.service.clone(),
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // A clean scan: both runners' entries in one go.
    let first = [usage(&recorder, a, 1), usage(&recorder, a, 2)];
    let second = [usage(&recorder, b, 1)];
    assert_eq!(recorder.record_groups(&[&first, &second]).await.unwrap(), 3);
    // After a restart: a's version 2 is derived again beside its new 3.
    let again = [usage(&recorder, a, 2), usage(&recorder, a, 3)];
    let fresh = [usage(&recorder, b, 2)];
    assert_eq!(recorder.record_groups(&[&again, &fresh]).await.unwrap(), 2);
    assert_eq!(recorder.record_groups(&[&[], &[]]).await.unwrap(), 0);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream, stream_version FROM log WHERE type LIKE '%usage_reported%'
         ORDER BY stream, stream_version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let of = |runner: Uuid| -> Vec<i64> {
        let stream = runner_supervisor::domain::transcript_events::stream_name(runner, 1);
        rows.iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(of(a), vec![1, 2, 3]);
    assert_eq!(of(b), vec![1, 2]);
    pool.close().await;
    env.cleanup().await.unwrap();
}
