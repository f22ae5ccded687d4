//! API errors and their one mapping to `application/problem+json` (RFC 9457),
//! written as the protocol crate's [`Problem`] document, the one the SDK
//! writes and reads too. Internals (SQL, stack traces) never reach the
//! client; they are logged.

use crate::engine::EngineError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtx_protocol::problem::{CONTENT_TYPE, Problem};
use serde::Serialize;

/// Everything an API call can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or breaks a rule; the sentence says which.
    BadRequest(String),
    /// The body is larger than the configured limit.
    TooLarge(String),
    /// No token, or one the coordinator does not know.
    Unauthorized(String),
    /// The token's role does not allow this call.
    Forbidden(String),
    /// The transaction does not exist (or belongs to another namespace).
    NotFound(String),
    /// The request conflicts with the transaction's state or an earlier request.
    Conflict(String),
    /// The client did not send its body within `--body-read-timeout-ms`.
    BodyTimeout,
    /// A bound on concurrent work is reached (the sentence names it);
    /// nothing was changed; retry later.
    Busy(String),
    /// The database is unavailable; nothing was changed; retry later.
    Unavailable(String),
    /// A bug or a corrupt store; details are in the coordinator's log.
    Internal,
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
            ApiError::Unauthorized(d) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                d.as_str(),
            ),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", d.as_str()),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not-found", "Not found", d.as_str()),
            ApiError::Conflict(d) => (StatusCode::CONFLICT, "conflict", "Conflict", d.as_str()),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body too slow",
                "the request body did not arrive within `--body-read-timeout-ms`; nothing was changed",
            ),
            ApiError::Busy(d) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Too busy",
                d.as_str(),
            ),
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
        let problem = Problem::new(status.as_u16(), slug, title, detail);
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dtx\""),
            );
        }
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
        if caused_by_body_timeout(&rejection) {
            return ApiError::BodyTimeout;
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

/// Whether reading the body failed because the body read timeout
/// (`http_server`) fired.
fn caused_by_body_timeout(rejection: &JsonRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
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

/// A JSON body that may be absent: `None` for a request without a body (no
/// `Content-Length` and no `Transfer-Encoding`, or a length of 0), else
/// [`Json`]'s, with its problem documents for a body that is not JSON.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> axum::extract::FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let headers = request.headers();
        let empty = match headers.get(CONTENT_LENGTH) {
            Some(length) => length.as_bytes() == b"0",
            None => !headers.contains_key(TRANSFER_ENCODING),
        };
        if empty {
            return Ok(OptionalJson(None));
        }
        let Json(body) = Json::<T>::from_request(request, state).await?;
        Ok(OptionalJson(Some(body)))
    }
}

/// `axum::extract::Query` whose rejection is a problem document.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
