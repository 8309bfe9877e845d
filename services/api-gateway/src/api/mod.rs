//! The REST API under `/api/v1`: routes, and the state they share (set
//! once the database is reachable; until then every route answers 503).

mod budgets;
mod commands;
mod nodes;
mod projects;
mod runner_logs;
mod runners;
mod search;
mod sessions;

use crate::commands::Api;
use crate::http::{
    AllowedHosts, ApiError, guard_host_and_origin, method_not_allowed, route_not_found,
};
use crate::read_models::CommandView;
use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
        .route("/api/v1/budgets", post(budgets::create).get(budgets::list))
        .route(
            "/api/v1/budgets/{id}",
            get(budgets::get_one)
                .patch(budgets::update)
                .delete(budgets::delete),
        )
        .route("/api/v1/runners", post(runners::launch).get(runners::list))
        .route("/api/v1/runners/{id}", get(runners::get_one))
        .route("/api/v1/runners/{id}/stop", post(runners::stop))
        .route("/api/v1/runners/{id}/kill", post(runners::kill))
        .route("/api/v1/runners/{id}/pause", post(runners::pause))
        .route("/api/v1/runners/{id}/resume", post(runners::resume))
        .route("/api/v1/runners/{id}/logs", get(runner_logs::logs))
        .route("/api/v1/sessions/search", get(search::search))
        // `/api/v1/sessions/{id}` does not shadow static siblings such as
        // `/api/v1/sessions/search`: axum prefers a static segment.
        .route("/api/v1/sessions", get(sessions::list))
        .route("/api/v1/sessions/{id}", get(sessions::get_one))
        .route("/api/v1/sessions/{id}/resume", post(sessions::resume))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{id}", get(nodes::get_one))
        .route("/api/v1/nodes/{id}/drain", post(nodes::drain))
        .route("/api/v1/nodes/{id}/undrain", post(nodes::undrain))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            allowed,
            guard_host_and_origin,
        ))
        .with_state(state)
}

/// `202 Accepted` pointing at a command still being decided.
fn pending(id: uuid::Uuid) -> Response {
    let location = format!("/api/v1/commands/{id}");
    let body = serde_json::json!({ "id": id, "status": "pending", "location": location });
    with_location(
        (StatusCode::ACCEPTED, Json(body)).into_response(),
        &location,
    )
}

fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// What a request asks of [`submit`].
struct CommandRequest<'a> {
    /// What the command is about (its subject).
    subject: &'a str,
    /// The client's Idempotency-Key.
    key: Option<&'a str>,
    /// How long to wait for the outcome.
    wait: Duration,
    /// The status of a success.
    success: StatusCode,
}

/// The one way a command request is answered: record the command, wait for
/// its outcome, then answer with the resource it made or changed (`fetch`,
/// given the command's subject, returns it and its location), a problem
/// when it was refused (`refused`), or 202 when `wait` ran out.
async fn submit<M, T, F, Fut>(
    api: &Api,
    command: &M,
    request: CommandRequest<'_>,
    refused: impl Fn(&CommandView) -> ApiError,
    fetch: F,
) -> Result<Response, ApiError>
where
    M: stratavore_events::Message,
    T: serde::Serialize,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(T, String), ApiError>>,
{
    let id = api.accept(command, request.subject, request.key).await?;
    let Some(view) = api.await_outcome(id, request.wait).await? else {
        return Ok(pending(id));
    };
    if view.status == "rejected" {
        return Err(refused(&view));
    }
    // A retried request answers for the first one, whose subject the
    // command row keeps.
    let subject = view
        .subject
        .clone()
        .unwrap_or_else(|| request.subject.to_owned());
    let (resource, location) = fetch(subject).await?;
    Ok(with_location(
        (request.success, Json(resource)).into_response(),
        &location,
    ))
}
