//! The REST API under `/api/v1`: routes, and the state they share (set
//! once the database is reachable; until then every route answers 503).

mod commands;
mod projects;
mod runners;

use crate::commands::Api;
use crate::http::{
    AllowedHosts, ApiError, guard_host_and_origin, method_not_allowed, route_not_found,
};
use axum::Router;
use axum::routing::{get, post};
use std::sync::{Arc, OnceLock};

/// The API's state: empty until the service has its database.
#[derive(Clone, Default)]
pub struct ApiState(Arc<OnceLock<Api>>);

impl ApiState {
    /// Make the API usable.
    pub fn set(&self, api: Api) {
        let _ = self.0.set(api);
    }

    fn api(&self) -> Result<&Api, ApiError> {
        self.0.get().ok_or_else(|| ApiError::NotReady {
            detail: "the gateway is still connecting to its database".into(),
        })
    }
}

/// Every `/api/v1` route, behind the Host and Origin guard.
pub fn router(state: ApiState, allowed: AllowedHosts) -> Router {
    Router::new()
        .route(
            "/api/v1/projects",
            post(projects::create).get(projects::list),
        )
        .route(
            "/api/v1/projects/{name}",
            get(projects::get_one).patch(projects::update),
        )
        .route("/api/v1/projects/{name}/archive", post(projects::archive))
        .route(
            "/api/v1/projects/{name}/unarchive",
            post(projects::unarchive),
        )
        .route("/api/v1/commands/{id}", get(commands::get_one))
        .route("/api/v1/runners", post(runners::launch).get(runners::list))
        .route("/api/v1/runners/{id}", get(runners::get_one))
        .route("/api/v1/runners/{id}/stop", post(runners::stop))
        .route("/api/v1/runners/{id}/kill", post(runners::kill))
        .route("/api/v1/runners/{id}/pause", post(runners::pause))
        .route("/api/v1/runners/{id}/resume", post(runners::resume))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            guard_host_and_origin,
        ))
        .with_state(state)
}
