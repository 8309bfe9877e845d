//! The REST API's HTTP edge: the error type and its problem+json form, the
//! extractors every `/api/v1` handler uses for its inputs, and the Host and
//! Origin guard in front of all routes.
//!
//! Routes themselves are wired in the service's router; this module owns
//! only what every route shares, so each input is refused the same way.

pub mod idempotency_key;
pub mod json_body;
pub mod pagination;
pub mod problem;
pub mod request_guard;

pub use idempotency_key::{IdempotencyKey, Wait, WaitQuery};
pub use json_body::{JSON_BODY_LIMIT, ValidJson};
pub use pagination::{Cursor, Page, PageQuery, PageRequest};
pub use problem::{
    ApiError, FieldError, PROBLEM_JSON, Problem, ProblemType, method_not_allowed, route_not_found,
};
pub use request_guard::{AllowedHosts, InvalidHostPattern, guard_host_and_origin};
