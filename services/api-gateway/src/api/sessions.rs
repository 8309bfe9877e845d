//! `/api/v1/sessions`: list, get, resume. A session is the agent's own
//! conversation, keyed by the id the agent reports; the runs that used it
//! are runners (and their attempts).
//!
//! Definitions the responses follow:
//! - `message_count`: one user message per attempt that started (the prompt
//!   the agent was given) plus every user or assistant text message the
//!   agent printed, each once however the node cut it; the final result
//!   repeats the last reply and is not counted.
//! - `turn_count`: the agent's turns (its messages up to a tool result or
//!   the end), each reported once with its usage.
//! - `in_use`: it is the current session of a runner that has not ended.
//! - `resumable`: bound (the agent saved a first turn), not in use, and the
//!   node that holds its files is not lost. The orchestrator decides a
//!   resume on its own state, which this view may trail by a moment.

use super::ApiState;
use super::runners::{check_launch, submit};
use crate::http::{
    ApiError, FieldError, IdempotencyKey, Page, PageQuery, PageRequest, ValidJson, Wait,
};
use crate::session_models::{
    self, RunView, SessionCursor, SessionDetail, SessionFilter, SessionView,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use stratavore_events::project::validate_project_name;
use stratavore_events::runner::{LaunchMode, LaunchRunner, RunnerCommand};
use uuid::Uuid;

/// The list's query: filters as strings, so a bad value is refused as a
/// problem naming it.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    project: Option<String>,
    resumable: Option<String>,
    since: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

fn filter_of(query: &ListQuery) -> Result<SessionFilter, ApiError> {
    let mut errors = Vec::new();
    if let Some(project) = &query.project
        && let Err(why) = validate_project_name(project)
    {
        errors.push(FieldError::new(
            "project",
            format!("the project name {why}"),
        ));
    }
    let resumable = match query.resumable.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            errors.push(FieldError::new(
                "resumable",
                format!("must be true or false, got `{other:.40}`"),
            ));
            None
        }
    };
    let since = match query.since.as_deref() {
        None => None,
        Some(raw) => match DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                errors.push(FieldError::new(
                    "since",
                    format!("must be an RFC 3339 time, got `{raw:.40}`"),
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(SessionFilter {
        project: query.project.clone(),
        resumable,
        since,
    })
}

/// A page's key: the session's latest activity (to the microsecond, as
/// stored) and its id.
fn cursor_key(view: &SessionView) -> String {
    format!(
        "{} {}",
        view.last_active_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        view.id
    )
}

fn cursor_of(key: &str) -> Result<SessionCursor, ApiError> {
    let bad = || ApiError::invalid_parameter("cursor", "not a cursor of this list");
    let (at, id) = key.split_once(' ').ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    Ok(SessionCursor {
        last_active_at: at.with_timezone(&Utc),
        id: id.to_owned(),
    })
}

/// `GET /api/v1/sessions?project=&resumable=&since=&limit=&cursor=`: most
/// recently active first.
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<SessionView>>, ApiError> {
    let api = state.api()?;
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        detail: e.body_text(),
    })?;
    let page = PageRequest::from_query(&query.page)?;
    let filter = filter_of(&query)?;
    let after = page.after.as_deref().map(cursor_of).transpose()?;
    let rows =
        session_models::list_sessions(&api.pool, &filter, after.as_ref(), page.fetch_limit())
            .await
            .map_err(ApiError::internal)?;
    Ok(Json(Page::from_overfetch(rows, &page, cursor_key)))
}

async fn find(state: &ApiState, id: &str) -> Result<SessionView, ApiError> {
    let api = state.api()?;
    session_models::get_session(&api.pool, id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("session {id}"),
        })
}

/// `GET /api/v1/sessions/{id}`: the session, its usage and its runs.
pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    let session = find(&state, &id).await?;
    let api = state.api()?;
    let runs: Vec<RunView> = session_models::runs_of(&api.pool, &id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(SessionDetail { session, runs }))
}

/// `POST /api/v1/sessions/{id}/resume` body: what a launch may choose,
/// less what the session decides (its project, its latest run's profile).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeBody {
    prompt: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    permission: Option<String>,
    #[serde(default)]
    allowed_tools: Option<Vec<String>>,
    #[serde(default)]
    max_restarts: Option<u32>,
}

/// `POST /api/v1/sessions/{id}/resume`: launch a runner that resumes the
/// session, in its project, with its latest run's profile, as `POST
/// /api/v1/runners` with mode `resume` would (same Idempotency-Key and
/// `wait` handling, 201 or 202). The orchestrator decides: a session that
/// is not resumable, is in use, or whose node is lost is refused with 422
/// naming `session_id`, and nothing is launched.
pub(super) async fn resume(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<ResumeBody>,
) -> Result<Response, ApiError> {
    let session = find(&state, &id).await?;
    let api = state.api()?;
    let (Some(project), Some(profile)) = (session.project, session.profile) else {
        // Only the node's events about it have arrived so far.
        return Err(ApiError::validation(
            "session_id",
            format!("session {id} is not known well enough to resume yet"),
        ));
    };
    let runner_id = Uuid::now_v7();
    let launch = LaunchRunner {
        runner_id,
        project,
        profile,
        prompt: body.prompt,
        mode: LaunchMode::Resume,
        session_id: Some(id),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(resumable: Option<&str>, since: Option<&str>, project: Option<&str>) -> ListQuery {
        ListQuery {
            project: project.map(str::to_owned),
            resumable: resumable.map(str::to_owned),
            since: since.map(str::to_owned),
            page: PageQuery::default(),
        }
    }

    fn fields(error: ApiError) -> Vec<String> {
        match error {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn filters_are_read_and_bad_ones_are_all_named() {
        let filter = filter_of(&query(
            Some("true"),
            Some("2026-01-02T03:04:05+01:00"),
            Some("web"),
        ))
        .unwrap();
        assert_eq!(filter.resumable, Some(true));
        assert_eq!(
            filter.since.unwrap().to_rfc3339(),
            "2026-01-02T02:04:05+00:00"
        );
        let bad = filter_of(&query(Some("yes"), Some("yesterday"), Some("../x"))).unwrap_err();
        assert_eq!(fields(bad), ["project", "resumable", "since"]);
    }

    #[test]
    fn a_cursor_key_reads_back_to_the_same_place() {
        let at = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let key = format!("{} s-1", at.to_rfc3339_opts(SecondsFormat::Micros, true));
        let cursor = cursor_of(&key).unwrap();
        assert_eq!(cursor.last_active_at, at);
        assert_eq!(cursor.id, "s-1");
        assert!(cursor_of("no-space").is_err());
        assert!(cursor_of("notatime s-1").is_err());
    }
}
