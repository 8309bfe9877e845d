//! `/api/v1/nodes`: list, get, drain, undrain. A node's facts come from the
//! read model, its latest heartbeat from this gateway's memory. A drain is
//! a command the orchestrator decides; the request answers with the node
//! once the drain is applied within `wait`, else 202 and the command's
//! location.

use super::ApiState;
use crate::commands::Api;
use crate::http::{ApiError, IdempotencyKey, Page, PageRequest, Wait};
use crate::node_models::{self, NodeFacts, NodeView, node_resource, node_view};
use crate::read_models::CommandView;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use stratavore_events::process::{DrainNode, NodeCommand};

fn not_found(node: &str) -> ApiError {
    ApiError::NotFound {
        what: format!("node {node}"),
    }
}

/// The API's view of a node: its facts and what this gateway heard.
fn view(api: &Api, facts: NodeFacts) -> NodeView {
    let heartbeat = api.heartbeats.latest(&facts.node);
    node_view(facts, heartbeat.as_ref(), api.clock.now())
}

async fn find(api: &Api, node: &str) -> Result<Option<NodeView>, ApiError> {
    let facts = node_models::get_node(&api.pool, node)
        .await
        .map_err(ApiError::internal)?;
    Ok(facts.map(|f| view(api, f)))
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let api = state.api()?;
    find(api, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

pub(super) async fn list(
    State(state): State<ApiState>,
    page: PageRequest,
) -> Result<Json<Page<NodeView>>, ApiError> {
    let api = state.api()?;
    let rows = node_models::list_nodes(&api.pool, page.after.as_deref(), page.fetch_limit())
        .await
        .map_err(ApiError::internal)?;
    let views = rows.into_iter().map(|f| view(api, f)).collect();
    Ok(Json(Page::from_overfetch(views, &page, |n| n.id.clone())))
}

/// `not_found` (the orchestrator knows no such node) is 404; anything else
/// (`node_lost`) is the node's state standing in the way.
fn rejection(view: &CommandView, node: &str) -> ApiError {
    let reason = view.reason.clone().unwrap_or_else(|| "rejected".into());
    if reason == "not_found" {
        return not_found(node);
    }
    ApiError::Conflict {
        reason,
        detail: view.message.clone().unwrap_or_default(),
    }
}

pub(super) async fn drain(
    state: State<ApiState>,
    id: Path<String>,
    key: IdempotencyKey,
    wait: Wait,
) -> Result<Response, ApiError> {
    change_drain(state, id, key, wait, true).await
}

pub(super) async fn undrain(
    state: State<ApiState>,
    id: Path<String>,
    key: IdempotencyKey,
    wait: Wait,
) -> Result<Response, ApiError> {
    change_drain(state, id, key, wait, false).await
}

async fn change_drain(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    draining: bool,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    // A node the gateway has never heard of is refused before anything is
    // sent, so a typo leaves no command behind.
    if node_models::get_node(&api.pool, &id)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(not_found(&id));
    }
    let command = NodeCommand::Drain(DrainNode {
        node: id.clone(),
        draining,
    });
    let fetch = |node: String| async move {
        // The outcome and the node's drain are folded from one event, in
        // one transaction, so the row shows the drain once the outcome does.
        let view = find(api, &node).await?.ok_or_else(|| {
            ApiError::internal(format!(
                "node {node}'s drain succeeded but it is not in the read model"
            ))
        })?;
        Ok((view, node_resource(&node)))
    };
    let request = super::CommandRequest {
        subject: &id,
        key: key.as_deref(),
        wait,
        success: StatusCode::OK,
    };
    super::submit(api, &command, request, |view| rejection(view, &id), fetch).await
}
