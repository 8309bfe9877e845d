//! Private servers for tests that kill or restart the database or broker,
//! so they never disturb the tests sharing the common ones.

use crate::paths;
use stratavore_provision::postgres_install::PgInstall;
use stratavore_provision::postgres_private::PrivatePg;
use stratavore_provision::postgres_server::PgCluster;
use stratavore_provision::rabbitmq_private_node::PrivateRabbitNode;

/// A Postgres (with pgvector) of the test's own, on a free port; stopped
/// and removed when dropped.
pub async fn private_postgres() -> anyhow::Result<PrivatePg> {
    Ok(tokio::task::spawn_blocking(|| {
        let install = PgInstall::ensure(&paths::postgres_root())?;
        PgCluster::private(&install, &paths::scratch_dir())
    })
    .await??)
}

/// A RabbitMQ node of the test's own (about 5 s to start); stopped and
/// removed when dropped.
pub async fn private_rabbitmq() -> anyhow::Result<PrivateRabbitNode> {
    Ok(tokio::task::spawn_blocking(|| {
        PrivateRabbitNode::start(&paths::scratch_dir().join("rabbitmq"))
    })
    .await??)
}
