//! `GET /api/v1/sessions/search?q=&project=&limit=`: sessions ranked by
//! meaning and by words at once (see [`crate::search::query`]). Every
//! answer names the model that embedded the query; without its model the
//! search fails with 503 `model-unavailable` rather than rank by words
//! alone.

use super::ApiState;
use crate::http::ApiError;
use crate::search::query::{self, Hit, SearchRequest};
use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use stratavore_embeddings::EmbedError;

/// Hits when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 10;
/// The most hits one search returns.
pub const MAX_LIMIT: u32 = 100;
/// The longest query, in bytes (the model reads at most 254 tokens anyway).
pub const MAX_QUERY_BYTES: usize = 2048;

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
    project: Option<String>,
    limit: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct SearchResponse {
    /// The model that embedded the query (and every vector compared).
    pub model: String,
    /// The query as searched.
    pub query: String,
    /// The project filter, if any.
    pub project: Option<String>,
    /// Best first.
    pub hits: Vec<HitView>,
}

/// A hit with where to go from it.
#[derive(Debug, Serialize)]
pub struct HitView {
    #[serde(flatten)]
    hit: Hit,
    /// The session and how to resume it.
    links: Links,
}

#[derive(Debug, Serialize)]
struct Links {
    session: String,
    /// `POST` here with `{"prompt": …}` to resume the session.
    resume: String,
}

/// Validated input, or 422 naming every bad parameter.
fn request(query: SearchQuery) -> Result<SearchRequest, ApiError> {
    let mut errors = Vec::new();
    let q = query.q.unwrap_or_default().trim().to_owned();
    if q.is_empty() {
        errors.push(crate::http::FieldError::new("q", "say what to search for"));
    } else if q.len() > MAX_QUERY_BYTES {
        errors.push(crate::http::FieldError::new(
            "q",
            format!("at most {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let limit = match query.limit.as_deref() {
        None => Some(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l)),
    };
    if limit.is_none() {
        errors.push(crate::http::FieldError::new(
            "limit",
            format!("a whole number from 1 to {MAX_LIMIT}"),
        ));
    }
    if query
        .project
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        errors.push(crate::http::FieldError::new("project", "name a project"));
    }
    match (errors.is_empty(), limit) {
        (true, Some(limit)) => Ok(SearchRequest {
            q,
            project: query.project,
            limit,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn model_error(model: &str, e: EmbedError) -> ApiError {
    match e {
        EmbedError::TooManyTokens { limit, .. } => ApiError::validation(
            "q",
            format!("longer than the model reads ({limit} tokens); search with fewer words"),
        ),
        EmbedError::Tokenize(_) => ApiError::validation("q", "the model cannot read this text"),
        EmbedError::Inference(_) => ApiError::internal(e),
        missing => ApiError::ModelUnavailable {
            model: model.to_owned(),
            detail: missing.to_string(),
        },
    }
}

pub(super) async fn search(
    State(state): State<ApiState>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let api = state.api()?;
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        detail: e.body_text(),
    })?;
    let request = request(query)?;
    let search = std::sync::Arc::clone(&api.search);
    let model = search.model().to_owned();
    let words = request.q.clone();
    let vector = tokio::task::spawn_blocking(move || search.provider().embed(&[words.as_str()]))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| model_error(&model, e))?
        .pop()
        .ok_or_else(|| ApiError::internal("the model returned no vector"))?;
    let hits = query::run(&api.pool, &api.search, &request, &vector)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(SearchResponse {
        model,
        query: request.q,
        project: request.project,
        hits: hits
            .into_iter()
            .map(|hit| {
                let session = format!("/api/v1/sessions/{}", hit.session_id);
                HitView {
                    links: Links {
                        resume: format!("{session}/resume"),
                        session,
                    },
                    hit,
                }
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: Option<&str>, project: Option<&str>, limit: Option<&str>) -> SearchQuery {
        SearchQuery {
            q: q.map(str::to_owned),
            project: project.map(str::to_owned),
            limit: limit.map(str::to_owned),
        }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn a_search_needs_words_and_a_sensible_limit() {
        assert_eq!(fields(request(query(None, None, None)).unwrap_err()), ["q"]);
        assert_eq!(
            fields(request(query(Some("  "), None, Some("0"))).unwrap_err()),
            ["q", "limit"]
        );
        let long = "a".repeat(MAX_QUERY_BYTES + 1);
        assert_eq!(
            fields(request(query(Some(&long), None, None)).unwrap_err()),
            ["q"]
        );
        for bad in ["101", "-1", "ten", ""] {
            assert_eq!(
                fields(request(query(Some("x"), None, Some(bad))).unwrap_err()),
                ["limit"],
                "{bad}"
            );
        }
        assert_eq!(
            fields(request(query(Some("x"), Some(" "), None)).unwrap_err()),
            ["project"]
        );
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let r = request(query(Some(" undo a migration "), Some("web"), None)).unwrap();
        assert_eq!(r.q, "undo a migration");
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert_eq!(r.project.as_deref(), Some("web"));
    }

    #[test]
    fn a_missing_model_is_unavailable_never_an_empty_answer() {
        let err = model_error(
            "all-MiniLM-L6-v2",
            EmbedError::ModelMissing {
                path: "/nowhere".into(),
            },
        );
        assert!(matches!(err, ApiError::ModelUnavailable { .. }));
    }
}
