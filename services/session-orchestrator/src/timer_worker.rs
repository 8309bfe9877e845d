//! The durable timers' worker: due timers are claimed in the database
//! (`FOR UPDATE SKIP LOCKED`, so replicas share the work) and take effect
//! through a version-checked append to the runner's stream, so a timer that
//! two replicas both find due fires once.

use crate::handlers::Orchestrator;
use crate::runner_store::{self, DueTimer};
use std::sync::Arc;
use std::time::Duration;
use stratavore_consumer::{HandleError, record_own};
use stratavore_runtime::Shutdown;
use stratavore_store::{Log, StoreError};

/// Fires due timers every `interval` until shutdown.
pub struct TimerWorker {
    /// The orchestrator's pool.
    pub pool: sqlx::PgPool,
    /// Its log.
    pub log: Log,
    /// Decides what a timer leads to.
    pub service: Arc<Orchestrator>,
    /// How often to look.
    pub interval: Duration,
}

/// Why one timer did not fire this round (it is tried again next round).
#[derive(Debug, thiserror::Error)]
enum FireError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] stratavore_store::AppendError),
    #[error("{0}")]
    Decision(String),
}

impl From<HandleError> for FireError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Store(s) => Self::Store(s),
            HandleError::Message(m) => Self::Decision(m),
        }
    }
}

impl TimerWorker {
    /// Run until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            match self.fire_due().await {
                Ok(0) => {}
                Ok(fired) => tracing::debug!(fired, "timers fired"),
                Err(e) => tracing::warn!(error = %e, "firing timers failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Fire what is due now; returns how many fired.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let now_ms = self.service.clock.now().timestamp_millis();
        let due = {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(StoreError::new("looking for due timers"))?;
            // Read without locking here; each timer is locked and checked
            // again in its own transaction.
            runner_store::due_timers_peek(&mut conn, now_ms, 100).await?
        };
        let mut fired = 0;
        for timer in due {
            match self.fire_one(&timer, now_ms).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(runner = %timer.runner_id, error = %e, "a timer did not fire")
                }
            }
        }
        Ok(fired)
    }

    async fn fire_one(&self, timer: &DueTimer, now_ms: i64) -> Result<bool, FireError> {
        let mut tx = stratavore_consumer::begin_shared(
            &self.pool,
            self.log.schema(),
            "opening a timer transaction",
        )
        .await?;
        let Some(locked) = runner_store::lock_due_timer(&mut tx, timer.runner_id, now_ms).await?
        else {
            // Fired by another replica, replaced, or no longer due.
            return Ok(false);
        };
        let entries = self.service.decide_timer(&mut tx, &locked).await?;
        if entries.is_empty() {
            // The runner moved on; the timer means nothing any more.
            runner_store::delete_timer(&mut tx, locked.runner_id).await?;
        }
        record_own(&mut tx, &self.log, self.service.as_ref(), &entries).await?;
        tx.commit()
            .await
            .map_err(StoreError::new("committing a fired timer"))?;
        Ok(true)
    }
}
