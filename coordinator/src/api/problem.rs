//! API errors and their one mapping to `application/problem+json` (RFC 9457).
//! Internals (SQL, stack traces) never reach the client; they are logged.

use crate::engine::EngineError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything an API call can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or breaks a rule; the sentence says which.
    BadRequest(String),
    /// The body is larger than the configured limit.
    TooLarge(String),
    /// The transaction does not exist.
    NotFound(String),
    /// The request conflicts with the transaction's state or an earlier request.
    Conflict(String),
    /// The database is unavailable; nothing was changed; retry later.
    Unavailable(String),
    /// A bug or a corrupt store; details are in the coordinator's log.
    Internal,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title, detail) = match &self {
            ApiError::BadRequest(d) => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                d.as_str(),
            ),
            ApiError::TooLarge(d) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
                d.as_str(),
            ),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not-found", "Not found", d.as_str()),
            ApiError::Conflict(d) => (StatusCode::CONFLICT, "conflict", "Conflict", d.as_str()),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Database unavailable",
                "the coordinator cannot reach its database; nothing was changed, retry later",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the coordinator failed unexpectedly; the details are in its log",
            ),
        };
        if let ApiError::Unavailable(cause) = &self {
            tracing::warn!(cause, "answering 503");
        }
        let problem = Problem {
            kind: format!("urn:dtx:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) => ApiError::NotFound(e.to_string()),
            EngineError::GidConflict(_)
            | EngineError::WrongStatus { .. }
            | EngineError::BranchConflict { .. } => ApiError::Conflict(e.to_string()),
            EngineError::BadRequest(m) => ApiError::BadRequest(m),
            EngineError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
            EngineError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge(
                "the request body exceeds the configured limit (`--max-body-bytes`)".into(),
            );
        }
        let detail = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with `Content-Type: application/json`".into()
            }
            other => other.body_text(),
        };
        ApiError::BadRequest(detail)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// `axum::Json` whose rejection is a problem document.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` whose rejection is a problem document.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
