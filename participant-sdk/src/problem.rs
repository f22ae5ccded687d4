//! `application/problem+json` (RFC 9457) responses: the protocol crate's
//! [`Problem`] document, the one the coordinator answers with too, so one
//! format covers every dtx error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtx_protocol::problem::{CONTENT_TYPE, Problem};

/// A problem document with `type` `urn:dtx:problem:{slug}`.
pub(crate) fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = Problem::new(status.as_u16(), slug, title, detail);
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
