//! Calls to participants: the [`Transport`] trait the engine calls through,
//! and its HTTP implementation on reqwest.
//!
//! Every call is a POST of the branch payload with the context headers
//! (`dtx-gid`, `dtx-branch`, `dtx-op`, `dtx-mode`), a W3C `traceparent` whose
//! trace id is the same for every call of one transaction, the branch's own
//! headers and, when a signing key is configured, a `dtx-signature` (version
//! 2, see `dtx_protocol::signature`). The answer is
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
use dtx_protocol::problem::detail_of;
use dtx_protocol::signature::{SignedCall, SigningKey};
use dtx_protocol::wire::{
    HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP, HEADER_SIGNATURE, HEADER_VOTE,
};
use dtx_protocol::{Mode, Op, Reply};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::outbound::{OutboundDenied, OutboundPolicy, PolicyResolver, redacted_url};
use crate::store::text::storable;
use std::net::IpAddr;
use std::sync::Arc;
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
    /// For a refusal (409): the participant's reason, the `detail` (else
    /// `title`) of its problem+json answer, or the start of its body.
    pub refusal: Option<String>,
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
    /// Signs every call (`dtx-signature` v2) when set.
    signing_key: Option<SigningKey>,
    /// Checked here for IP-literal URLs, which reqwest connects to without
    /// asking the client's resolver (that checks host names).
    policy: Arc<OutboundPolicy>,
}

impl HttpTransport {
    /// A transport that signs calls with `signing_key` when one is given,
    /// under the default outbound policy.
    pub fn new(signing_key: Option<SigningKey>) -> Result<Self, reqwest::Error> {
        Self::with_policy(signing_key, Arc::new(OutboundPolicy::default()))
    }

    /// A transport that signs calls with `signing_key` when one is given
    /// and calls only the addresses `policy` allows.
    pub fn with_policy(
        signing_key: Option<SigningKey>,
        policy: Arc<OutboundPolicy>,
    ) -> Result<Self, reqwest::Error> {
        Self::configured(signing_key, policy, Vec::new())
    }

    /// [`HttpTransport::with_policy`] that also trusts `extra_roots` (CA
    /// certificates, `--participant-ca`) for participants called over https.
    pub fn configured(
        signing_key: Option<SigningKey>,
        policy: Arc<OutboundPolicy>,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        for root in extra_roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .user_agent(concat!("dtx/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
            // Through an HTTP(S)_PROXY from the environment the proxy would
            // resolve and connect, and the policy would only see the proxy.
            .no_proxy()
            .build()?;
        Ok(HttpTransport {
            client,
            signing_key,
            policy,
        })
    }

    /// Why the policy forbids calling `url`, when its host is an IP literal
    /// the policy denies. It was checked at registration, but the policy
    /// may have changed since (a restart with another list).
    fn literal_refusal(&self, url: &str) -> Option<String> {
        let ip = match url::Url::parse(url).ok()?.host()? {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        let why = self.policy.check_addr(ip).err()?;
        Some(format!(
            "refused by the outbound policy (--allow-participants): {why}"
        ))
    }
}

/// Longest error text kept from a participant's answer body, in characters.
pub(crate) const ERROR_BODY_LIMIT: usize = 300;

/// Most bytes of a failed answer's body read to describe it: enough for
/// [`ERROR_BODY_LIMIT`] characters of any UTF-8. The rest is never read, so
/// a huge or endless error body costs neither memory nor time.
const ERROR_BODY_READ_BYTES: usize = 4096;

/// Longest redirect target quoted in an error, in characters.
const LOCATION_LIMIT: usize = 200;

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, r: CallRequest<'_>) -> CallOutcome {
        if let Some(refusal) = self.literal_refusal(r.url) {
            // Not sent, so nothing happened: unknown like a connection
            // error, retried with backoff until the policy allows it or an
            // operator steps in.
            return CallOutcome {
                reply: Reply::Unknown,
                http_status: None,
                error: Some(refusal),
                refusal: None,
            };
        }
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
        if let Some(key) = &self.signing_key {
            // Signed afresh on every send: a retry is never a replay.
            let now = dtx_protocol::signature::unix_now();
            request = request.header(HEADER_SIGNATURE, sign(key, &r, &body, now, rand::random()));
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let vote = response
                    .headers()
                    .get(HEADER_VOTE)
                    .and_then(|v| v.to_str().ok());
                let reply = Reply::from_answer(status, vote);
                let (error, refusal) = if reply.is_success() {
                    (None, None)
                } else if response.status().is_redirection() {
                    (Some(describe_redirect(&response)), None)
                } else {
                    let body = body_start(response).await;
                    let refusal = (reply == Reply::Refused).then(|| refusal_reason(&body));
                    let error = storable(&body, ERROR_BODY_LIMIT);
                    (Some(format!("HTTP {status}: {error}")), refusal)
                };
                CallOutcome {
                    reply,
                    http_status: Some(status),
                    error,
                    refusal,
                }
            }
            Err(e) => CallOutcome {
                reply: Reply::Unknown,
                http_status: None,
                error: Some(describe_transport_error(&e, r.timeout)),
                refusal: None,
            },
        }
    }
}

/// A participant's reason for a refusal, for people: what
/// [`detail_of`] finds in the answer, at most [`ERROR_BODY_LIMIT`]
/// characters of storable text.
pub(crate) fn refusal_reason(body: &str) -> String {
    storable(&detail_of(body.as_bytes()), ERROR_BODY_LIMIT).into_owned()
}

/// The start of an answer's body, reading at most [`ERROR_BODY_READ_BYTES`]
/// of it (a body that is not UTF-8 is read lossily). A body that fails
/// half-way gives what arrived.
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
    String::from_utf8_lossy(&bytes).into_owned()
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
            storable(&redacted_url(&location), LOCATION_LIMIT)
        ),
        None => format!("HTTP {status}: redirect not followed (dtx never follows redirects)"),
    }
}

/// What went wrong with a call that got no answer. reqwest's own text
/// quotes the whole URL (credentials and query included) and leaves out the
/// cause, so the text is made of the causes instead.
fn describe_transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} ms", timeout.as_millis());
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(denied) = cause.downcast_ref::<OutboundDenied>() {
            return denied.to_string();
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    let causes = if causes.is_empty() {
        // reqwest writes "<what failed> for url (<url>)": keep the first part.
        let own = e.to_string();
        own.split(" for url (")
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        causes.join(": ")
    };
    if e.is_connect() {
        format!("cannot connect: {causes}")
    } else {
        format!("transport error: {causes}")
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

/// The `dtx-signature` header (version 2, see [`dtx_protocol::signature`])
/// of call `r` with `body`, made at Unix time `now` with `nonce`: it covers
/// the method, the URL's path and query as reqwest sends them (so a
/// participant can tell a call re-sent to another of its paths), the body
/// and the context headers. A URL that does not parse signs an empty
/// target; reqwest refuses to send it anyway.
pub fn sign(
    key: &SigningKey,
    r: &CallRequest<'_>,
    body: &[u8],
    now: u64,
    nonce: [u8; dtx_protocol::signature::NONCE_BYTES],
) -> String {
    let target = match url::Url::parse(r.url) {
        Ok(url) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
        Err(_) => String::new(),
    };
    let call = SignedCall {
        method: "POST",
        target: &target,
        body,
        gid: r.gid,
        branch: r.branch_id,
        op: r.op.as_str(),
        mode: r.mode.as_str(),
    };
    key.sign(&call, now, nonce)
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
