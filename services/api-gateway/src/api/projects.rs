//! `/api/v1/projects`: create, list, get, update, archive, unarchive.
//! Changes are commands the orchestrator decides; a request answers with
//! the outcome when it arrives within `wait`, else 202 and the command's
//! location.

use super::ApiState;
use crate::commands::Api;
use crate::http::{ApiError, FieldError, IdempotencyKey, Page, PageRequest, ValidJson, Wait};
use crate::read_models::{self, CommandView, ProjectView};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use stratavore_events::project::{
    CreateProject, ProjectCommand, ProjectRef, UpdateProject, validate_project_name,
};

/// `POST /api/v1/projects` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    path: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    max_concurrent_runners: Option<u32>,
}

/// `PATCH /api/v1/projects/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    max_concurrent_runners: Option<u32>,
}

/// What the gateway can tell at once, before the orchestrator decides the
/// rest (uniqueness, allowed roots).
fn check_create(body: &CreateBody) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Err(why) = validate_project_name(&body.name) {
        errors.push(FieldError::new("name", format!("the project name {why}")));
    }
    if !body.path.starts_with('/') {
        errors.push(FieldError::new("path", "the path must be absolute"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// A name in a URL that cannot name a project names nothing.
fn known_name(name: &str) -> Result<(), ApiError> {
    validate_project_name(name).map_err(|_| ApiError::NotFound {
        what: format!("project {name}"),
    })
}

fn rejection(view: &CommandView, name: &str) -> ApiError {
    let reason = view.reason.clone().unwrap_or_else(|| "rejected".into());
    let message = view.message.clone().unwrap_or_default();
    match (reason.as_str(), view.field.as_deref()) {
        ("not_found", _) => ApiError::NotFound {
            what: format!("project {name}"),
        },
        ("name_taken", _) | (_, None) => ApiError::Conflict {
            reason,
            detail: message,
        },
        (_, Some(field)) => ApiError::Validation(vec![FieldError::new(field, message)]),
    }
}

/// Send a project command and answer with the project.
async fn submit(
    api: &Api,
    command: ProjectCommand,
    name: &str,
    key: Option<&str>,
    wait: std::time::Duration,
    success: StatusCode,
) -> Result<Response, ApiError> {
    let fetch = |name: String| async move {
        let project = read_models::get_project(&api.pool, &name)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "project {name} succeeded but is not in the read model"
                ))
            })?;
        Ok((project, format!("/api/v1/projects/{name}")))
    };
    let request = super::CommandRequest {
        subject: name,
        key,
        wait,
        success,
    };
    super::submit(api, &command, request, |view| rejection(view, name), fetch).await
}

pub(super) async fn create(
    State(state): State<ApiState>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<CreateBody>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    check_create(&body)?;
    let name = body.name.clone();
    let command = ProjectCommand::Create(CreateProject {
        name: body.name,
        path: body.path,
        description: body.description,
        tags: body.tags,
        max_concurrent_runners: body.max_concurrent_runners,
    });
    submit(
        api,
        command,
        &name,
        key.as_deref(),
        wait,
        StatusCode::CREATED,
    )
    .await
}

pub(super) async fn update(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    known_name(&name)?;
    let command = ProjectCommand::Update(UpdateProject {
        name: name.clone(),
        description: body.description,
        tags: body.tags,
        max_concurrent_runners: body.max_concurrent_runners,
    });
    submit(api, command, &name, key.as_deref(), wait, StatusCode::OK).await
}

pub(super) async fn archive(
    state: State<ApiState>,
    name: Path<String>,
    key: IdempotencyKey,
    wait: Wait,
) -> Result<Response, ApiError> {
    change_archive(state, name, key, wait, true).await
}

pub(super) async fn unarchive(
    state: State<ApiState>,
    name: Path<String>,
    key: IdempotencyKey,
    wait: Wait,
) -> Result<Response, ApiError> {
    change_archive(state, name, key, wait, false).await
}

async fn change_archive(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    archive: bool,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    known_name(&name)?;
    let project = ProjectRef { name: name.clone() };
    let command = if archive {
        ProjectCommand::Archive(project)
    } else {
        ProjectCommand::Unarchive(project)
    };
    submit(api, command, &name, key.as_deref(), wait, StatusCode::OK).await
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ProjectView>, ApiError> {
    let api = state.api()?;
    read_models::get_project(&api.pool, &name)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("project {name}"),
        })
}

pub(super) async fn list(
    State(state): State<ApiState>,
    page: PageRequest,
) -> Result<Json<Page<ProjectView>>, ApiError> {
    let api = state.api()?;
    let rows = read_models::list_projects(&api.pool, page.after.as_deref(), page.fetch_limit())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Page::from_overfetch(rows, &page, |p| p.name.clone())))
}
