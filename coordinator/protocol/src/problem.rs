//! `application/problem+json` (RFC 9457), the one error format of dtx: the
//! coordinator answers its API errors with it, the SDK answers participant
//! errors with it, and both read the `detail` of one they receive. The
//! document and its reading live here so that every side writes and reads
//! the same shape; building the HTTP response is each side's own (this crate
//! has no HTTP).

use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Every dtx problem `type` is this prefix followed by a slug, e.g.
/// `urn:dtx:problem:not-found`.
pub const TYPE_PREFIX: &str = "urn:dtx:problem:";

/// The longest text kept from an error answer that is not a problem
/// document (an HTML error page, a proxy's plain text).
pub const PLAIN_ANSWER_LIMIT: usize = 300;

/// A problem document as dtx writes it: `type`, `title`, `status`, `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:dtx:problem:{slug}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary that does not change from one occurrence to the next.
    pub title: String,
    /// The HTTP status it is sent with.
    pub status: u16,
    /// A sentence a person can act on.
    pub detail: String,
}

impl Problem {
    /// A problem of type `urn:dtx:problem:{slug}`.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
        }
    }

    /// The slug of a dtx problem type (`not-found` of
    /// `urn:dtx:problem:not-found`); `None` for another type.
    pub fn slug(&self) -> Option<&str> {
        self.kind.strip_prefix(TYPE_PREFIX)
    }
}

/// What a person needs to see of an error answer: the `detail` of a problem
/// document (from dtx or anyone else), else its `title`, else the start of
/// the body as text (at most [`PLAIN_ANSWER_LIMIT`] characters), else a
/// sentence saying the answer had none. Blank fields count as absent.
pub fn detail_of(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
        let field = |name: &str| match map.get(name) {
            Some(serde_json::Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
            _ => None,
        };
        if let Some(text) = field("detail").or_else(|| field("title")) {
            return text;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no detail in the answer".to_owned()
    } else {
        text.chars().take(PLAIN_ANSWER_LIMIT).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_written_with_the_documented_field_names() {
        let problem = Problem::new(404, "not-found", "Not found", "no transaction `g`");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:dtx:problem:not-found",
                "title": "Not found",
                "status": 404,
                "detail": "no transaction `g`",
            })
        );
        assert_eq!(problem.slug(), Some("not-found"));
    }

    #[test]
    fn the_detail_is_read_from_a_problem_or_else_from_the_text() {
        let problem =
            br#"{"type": "about:blank", "title": "Conflict", "detail": "not enough stock"}"#;
        assert_eq!(detail_of(problem), "not enough stock");
        assert_eq!(detail_of(b"  upstream timed out \n"), "upstream timed out");
        assert_eq!(detail_of(b""), "no detail in the answer");
        let page = "x".repeat(PLAIN_ANSWER_LIMIT + 50);
        assert_eq!(detail_of(page.as_bytes()).len(), PLAIN_ANSWER_LIMIT);
        // JSON without a string `detail` or `title` is shown as text.
        assert_eq!(detail_of(br#"{"detail": 3}"#), r#"{"detail": 3}"#);
        assert_eq!(
            detail_of(br#"{"title": "Conflict", "detail": " "}"#),
            "Conflict"
        );
    }
}
