use std::time::{Duration, Instant};

use stratavore_provision::loopback;
use stratavore_provision::rabbitmq_private_node::PrivateRabbitNode;
use stratavore_provision::rabbitmq_server::ensure_broker_running;

use crate::scratch_dir;

#[test]
fn the_machine_broker_counts_as_running() {
    ensure_broker_running("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
}

#[test]
fn serial_a_private_rabbit_node_stops_and_starts_its_app_and_is_gone_after_drop() {
    let started = Instant::now();
    let node = PrivateRabbitNode::start(&scratch_dir()).unwrap();
    eprintln!(
        "private node {} up in {:?}",
        node.node_name(),
        started.elapsed()
    );
    let port = node.amqp_port();
    assert!(node.amqp_url().ends_with(&format!(":{port}/%2f")));
    assert!(loopback::accepts_tcp(
        "127.0.0.1",
        port,
        Duration::from_secs(1)
    ));

    let stopping = Instant::now();
    node.stop_app().unwrap();
    eprintln!("stop_app took {:?}", stopping.elapsed());
    assert!(!loopback::accepts_tcp(
        "127.0.0.1",
        port,
        Duration::from_secs(1)
    ));

    let starting = Instant::now();
    node.start_app().unwrap();
    eprintln!("start_app took {:?}", starting.elapsed());
    assert!(loopback::accepts_tcp(
        "127.0.0.1",
        port,
        Duration::from_secs(1)
    ));

    let dropping = Instant::now();
    drop(node);
    eprintln!("stop and cleanup took {:?}", dropping.elapsed());
    assert!(!loopback::accepts_tcp(
        "127.0.0.1",
        port,
        Duration::from_secs(1)
    ));
}
