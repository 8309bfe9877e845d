//! `GET /api/v1/commands/{id}`: the status of an accepted command.

use super::ApiState;
use crate::http::ApiError;
use crate::read_models::{self, CommandView};
use axum::Json;
use axum::extract::{Path, State};
use uuid::Uuid;

pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    let api = state.api()?;
    let not_found = || ApiError::NotFound {
        what: format!("command {id}"),
    };
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    read_models::get_command(&api.pool, uuid)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(not_found)
}
