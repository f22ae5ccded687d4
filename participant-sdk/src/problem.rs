//! `application/problem+json` (RFC 9457) responses, written the way the
//! coordinator writes its own, so one format covers every dtx error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// A problem document with `type` `urn:dtx:problem:{slug}`.
pub(crate) fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = Problem {
        kind: format!("urn:dtx:problem:{slug}"),
        title,
        status: status.as_u16(),
        detail,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The `detail` of a problem document, else the start of the body as text:
/// what a person needs to see when a call was answered with an error.
pub(crate) fn detail_of(body: &[u8]) -> String {
    /// Longest error text kept from an answer that is not a problem document.
    const LIMIT: usize = 300;
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body)
        && let Some(serde_json::Value::String(detail)) = map.get("detail")
    {
        return detail.clone();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no detail in the answer".to_owned()
    } else {
        text.chars().take(LIMIT).collect()
    }
}
