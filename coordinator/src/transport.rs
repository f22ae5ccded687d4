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
//!
//! Redirects are never followed: a 3xx is the answer, and an unknown one.
//! Followed, a 302 to a page that answers 200 read as success although the
//! action behind the redirect never ran (and a 303 turns the POST into a
//! GET). Of a failed answer only the start of the body is read, made
//! storable on every backend (`store::text`), to describe it.

use async_trait::async_trait;
use dtx_protocol::wire::{
    HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP, HEADER_SIGNATURE, HEADER_VOTE,
};
use dtx_protocol::{Mode, Op, Reply};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::store::text::storable;
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
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpTransport {
            client,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        })
    }
}

/// Longest error text kept from a participant's answer body, in characters.
const ERROR_BODY_LIMIT: usize = 300;

/// Most bytes of a failed answer's body read to describe it: enough for
/// [`ERROR_BODY_LIMIT`] characters of any UTF-8. The rest is never read, so
/// a huge or endless error body costs neither memory nor time.
const ERROR_BODY_READ_BYTES: usize = 4096;

/// Longest redirect target quoted in an error, in characters.
const LOCATION_LIMIT: usize = 200;

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
                } else if response.status().is_redirection() {
                    Some(describe_redirect(&response))
                } else {
                    Some(format!("HTTP {status}: {}", body_start(response).await))
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

/// The first [`ERROR_BODY_LIMIT`] characters of an answer's body, reading
/// at most [`ERROR_BODY_READ_BYTES`] of it, as the store keeps text (a body
/// that is not UTF-8 is read lossily). A body that fails half-way gives what
/// arrived.
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_BODY_READ_BYTES - bytes.len();
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    storable(&String::from_utf8_lossy(&bytes), ERROR_BODY_LIMIT).into_owned()
}

/// What an operator needs to know of a redirect: where it pointed, and
/// that it was not followed.
fn describe_redirect(response: &reqwest::Response) -> String {
    let status = response.status().as_u16();
    match response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()))
    {
        Some(location) => format!(
            "HTTP {status}: redirect to `{}` not followed (dtx never follows redirects; point the branch at the final URL)",
            storable(&location, LOCATION_LIMIT)
        ),
        None => format!("HTTP {status}: redirect not followed (dtx never follows redirects)"),
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
#[path = "transport_tests.rs"]
mod tests;
