//! A message that matches no binding lands in the unroutable queue, is
//! counted, and the relay goes on.

use crate::support::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::time::Duration;
use stratavore_events::MessageKind;
use stratavore_testkit::{TestEnv, wait_until};

#[tokio::test]
async fn a_message_no_queue_is_bound_for_is_kept_in_the_unroutable_queue_counted_and_passed() {
    let env = TestEnv::new().await.unwrap();
    let mut subscriber = env
        .broker
        .subscribe_events("project.created")
        .await
        .unwrap();
    let relay = start_relay(relay_config(&env)).await.unwrap();
    let pool = env.db.service_pool(SERVICE).await.unwrap();

    // A control command for a node that never registered: no queue is bound
    // to its routing key.
    let mut orphan = project_created("orphan", 1);
    orphan.kind = MessageKind::Command;
    orphan.routing_key = "runner-supervisor.control.node-that-never-registered".into();
    let after = project_created("after-orphan", 1);
    append_committed(&pool, &[orphan.clone(), after.clone()])
        .await
        .unwrap();

    let d = subscriber
        .next(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the relay went on");
    assert_eq!(message_id(&d), after.envelope.id);

    let conn = env.broker.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let unroutable = env.broker.topology().unroutable_queue();
    let depth = || {
        let channel = channel.clone();
        let unroutable = unroutable.clone();
        async move {
            let q = channel
                .queue_declare(
                    unroutable.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, anyhow::Error>(q.message_count())
        }
    };
    wait_until(
        "the orphan in the unroutable queue",
        Duration::from_secs(10),
        || async { Ok((depth().await? == 1).then_some(())) },
    )
    .await
    .unwrap();
    wait_until("the unroutable gauge", Duration::from_secs(10), || async {
        let text = stratavore_runtime::prometheus_handle().render();
        Ok(text
            .lines()
            .any(|l| l.starts_with("stratavore_unroutable_messages ") && l.ends_with(" 1"))
            .then_some(()))
    })
    .await
    .unwrap();

    conn.close(200, "done".into()).await.unwrap();
    stop_relay(relay).await.unwrap();
    pool.close().await;
    env.cleanup().await.unwrap();
}
