//! Rendering of every `ApiError` variant, and the shared `read_problem`
//! helper the other `http` modules' tests check their refusals with.

use super::*;
use axum::body::to_bytes;
use std::io;
use std::sync::{Arc, Mutex};

/// Render `response` and read its problem body, checking the content
/// type on the way; shared by the other `http` modules' tests.
pub(crate) async fn read_problem(response: Response) -> (StatusCode, Problem) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON));
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let problem: Problem = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(problem.status, status.as_u16());
    (status, problem)
}

#[tokio::test]
async fn validation_errors_are_422_with_field_paths() {
    let error = ApiError::Validation(vec![
        FieldError::new("tags[2]", "must not be empty"),
        FieldError::new("description", "too long"),
    ]);
    let (status, problem) = read_problem(error.into_response()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem.type_uri,
        "https://stratavore.dev/problems/validation-failed"
    );
    assert_eq!(problem.title, "Validation failed");
    assert_eq!(problem.errors.len(), 2);
    assert_eq!(problem.errors[0].field, "tags[2]");
    assert_eq!(problem.errors[1].field, "description");
}

#[tokio::test]
async fn a_conflict_carries_its_reason_as_an_extension_member() {
    let error = ApiError::Conflict {
        reason: "name_taken".to_owned(),
        detail: "a project named `web` exists".to_owned(),
    };
    let response = error.into_response();
    let (status, problem) = read_problem(response).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem.type_uri, "https://stratavore.dev/problems/conflict");
    assert_eq!(problem.reason.as_deref(), Some("name_taken"));
    assert_eq!(problem.detail, "a project named `web` exists");
}

#[tokio::test]
async fn optional_members_are_left_out_when_empty() {
    let response = ApiError::NotFound {
        what: "runner r1".to_owned(),
    }
    .into_response();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{json}");
    for key in ["type", "title", "status", "detail"] {
        assert!(keys.contains(&key), "{key} missing in {json}");
    }
    assert_eq!(json["detail"], "runner r1 not found");
}

#[tokio::test]
async fn each_variant_maps_to_its_status_and_type() {
    let cases = [
        (
            ApiError::Malformed { detail: "x".into() },
            400,
            "invalid-request",
        ),
        (
            ApiError::invalid_parameter("cursor", "bad"),
            400,
            "invalid-request",
        ),
        (
            ApiError::validation("limit", "too big"),
            422,
            "validation-failed",
        ),
        (ApiError::NotFound { what: "x".into() }, 404, "not-found"),
        (
            ApiError::ForbiddenHost { detail: "x".into() },
            403,
            "forbidden-host",
        ),
        (
            ApiError::UnsupportedMediaType {
                expected: "application/json",
            },
            415,
            "unsupported-media-type",
        ),
        (ApiError::MethodNotAllowed, 405, "method-not-allowed"),
        (
            ApiError::PayloadTooLarge { limit: 1 },
            413,
            "payload-too-large",
        ),
        (ApiError::NotReady { detail: "x".into() }, 503, "not-ready"),
        (
            ApiError::NodeUnreachable {
                node: "n1".into(),
                detail: "x".into(),
            },
            502,
            "node-unreachable",
        ),
        (
            ApiError::NodeLost {
                node: "n1".into(),
                detail: "x".into(),
            },
            503,
            "node-lost",
        ),
        (ApiError::internal("boom"), 500, "internal"),
    ];
    for (error, status, slug) in cases {
        let (got_status, problem) = read_problem(error.into_response()).await;
        assert_eq!(got_status.as_u16(), status, "{slug}");
        assert_eq!(
            problem.type_uri,
            format!("https://stratavore.dev/problems/{slug}")
        );
    }
}

#[tokio::test]
async fn an_invalid_parameter_names_it_in_errors() {
    let (_, problem) =
        read_problem(ApiError::invalid_parameter("cursor", "not a cursor").into_response()).await;
    assert_eq!(
        problem.errors,
        vec![FieldError::new("cursor", "not a cursor")]
    );
    assert!(problem.detail.contains("cursor"));
}

/// Collects log output so a test can check what was logged.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("query failed")]
struct Outer(#[source] io::Error);

#[tokio::test]
async fn an_internal_error_hides_its_cause_and_logs_it_under_the_instance_id() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let cause = Outer(io::Error::other("password=hunter2 rejected"));
    let response =
        tracing::subscriber::with_default(subscriber, || ApiError::internal(cause).into_response());

    let (status, problem) = read_problem(response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(problem.type_uri, "https://stratavore.dev/problems/internal");
    assert!(!problem.detail.contains("hunter2"));
    assert!(!problem.detail.contains("query failed"));
    let instance = problem.instance.unwrap();
    let id = instance.strip_prefix("urn:stratavore:error:").unwrap();
    assert!(Uuid::parse_str(id).is_ok(), "{instance}");

    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(id), "log lacks the error id: {log}");
    assert!(
        log.contains("query failed: password=hunter2 rejected"),
        "log lacks the cause chain: {log}"
    );
}

#[tokio::test]
async fn a_node_problem_names_the_node() {
    let (status, problem) = read_problem(
        ApiError::NodeLost {
            node: "n7".into(),
            detail: "its transcripts cannot be read".into(),
        }
        .into_response(),
    )
    .await;
    assert_eq!(status.as_u16(), 503);
    assert_eq!(problem.node.as_deref(), Some("n7"));
    assert!(problem.detail.contains("n7"), "{}", problem.detail);
}
