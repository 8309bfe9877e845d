//! The gateway's one error type and its RFC 9457 problem+json rendering.
//!
//! Every refusal the REST API gives goes through [`ApiError`], so every
//! error body has the same shape and a `type` URI clients can match on.
//! The URIs are part of the API contract: renaming a slug breaks clients.

use std::error::Error as StdError;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where the problem type URIs live; each type appends its slug.
pub const PROBLEM_TYPE_BASE: &str = "https://stratavore.dev/problems/";

/// The closed set of problem types the API answers with.
///
/// Closed on purpose: a client can switch on the `type` URI and know it has
/// covered every case the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// 400: the request could not be read (malformed JSON, a bad header or parameter).
    InvalidRequest,
    /// 422: the request was readable but some fields are wrong; `errors` names them.
    ValidationFailed,
    /// 404: the addressed resource does not exist.
    NotFound,
    /// 409: the request conflicts with current state; `reason` says how.
    Conflict,
    /// 403: the Host or Origin header is not one the gateway serves.
    ForbiddenHost,
    /// 415: the body's content type is not accepted.
    UnsupportedMediaType,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: the body is larger than the gateway accepts.
    PayloadTooLarge,
    /// 503: a dependency (database, broker) is not reachable yet.
    NotReady,
    /// 502: the supervisor node that holds what was asked for did not
    /// answer, or refused the gateway; `node` names it.
    NodeUnreachable,
    /// 503: the supervisor node that holds what was asked for is lost;
    /// `node` names it.
    NodeLost,
    /// 503: the embedding model search needs is not installed or cannot
    /// be loaded; search never falls back to another model.
    ModelUnavailable,
    /// 500: something failed inside the gateway; the body says nothing more.
    Internal,
}

impl ProblemType {
    /// The stable last segment of the type URI.
    pub const fn slug(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid-request",
            Self::ValidationFailed => "validation-failed",
            Self::NotFound => "not-found",
            Self::Conflict => "conflict",
            Self::ForbiddenHost => "forbidden-host",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::PayloadTooLarge => "payload-too-large",
            Self::NotReady => "not-ready",
            Self::NodeUnreachable => "node-unreachable",
            Self::NodeLost => "node-lost",
            Self::ModelUnavailable => "model-unavailable",
            Self::Internal => "internal",
        }
    }

    /// The full `type` URI, e.g. `https://stratavore.dev/problems/not-found`.
    pub fn uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug())
    }

    /// The HTTP status every problem of this type is sent with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::ForbiddenHost => StatusCode::FORBIDDEN,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::NodeUnreachable => StatusCode::BAD_GATEWAY,
            Self::NodeLost => StatusCode::SERVICE_UNAVAILABLE,
            Self::ModelUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short human summary; RFC 9457 wants it the same for every
    /// occurrence of a type, so it never carries request details.
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "Invalid request",
            Self::ValidationFailed => "Validation failed",
            Self::NotFound => "Not found",
            Self::Conflict => "Conflict",
            Self::ForbiddenHost => "Forbidden host",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PayloadTooLarge => "Payload too large",
            Self::NotReady => "Not ready",
            Self::NodeUnreachable => "Node unreachable",
            Self::NodeLost => "Node lost",
            Self::ModelUnavailable => "Embedding model unavailable",
            Self::Internal => "Internal error",
        }
    }
}

/// One bad input: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Path to the input: `description`, `tags[2]`, `limit`, `Idempotency-Key`.
    /// Empty when the body as a whole has the wrong shape.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    /// A field error for `field` saying `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem details body as the gateway sends it.
///
/// Deserialize is derived so the CLI and the tests read errors with the
/// same type the gateway writes them with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A `https://stratavore.dev/problems/<slug>` URI.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The type's fixed summary.
    pub title: String,
    /// The HTTP status, repeated so a body read alone still says it.
    pub status: u16,
    /// What went wrong with this request, for a human.
    pub detail: String,
    /// `urn:stratavore:error:<uuid>` for internal errors, matching the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The inputs at fault (validation and parameter errors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extension member: a stable machine-readable code for conflicts
    /// (`name_taken`, …), so clients need not parse `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extension member: the supervisor node at fault (`node-unreachable`,
    /// `node-lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Problem {
    fn new(kind: ProblemType, detail: String) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail,
            instance: None,
            errors: Vec::new(),
            reason: None,
            node: None,
        }
    }
}

