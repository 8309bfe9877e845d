//! The gateway as a consumer: it decides nothing (clients' commands are
//! decided by the services that own them); it only folds what it receives
//! and what it accepted into its read models.

use crate::read_models;
use sqlx::PgConnection;
use stratavore_consumer::{Decider, HandleError, Projection};
use stratavore_events::Envelope;
use stratavore_store::{NewEntry, StoreError};

/// The gateway's decider and projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayService;

impl Decider for GatewayService {
    async fn decide(
        &self,
        _conn: &mut PgConnection,
        _message: &Envelope,
    ) -> Result<Vec<NewEntry>, HandleError> {
        Ok(Vec::new())
    }

    fn on_skipped(&self, _message: &Envelope) -> Vec<NewEntry> {
        Vec::new()
    }

    fn reads_projection(&self) -> bool {
        false
    }
}

impl Projection for GatewayService {
    fn tables(&self) -> &'static [&'static str] {
        read_models::TABLES
    }

    async fn project_own(
        &self,
        conn: &mut PgConnection,
        entry: &Envelope,
    ) -> Result<(), StoreError> {
        read_models::project_own(conn, entry).await
    }

    async fn project_own_batch(
        &self,
        conn: &mut PgConnection,
        entries: &[&Envelope],
    ) -> Result<(), StoreError> {
        read_models::project_own_batch(conn, entries).await
    }

    async fn project_received(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
    ) -> Result<(), StoreError> {
        read_models::project_received(conn, message).await
    }

    async fn project_received_batch(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<(), StoreError> {
        read_models::project_received_batch(conn, messages).await
    }

    async fn finish_rebuild(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        crate::session_models::refresh_all(conn).await
    }
}
