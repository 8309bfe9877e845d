//! `/api/v1/runners`: launch, list, get, stop, kill, pause, resume. A launch
//! answers 201 with the runner once the orchestrator approved it within
//! `wait`, a problem when it refused it, else 202 with the command's
//! location.

use super::ApiState;
use crate::commands::Api;
use crate::http::{ApiError, FieldError, IdempotencyKey, Page, PageRequest, ValidJson, Wait};
use crate::read_models::CommandView;
use crate::runner_models::{self, RunnerFilter, RunnerView};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use stratavore_events::project::validate_project_name;
use stratavore_events::runner::{ControlRunner, LaunchMode, LaunchRunner, RunnerCommand, Want};
use uuid::Uuid;

/// The largest prompt accepted (agents take long prompts on stdin).
pub const MAX_PROMPT_BYTES: usize = 512 * 1024;
/// The most restarts a launch may ask for.
pub const MAX_RESTARTS: u32 = 100;

/// `POST /api/v1/runners` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LaunchBody {
    project: String,
    profile: String,
    prompt: String,
    #[serde(default = "default_mode")]
    mode: LaunchMode,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    permission: Option<String>,
    /// Tools from the profile's allowlist; absent: the profile's default,
    /// `[]`: none.
    #[serde(default)]
    allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    max_restarts: Option<u32>,
}

fn default_mode() -> LaunchMode {
    LaunchMode::New
}

/// Check a launch before it is sent; every bad field is named.
pub(super) fn check_launch(body: &LaunchRunner) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Err(why) = validate_project_name(&body.project) {
        errors.push(FieldError::new(
            "project",
            format!("the project name {why}"),
        ));
    }
    if body.profile.is_empty() {
        errors.push(FieldError::new("profile", "name an agent profile"));
    }
    if body.prompt.trim().is_empty() {
        errors.push(FieldError::new("prompt", "the prompt is empty"));
    }
    if body.prompt.len() > MAX_PROMPT_BYTES {
        errors.push(FieldError::new(
            "prompt",
            format!("the prompt is longer than {MAX_PROMPT_BYTES} bytes"),
        ));
    }
    match (body.mode, &body.session_id) {
        (LaunchMode::Resume, None) => errors.push(FieldError::new(
            "session_id",
            "mode resume needs a session_id",
        )),
        (LaunchMode::New | LaunchMode::Continue, Some(_)) => errors.push(FieldError::new(
            "session_id",
            "only mode resume takes a session_id",
        )),
        _ => {}
    }
    if body.max_restarts.is_some_and(|m| m > MAX_RESTARTS) {
        errors.push(FieldError::new(
            "max_restarts",
            format!("at most {MAX_RESTARTS}"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Reasons that mean the system's state, not the request, stands in the way.
/// A session that is in use is not among them: like one that is not
/// resumable or is another project's, the `session_id` asked for is the
/// fault (422 naming it).
const CONFLICTS: &[&str] = &[
    "quota_reached",
    "budget_exceeded",
    "project_archived",
    "runner_exists",
    "illegal_transition",
];

fn rejection(view: &CommandView, runner: &str) -> ApiError {
    let reason = view.reason.clone().unwrap_or_else(|| "rejected".into());
    let message = view.message.clone().unwrap_or_default();
    match (reason.as_str(), view.field.as_deref()) {
        ("not_found", _) => ApiError::NotFound {
            what: format!("runner {runner}"),
        },
        (r, Some(field)) if !CONFLICTS.contains(&r) => {
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
        _ => ApiError::Conflict {
            reason,
            detail: message,
        },
    }
}

/// Send a runner command and answer with the runner once it is decided.
pub(super) async fn submit(
    api: &Api,
    command: RunnerCommand,
    runner: Uuid,
    key: Option<&str>,
    wait: std::time::Duration,
    success: StatusCode,
) -> Result<Response, ApiError> {
    let fetch = |subject: String| async move {
        let runner = Uuid::parse_str(&subject).map_err(ApiError::internal)?;
        // The outcome and the runner's row come from one stream, applied in
        // order, so the row exists once the outcome does.
        let view = runner_models::get_runner(&api.pool, runner)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "runner {runner} succeeded but is not in the read model"
                ))
            })?;
        Ok((view, format!("/api/v1/runners/{runner}")))
    };
    let name = runner.to_string();
    let request = super::CommandRequest {
        subject: &name,
        key,
        wait,
        success,
    };
    super::submit(api, &command, request, |view| rejection(view, &name), fetch).await
}

pub(super) async fn launch(
    State(state): State<ApiState>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<LaunchBody>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let runner_id = Uuid::now_v7();
    let launch = LaunchRunner {
        runner_id,
        project: body.project,
        profile: body.profile,
        prompt: body.prompt,
        mode: body.mode,
        session_id: body.session_id,
        model: body.model,
        permission: body.permission,
        allowed_tools: body.allowed_tools,
        max_restarts: body.max_restarts,
    };
    check_launch(&launch)?;
    submit(
        api,
        RunnerCommand::Launch(launch),
        runner_id,
        key.as_deref(),
        wait,
        StatusCode::CREATED,
    )
    .await
}

fn runner_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound {
        what: format!("runner {raw}"),
    })
}

async fn control(
    state: &ApiState,
    raw: &str,
    key: Option<String>,
    wait: std::time::Duration,
    want: Want,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let runner = runner_id(raw)?;
    let command = RunnerCommand::Control(ControlRunner {
        runner_id: runner,
        want,
    });
    submit(api, command, runner, key.as_deref(), wait, StatusCode::OK).await
}

pub(super) async fn stop(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
) -> Result<Response, ApiError> {
    control(&state, &id, key, wait, Want::Stopped).await
}

pub(super) async fn kill(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
) -> Result<Response, ApiError> {
    control(&state, &id, key, wait, Want::Killed).await
}

pub(super) async fn pause(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
) -> Result<Response, ApiError> {
    control(&state, &id, key, wait, Want::Paused).await
}

pub(super) async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
) -> Result<Response, ApiError> {
    control(&state, &id, key, wait, Want::Running).await
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RunnerView>, ApiError> {
    let api = state.api()?;
    let runner = runner_id(&id)?;
    runner_models::get_runner(&api.pool, runner)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("runner {id}"),
        })
}

/// The list's filters, as strings so bad values are refused as problems.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    project: Option<String>,
    state: Option<String>,
    node: Option<String>,
}

/// The states a runner can be in (a filter outside them names nothing).
const STATES: &[&str] = stratavore_events::runner::RUNNER_STATES;

pub(super) async fn list(
    State(state): State<ApiState>,
    page: PageRequest,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<RunnerView>>, ApiError> {
    let api = state.api()?;
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        detail: e.body_text(),
    })?;
    if let Some(s) = &query.state
        && !STATES.contains(&s.as_str())
    {
        return Err(ApiError::validation(
            "state",
            format!("not a runner state; one of {}", STATES.join(", ")),
        ));
    }
    let after = match &page.after {
        Some(a) => Some(
            Uuid::parse_str(a)
                .map_err(|_| ApiError::invalid_parameter("cursor", "not a cursor of this list"))?,
        ),
        None => None,
    };
    let filter = RunnerFilter {
        project: query.project,
        state: query.state,
        node: query.node,
    };
    let rows = runner_models::list_runners(&api.pool, &filter, after, page.fetch_limit())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Page::from_overfetch(rows, &page, |r| {
        r.id.to_string()
    })))
}