/// Every way a REST request can fail, each mapped to one problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid-request`: the body or request could not be read at all.
    #[error("malformed request: {detail}")]
    Malformed {
        /// What could not be read and where (e.g. the JSON parse position).
        detail: String,
    },
    /// 400 `invalid-request` naming one parameter or header (`cursor`,
    /// `Idempotency-Key`) whose value cannot be decoded.
    #[error("invalid `{}`: {}", .0.field, .0.message)]
    InvalidParameter(FieldError),
    /// 422 `validation-failed`: readable input with bad fields.
    #[error("validation failed on {} field(s)", .0.len())]
    Validation(Vec<FieldError>),
    /// 404 `not-found`.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `runner 0190…`.
        what: String,
    },
    /// 409 `conflict`, with a stable `reason` code.
    #[error("conflict ({reason}): {detail}")]
    Conflict {
        /// Stable machine-readable code, e.g. `name_taken`.
        reason: String,
        /// For a human.
        detail: String,
    },
    /// 403 `forbidden-host`: the Host or Origin header was refused.
    #[error("forbidden host: {detail}")]
    ForbiddenHost {
        /// Which header was refused and why.
        detail: String,
    },
    /// 415 `unsupported-media-type`.
    #[error("unsupported media type, expected {expected}")]
    UnsupportedMediaType {
        /// The media type the endpoint takes.
        expected: &'static str,
    },
    /// 405 `method-not-allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413 `payload-too-large`.
    #[error("payload larger than {limit} bytes")]
    PayloadTooLarge {
        /// The accepted maximum, in bytes.
        limit: usize,
    },
    /// 503 `not-ready`: a dependency is not reachable yet; retrying helps.
    #[error("not ready: {detail}")]
    NotReady {
        /// Which dependency is missing.
        detail: String,
    },
    /// 502 `node-unreachable`: a supervisor node did not answer, or
    /// refused the gateway.
    #[error("{detail}")]
    NodeUnreachable {
        /// The node.
        node: String,
        /// What happened, for a human (never the node's own error text).
        detail: String,
    },
    /// 503 `node-lost`: the supervisor node is lost; what it held cannot be
    /// read until it registers again.
    #[error("node {node} is lost: {detail}")]
    NodeLost {
        /// The node.
        node: String,
        /// What could not be read because of it.
        detail: String,
    },
    /// 503 `model-unavailable`: the embedding model cannot answer.
    #[error("the embedding model {model} is unavailable: {detail}")]
    ModelUnavailable {
        /// The model search is configured with.
        model: String,
        /// Why (the missing file, the load failure).
        detail: String,
    },
    /// 500 `internal`: the cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    /// Wrap any unexpected failure as an opaque 500.
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }

    /// A 422 for a single field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A 400 naming one parameter or header.
    pub fn invalid_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParameter(FieldError::new(field, message))
    }

    /// The problem type this error is answered with.
    pub fn problem_type(&self) -> ProblemType {
        match self {
            Self::Malformed { .. } | Self::InvalidParameter(_) => ProblemType::InvalidRequest,
            Self::Validation(_) => ProblemType::ValidationFailed,
            Self::NotFound { .. } => ProblemType::NotFound,
            Self::Conflict { .. } => ProblemType::Conflict,
            Self::ForbiddenHost { .. } => ProblemType::ForbiddenHost,
            Self::UnsupportedMediaType { .. } => ProblemType::UnsupportedMediaType,
            Self::MethodNotAllowed => ProblemType::MethodNotAllowed,
            Self::PayloadTooLarge { .. } => ProblemType::PayloadTooLarge,
            Self::NotReady { .. } => ProblemType::NotReady,
            Self::NodeUnreachable { .. } => ProblemType::NodeUnreachable,
            Self::NodeLost { .. } => ProblemType::NodeLost,
            Self::ModelUnavailable { .. } => ProblemType::ModelUnavailable,
            Self::Internal(_) => ProblemType::Internal,
        }
    }

    /// Build the body. Consumes self because an internal error's cause is
    /// logged here, exactly once, together with the id the client sees.
    pub fn into_problem(self) -> Problem {
        let kind = self.problem_type();
        match self {
            Self::Validation(errors) => {
                let detail = match errors.as_slice() {
                    [one] if one.field.is_empty() => one.message.clone(),
                    [one] => format!("`{}`: {}", one.field, one.message),
                    many => format!("{} fields are invalid", many.len()),
                };
                Problem {
                    errors,
                    ..Problem::new(kind, detail)
                }
            }
            Self::InvalidParameter(error) => Problem {
                errors: vec![error.clone()],
                ..Problem::new(kind, format!("`{}`: {}", error.field, error.message))
            },
            Self::Conflict { reason, detail } => Problem {
                reason: Some(reason),
                ..Problem::new(kind, detail)
            },
            Self::NodeUnreachable { node, detail } => Problem {
                node: Some(node),
                ..Problem::new(kind, detail)
            },
            Self::NodeLost { ref node, .. } => {
                let detail = self.to_string();
                Problem {
                    node: Some(node.clone()),
                    ..Problem::new(kind, detail)
                }
            }
            Self::Internal(cause) => {
                let error_id = Uuid::now_v7();
                tracing::error!(
                    %error_id,
                    error = %CauseChain(cause.as_ref()),
                    "request failed with an internal error"
                );
                Problem {
                    instance: Some(format!("urn:stratavore:error:{error_id}")),
                    // Opaque on purpose: causes can carry SQL, paths or
                    // credentials; the id lets an operator find the log line.
                    ..Problem::new(kind, "an internal error occurred".to_owned())
                }
            }
            other => {
                let detail = other.to_string();
                Problem::new(kind, detail)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.problem_type();
        let problem = self.into_problem();
        let body = match serde_json::to_vec(&problem) {
            Ok(body) => body,
            // A struct of strings cannot fail to serialise; keep a valid
            // body anyway rather than panic in the error path.
            Err(_) => br#"{"type":"https://stratavore.dev/problems/internal","title":"Internal error","status":500,"detail":"an internal error occurred"}"#.to_vec(),
        };
        (
            kind.status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

/// Axum fallback for unknown paths, so they get a problem body too:
/// `Router::fallback(route_not_found)`.
pub async fn route_not_found() -> ApiError {
    ApiError::NotFound {
        what: "route".to_owned(),
    }
}

/// Axum fallback for a known path with the wrong method:
/// `Router::method_not_allowed_fallback(method_not_allowed)`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Displays an error with all its sources, `outer: inner: root`, so the log
/// line has the root cause and not just the outermost wrapper.
struct CauseChain<'a>(&'a (dyn StdError + 'static));

impl std::fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
