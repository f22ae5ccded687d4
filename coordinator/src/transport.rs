//! Calls to participants: the [`Transport`] trait the engine calls through,
//! and its HTTP implementation on reqwest.
//!
//! Every call is a POST of the branch payload with the context headers
//! (`dtx-gid`, `dtx-branch`, `dtx-op`, `dtx-mode`), a W3C `traceparent` whose
//! trace id is the same for every call of one transaction, the branch's own
//! headers and, when a secret is configured, an HMAC signature. The answer is
//! classified into a [`Reply`] (a 2xx with `dtx-vote: read-only` is a
//! read-only vote); a timeout or a connection error is [`Reply::Unknown`],
//! never a failure.

use async_trait::async_trait;
use dtx_protocol::wire::{
    HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP, HEADER_SIGNATURE, HEADER_VOTE,
};
use dtx_protocol::{Mode, Op, Reply};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// One call to make.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// Where to POST.
    pub url: &'a str,
    /// The global transaction.
    pub gid: &'a str,
    /// The branch id.
    pub branch_id: &'a str,
    /// The operation.
    pub op: Op,
    /// The transaction's mode.
    pub mode: Mode,
    /// The JSON body.
    pub payload: &'a serde_json::Value,
    /// Extra headers registered with the branch.
    pub headers: &'a BTreeMap<String, String>,
    /// How long to wait for the answer before calling it unknown.
    pub timeout: Duration,
}

/// What came of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The classified answer.
    pub reply: Reply,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// What went wrong, for anything but success: a transport error or the
    /// start of the answer's body.
    pub error: Option<String>,
}

/// How the engine reaches participants. Production uses [`HttpTransport`];
/// tests of one piece may substitute a fake.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Makes one call; never fails, an error is an outcome.
    async fn call(&self, request: CallRequest<'_>) -> CallOutcome;
}

/// Calls participants over HTTP(S) with one pooled client.
pub struct HttpTransport {
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
}

impl HttpTransport {
    /// A transport that signs calls with `secret` when one is given.
    pub fn new(secret: Option<&str>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("dtx/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpTransport {
            client,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        })
    }
}

/// Longest error text kept from a participant's answer body.
const ERROR_BODY_LIMIT: usize = 300;

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, r: CallRequest<'_>) -> CallOutcome {
        let body = serde_json::to_vec(r.payload).unwrap_or_default();
        let mut request = self
            .client
            .post(r.url)
            .timeout(r.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_GID, r.gid)
            .header(HEADER_BRANCH, r.branch_id)
            .header(HEADER_OP, r.op.as_str())
            .header(HEADER_MODE, r.mode.as_str())
            .header("traceparent", traceparent(r.gid));
        for (name, value) in r.headers {
            request = request.header(name, value);
        }
        if let Some(secret) = &self.secret {
            request = request.header(
                HEADER_SIGNATURE,
                sign(secret, r.gid, r.branch_id, r.op, &body),
            );
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let vote = response
                    .headers()
                    .get(HEADER_VOTE)
                    .and_then(|v| v.to_str().ok());
                let reply = Reply::from_answer(status, vote);
                let error = if reply.is_success() {
                    None
                } else {
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(ERROR_BODY_LIMIT).collect();
                    Some(format!("HTTP {status}: {text}"))
                };
                CallOutcome {
                    reply,
                    http_status: Some(status),
                    error,
                }
            }
            Err(e) => CallOutcome {
                reply: Reply::Unknown,
                http_status: None,
                error: Some(describe_transport_error(&e, r.timeout)),
            },
        }
    }
}

fn describe_transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("transport error: {e}")
    }
}

/// A W3C trace context header. The trace id is derived from the gid so that
/// every call of one transaction lands in one trace; the span id is fresh.
fn traceparent(gid: &str) -> String {
    let digest = Sha256::digest(gid.as_bytes());
    let trace_id = hex::encode(&digest[..16]);
    let span_id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..8]);
    format!("00-{trace_id}-{span_id}-01")
}

/// HMAC-SHA256 over gid, branch, operation and body, separated by newlines,
/// hex encoded. A participant recomputes it with the shared secret to know the
/// call comes from the coordinator and was not altered.
pub fn sign(secret: &[u8], gid: &str, branch_id: &str, op: Op, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for part in [
        gid.as_bytes(),
        b"\n",
        branch_id.as_bytes(),
        b"\n",
        op.as_str().as_bytes(),
        b"\n",
        body,
    ] {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_stable_per_transaction() {
        let a = traceparent("g1");
        let b = traceparent("g1");
        assert_eq!(a.len(), 55);
        assert_eq!(a[..36], b[..36], "same trace id");
        assert_ne!(a[36..], b[36..], "fresh span id");
        assert_ne!(traceparent("g2")[..36], a[..36]);
    }

    #[test]
    fn signature_covers_every_part() {
        let base = sign(b"k", "g", "b", Op::Action, b"{}");
        assert_eq!(base.len(), 64);
        assert_eq!(base, sign(b"k", "g", "b", Op::Action, b"{}"));
        for other in [
            sign(b"k2", "g", "b", Op::Action, b"{}"),
            sign(b"k", "g2", "b", Op::Action, b"{}"),
            sign(b"k", "g", "b2", Op::Action, b"{}"),
            sign(b"k", "g", "b", Op::Compensate, b"{}"),
            sign(b"k", "g", "b", Op::Action, b"{ }"),
        ] {
            assert_ne!(base, other);
        }
    }
}
