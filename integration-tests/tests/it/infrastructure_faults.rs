//! Postgres and RabbitMQ restarted while commands are accepted, each on an
//! instance the test starts for itself: every accepted command gets its
//! outcome, and nothing is dead-lettered.

use crate::support::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratavore_testkit::{
    TestBroker, TestDatabase, TestEnv, private_postgres, private_rabbitmq, wait_until,
};

/// What [`accept_commands`] saw.
struct Accepted {
    /// The command locations of the requests answered 202.
    pending: Vec<String>,
    /// Requests answered 201: even with `wait=0` the outcome may be known
    /// by the time the gateway looks, when the accept itself was slow (its
    /// database restarting) and the command went round meanwhile.
    created: usize,
    /// Requests refused while something was down.
    refused: usize,
}

impl Accepted {
    fn count(&self) -> usize {
        self.pending.len() + self.created
    }
}

/// POST creates for `run_for`, sorting the answers.
async fn accept_commands(stack: &Stack, prefix: &str, run_for: Duration) -> Accepted {
    let mut accepted = Vec::new();
    let mut created = 0;
    let mut refused = 0;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < run_for {
        i += 1;
        let body = json!({"name": format!("{prefix}-{i}"), "path": format!("{ROOT}/{prefix}-{i}")});
        let request = stack
            .http
            .post(stack.url("/api/v1/projects?wait=0"))
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        match request {
            Ok(r) if r.status().as_u16() == 202 => {
                let location = r.headers()["location"].to_str().unwrap().to_owned();
                accepted.push(location);
            }
            Ok(r) if r.status().as_u16() == 201 => {
                let project: serde_json::Value = r.json().await.unwrap();
                assert_eq!(project["name"], body["name"], "{project}");
                created += 1;
            }
            Ok(r) => {
                assert!(
                    r.status().is_server_error(),
                    "only an outage may refuse: {}",
                    r.status()
                );
                refused += 1;
            }
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Accepted {
        pending: accepted,
        created,
        refused,
    }
}

/// Wait until every accepted command has succeeded.
async fn assert_all_succeed(stack: &Stack, accepted: &[String]) {
    for location in accepted {
        let status = wait_until(
            "the command's outcome",
            Duration::from_secs(120),
            || async {
                let r = get(stack, location).await;
                Ok((r.status.as_u16() == 200 && r.body["status"] != "pending")
                    .then(|| r.body["status"].clone()))
            },
        )
        .await
        .unwrap();
        assert_eq!(status, "succeeded", "{location}");
    }
}

async fn assert_nothing_dead(env: &TestEnv) {
    let pool = env.db.admin_pool().await.unwrap();
    for schema in ["gateway", "orchestrator"] {
        let statuses = inbox_statuses(&pool, schema).await;
        assert_eq!(statuses.get("dead"), None, "{schema}: {statuses:?}");
        assert_eq!(statuses.get("received"), None, "{schema}: {statuses:?}");
        assert_applied_in_order(&pool, schema).await;
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_a_postgres_restart_during_consumption_dead_letters_nothing_and_loses_nothing() {
    let private = Arc::new(private_postgres().await.unwrap());
    let db = TestDatabase::create_on(&private.cluster().url("postgres"))
        .await
        .unwrap();
    let broker = TestBroker::create().await.unwrap();
    let stack = Stack::start_on(TestEnv { db, broker }).await;

    let restarts = {
        let private = private.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let p = private.clone();
            tokio::task::spawn_blocking(move || p.cluster().restart())
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            tokio::task::spawn_blocking(move || {
                private.cluster().kill9()?;
                private.cluster().start()
            })
            .await
            .unwrap()
            .unwrap();
        })
    };
    let accepted = accept_commands(&stack, "pg", Duration::from_secs(6)).await;
    restarts.await.unwrap();
    assert!(accepted.count() > 20, "{} accepted", accepted.count());
    eprintln!(
        "{} commands accepted ({} answered 201 at once), {} refused during the outages",
        accepted.count(),
        accepted.created,
        accepted.refused
    );
    assert_all_succeed(&stack, &accepted.pending).await;
    // The sweepers finish what the outage interrupted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_nothing_dead(&stack.env).await;
    crate::rebuild::assert_rebuilds_match_live(&stack.env).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_every_command_accepted_while_rabbitmq_restarts_gets_its_outcome() {
    let node = Arc::new(private_rabbitmq().await.unwrap());
    let db = TestDatabase::create().await.unwrap();
    let broker = TestBroker::create_on(&node.amqp_url()).await.unwrap();
    let stack = Stack::start_on(TestEnv { db, broker }).await;

    let restart = {
        let node = node.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let n = node.clone();
            tokio::task::spawn_blocking(move || n.stop_app())
                .await
                .unwrap()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            tokio::task::spawn_blocking(move || node.start_app())
                .await
                .unwrap()
                .unwrap();
        })
    };
    let accepted = accept_commands(&stack, "mq", Duration::from_secs(7)).await;
    restart.await.unwrap();
    assert_eq!(
        accepted.refused, 0,
        "accepting a command needs only the gateway's database"
    );
    eprintln!(
        "{} commands accepted across the broker restart",
        accepted.count()
    );
    assert_all_succeed(&stack, &accepted.pending).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_nothing_dead(&stack.env).await;
    crate::rebuild::assert_rebuilds_match_live(&stack.env).await;
    stack.cleanup().await;
}
