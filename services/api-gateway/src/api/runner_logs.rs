//! `GET /api/v1/runners/{id}/logs`: the agent's output of one attempt (the
//! current one unless `attempt` says), read from the node that ran it and
//! passed through as `text/plain`, from `offset` (bytes into the attempt's
//! part of its session transcript), at most `limit` bytes (default and
//! most 8 MiB), whole lines only while it runs. Headers say where it came
//! from and where to go on: `Stratavore-Node`, `Stratavore-Attempt`,
//! `Stratavore-Attempt-Ended`, `Stratavore-Next-Offset` (the offset to ask
//! for next) and `Stratavore-Size` (the part's length now).
//!
//! `?follow=true` answers `text/event-stream` instead (see
//! [`crate::runner_logs::follow`]).

use super::ApiState;
use crate::http::ApiError;
use crate::runner_logs::follow::Follow;
use crate::runner_logs::node_client::{ENDED_HEADER, NEXT_OFFSET_HEADER, PartRequest, SIZE_HEADER};
use crate::runner_logs::{current_attempt, locate};
use crate::runner_models;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

/// The most bytes one answer holds (the nodes' own maximum).
pub const MAX_LIMIT: u64 = 8 * 1024 * 1024;

/// The response header naming the node read from.
pub const NODE_HEADER: &str = "stratavore-node";
/// The response header naming the attempt.
pub const ATTEMPT_HEADER: &str = "stratavore-attempt";

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    attempt: Option<u32>,
    offset: Option<u64>,
    limit: Option<u64>,
    #[serde(default)]
    follow: bool,
}

pub(super) async fn logs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        detail: e.body_text(),
    })?;
    if query.limit.is_some_and(|l| l == 0 || l > MAX_LIMIT) {
        return Err(ApiError::validation(
            "limit",
            format!("between 1 and {MAX_LIMIT} bytes"),
        ));
    }
    let not_found = || ApiError::NotFound {
        what: format!("runner {id}"),
    };
    let runner_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let runner = runner_models::get_runner(&api.pool, runner_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let current = current_attempt(&runner);
    if let Some(asked) = query.attempt
        && (asked == 0 || asked > current)
    {
        return Err(ApiError::NotFound {
            what: format!("attempt {asked} of runner {id}"),
        });
    }
    let offset = query.offset.unwrap_or(0);
    if query.follow {
        let follow = Follow::start(api.clone(), runner, query.attempt, offset).await?;
        return Ok(follow.into_sse().into_response());
    }
    let attempt = query.attempt.unwrap_or(current);
    let not_started = || ApiError::Conflict {
        reason: "not_started".into(),
        detail: if attempt > 1 {
            format!(
                "attempt {attempt} of runner {id} has not started on a node yet; \
                 an earlier one is read with ?attempt="
            )
        } else {
            format!("runner {id} has not started on a node yet")
        },
    };
    if attempt == 0 {
        return Err(not_started());
    }
    let at = locate(api, &runner, attempt)
        .await?
        .ok_or_else(not_started)?;
    let request = PartRequest {
        runner: runner_id,
        attempt,
        offset,
        limit: query.limit,
    };
    let (head, part) = api
        .transcripts
        .open(&at, request)
        .await
        .map_err(|e| e.into_api(runner_id))?;
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        (HeaderName::from_static(NODE_HEADER), at.node.clone()),
        (HeaderName::from_static(ATTEMPT_HEADER), attempt.to_string()),
        (
            HeaderName::from_static(ENDED_HEADER),
            head.ended.to_string(),
        ),
        (
            HeaderName::from_static(NEXT_OFFSET_HEADER),
            head.next_offset.to_string(),
        ),
        (HeaderName::from_static(SIZE_HEADER), head.size.to_string()),
    ];
    let mut response = (StatusCode::OK, Body::from_stream(part.bytes_stream())).into_response();
    for (name, value) in headers {
        // A node id is a routing-key word and the rest are digits or
        // booleans: every one is a valid header value.
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
