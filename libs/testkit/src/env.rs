//! Everything a typical integration test needs at once: its own database and
//! its own broker prefix, and the settings that point a service at them.

use crate::broker::TestBroker;
use crate::database::TestDatabase;

/// A test's own database and broker prefix.
#[derive(Debug)]
pub struct TestEnv {
    /// The database.
    pub db: TestDatabase,
    /// The broker prefix.
    pub broker: TestBroker,
}

impl TestEnv {
    /// A fresh database and prefix on the shared servers.
    pub async fn new() -> anyhow::Result<Self> {
        let (db, broker) = tokio::try_join!(TestDatabase::create(), TestBroker::create())?;
        Ok(Self { db, broker })
    }

    /// Environment variables that point a service (in-process config or a
    /// real process) at this test's database and prefix, with its health
    /// server on a free port and short, test-sized relay polling.
    pub fn service_env(&self) -> Vec<(String, String)> {
        vec![
            ("STRATAVORE__DATABASE__URL".into(), self.db.url()),
            (
                "STRATAVORE__BROKER__URL".into(),
                self.broker.url().to_owned(),
            ),
            (
                "STRATAVORE__BROKER__PREFIX".into(),
                self.broker.prefix().to_owned(),
            ),
            ("STRATAVORE__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ]
    }

    /// Clean up the database and the prefix now.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        self.db.drop_now().await?;
        self.broker.cleanup().await
    }
}
