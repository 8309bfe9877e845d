//! `ValidJson<T>`: the JSON body extractor every REST handler uses.
//!
//! It stands in for `axum::Json` because axum's rejections are plain text
//! and do not tell a syntax error (400) from a bad field (422) by path; here
//! every refusal is a problem+json naming where the input went wrong.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::problem::{ApiError, FieldError};

/// The largest JSON body accepted. Every request body in the API is a
/// small command; a larger one is a mistake or an attack.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// The media type `ValidJson` requires.
const APPLICATION_JSON: &str = "application/json";

/// A request body parsed as JSON into `T`.
///
/// Refuses with 415 without a JSON content type, 413 past
/// [`JSON_BODY_LIMIT`], 400 for malformed JSON (with line and column), and
/// 422 naming the field path for a wrong type, a missing field or (with
/// `#[serde(deny_unknown_fields)]` on `T`) an unknown one.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson<T>(pub T);

impl<T, S> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        refuse_declared_oversize(req.headers())?;
        let bytes = read_limited(req.into_body()).await?;
        parse_json(&bytes).map(ValidJson)
    }
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = ApiError::UnsupportedMediaType {
        expected: APPLICATION_JSON,
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(refused);
    };
    let Ok(value) = value.to_str() else {
        return Err(refused);
    };
    // Parameters such as `charset=utf-8` are allowed; the media type itself
    // is case-insensitive (RFC 9110 §8.3.1).
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // `application/*+json` (merge-patch, problem) is JSON too (RFC 6839).
    let is_json = essence == APPLICATION_JSON
        || essence
            .strip_prefix("application/")
            .and_then(|subtype| subtype.strip_suffix("+json"))
            .is_some_and(|name| !name.is_empty());
    if is_json { Ok(()) } else { Err(refused) }
}

/// Answer 413 before reading anything when the client says up front that
/// the body is too large.
fn refuse_declared_oversize(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > JSON_BODY_LIMIT as u64 => Err(ApiError::PayloadTooLarge {
            limit: JSON_BODY_LIMIT,
        }),
        _ => Ok(()),
    }
}

async fn read_limited(body: Body) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, JSON_BODY_LIMIT).await.map_err(|error| {
        let inner = error.into_inner();
        if inner.downcast_ref::<LengthLimitError>().is_some() {
            ApiError::PayloadTooLarge {
                limit: JSON_BODY_LIMIT,
            }
        } else {
            // The client went away or sent a broken chunked body: its
            // request, not our fault, so no 500.
            ApiError::Malformed {
                detail: format!("the request body could not be read: {inner}"),
            }
        }
    })
}

/// Parse `bytes` as `T`, sorting errors into 400 (not JSON) and 422 (JSON of
/// the wrong shape, with the path of the offending field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        classify(error.into_inner(), &path)
    })?;
    // Trailing garbage after the value makes the body malformed, not valid.
    deserializer.end().map_err(|error| classify(error, "."))?;
    Ok(value)
}

fn classify(error: serde_json::Error, path: &str) -> ApiError {
    let message = message_without_position(&error);
    match error.classify() {
        Category::Data => {
            let field = field_path(path, &message);
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
        Category::Syntax | Category::Eof | Category::Io => ApiError::Malformed {
            detail: format!(
                "malformed JSON at line {} column {}: {message}",
                error.line(),
                error.column()
            ),
        },
    }
}

/// serde_json appends ` at line L column C` to every message; the position
/// means nothing next to a field path, so it is dropped there.
fn message_without_position(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}

/// The path of the field at fault. serde reports a missing field at the
/// struct that lacks it (an unknown one already at its own key), so the
/// missing field's name (from the message) is appended to point at it.
fn field_path(parent: &str, message: &str) -> String {
    // serde_path_to_error writes the root as `.`; an empty path reads better
    // as "the body as a whole".
    let parent = if parent == "." { "" } else { parent };
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match named {
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None => parent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::problem::tests::read_problem;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde::Deserialize;
    use tower::ServiceExt;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewProject {
        name: String,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        limits: Option<Limits>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max_runners: u32,
    }

    fn app() -> Router {
        Router::new().route(
            "/projects",
            post(|ValidJson(p): ValidJson<NewProject>| async move {
                format!(
                    "{} {} {} {}",
                    p.name,
                    p.description.unwrap_or_default(),
                    p.tags.len(),
                    p.limits.map(|l| l.max_runners).unwrap_or_default()
                )
            }),
        )
    }

    fn request(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut builder = Request::post("/projects");
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(body.into()).unwrap()
    }

    async fn send(req: Request) -> axum::response::Response {
        app().oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_valid_body_reaches_the_handler() {
        let response = send(request(
            Some("application/json; charset=utf-8"),
            r#"{"name":"web","tags":["a","b"],"limits":{"max_runners":3}}"#,
        ))
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"web  2 3");
    }

    #[tokio::test]
    async fn a_missing_content_type_is_415() {
        let (status, problem) = read_problem(send(request(None, r#"{"name":"web"}"#)).await).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/unsupported-media-type"
        );
    }

    #[tokio::test]
    async fn a_form_content_type_is_415() {
        let response = send(request(
            Some("application/x-www-form-urlencoded"),
            "name=web",
        ))
        .await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn a_json_suffix_media_type_is_accepted() {
        let response = send(request(
            Some("application/merge-patch+json"),
            r#"{"name":"web"}"#,
        ))
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn malformed_json_is_400_with_the_position() {
        let (status, problem) = read_problem(
            send(request(
                Some("application/json"),
                "{\"name\":\"web\",\n  oops}",
            ))
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/invalid-request"
        );
        assert!(
            problem.detail.contains("line 2 column 3"),
            "{}",
            problem.detail
        );
    }

    #[tokio::test]
    async fn an_empty_body_is_400() {
        let response = send(request(Some("application/json"), "")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn trailing_garbage_is_400() {
        let response = send(request(Some("application/json"), r#"{"name":"web"} x"#)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    async fn field_of_422(body: &str) -> String {
        let (status, problem) =
            read_problem(send(request(Some("application/json"), body.to_owned())).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem:?}");
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/validation-failed"
        );
        assert_eq!(problem.errors.len(), 1, "{problem:?}");
        problem.errors[0].field.clone()
    }

    #[tokio::test]
    async fn a_wrong_type_in_an_array_names_its_index() {
        let field = field_of_422(r#"{"name":"web","tags":["a","b",3]}"#).await;
        assert_eq!(field, "tags[2]");
    }

    #[tokio::test]
    async fn a_wrong_type_names_the_field() {
        let field = field_of_422(r#"{"name":"web","description":17}"#).await;
        assert_eq!(field, "description");
    }

    #[tokio::test]
    async fn a_nested_wrong_type_names_the_dotted_path() {
        let field = field_of_422(r#"{"name":"web","limits":{"max_runners":-1}}"#).await;
        assert_eq!(field, "limits.max_runners");
    }

    #[tokio::test]
    async fn an_unknown_field_is_named() {
        let field = field_of_422(r#"{"name":"web","colour":"red"}"#).await;
        assert_eq!(field, "colour");
    }

    #[tokio::test]
    async fn a_nested_unknown_field_is_named_with_its_parent() {
        let field = field_of_422(r#"{"name":"web","limits":{"max_runners":1,"x":2}}"#).await;
        assert_eq!(field, "limits.x");
    }

    #[tokio::test]
    async fn a_missing_field_is_named() {
        let field = field_of_422(r#"{"description":"d"}"#).await;
        assert_eq!(field, "name");
    }

    #[tokio::test]
    async fn a_nested_missing_field_is_named_with_its_parent() {
        let field = field_of_422(r#"{"name":"web","limits":{}}"#).await;
        assert_eq!(field, "limits.max_runners");
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_shape_is_422_on_the_whole_body() {
        let field = field_of_422("42").await;
        assert_eq!(field, "");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let mut body = br#"{"name":""#.to_vec();
        body.resize(JSON_BODY_LIMIT + 1, b'a');
        let (status, problem) =
            read_problem(send(request(Some("application/json"), body)).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            problem.type_uri,
            "https://stratavore.dev/problems/payload-too-large"
        );
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_reading() {
        let req = Request::post("/projects")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (JSON_BODY_LIMIT + 1).to_string())
            .body(Body::from(r#"{"name":"web"}"#))
            .unwrap();
        let response = send(req).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_body_at_the_limit_is_read() {
        let mut body = br#"{"name":""#.to_vec();
        body.resize(JSON_BODY_LIMIT - 2, b'a');
        body.extend_from_slice(br#""}"#);
        let response = send(request(Some("application/json"), body)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
