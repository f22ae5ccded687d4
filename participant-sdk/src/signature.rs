//! Signed calls on the participant side: [`SignatureKeys`], the keyring a
//! participant accepts, and [`SignedJson`], the extractor that checks a
//! call's `dtx-signature` header (version 2) before parsing its body.
//!
//! The header, the keys and the verifier are the protocol crate's
//! ([`dtx_protocol::signature`], re-exported here): the signature covers the
//! time of the call, a nonce, the HTTP method, the path (and query) the call
//! was sent to, a hash of the body, and the gid, branch, operation and mode.
//! A call is refused (401 problem+json) when it is unsigned, signed with a
//! key not in the ring, altered, sent to another path or with another
//! method, older or further ahead than the window (default 5 minutes), or
//! seen before within it (a replay).
//!
//! Two signers sign calls to a participant: the coordinator (`dtx serve
//! --signing-key`) every call it makes, and the initiator [`Client`]
//! (`ClientBuilder::signing_key`) the TCC Try calls it makes itself. Each has
//! its own key, and the participant's ring lists both. To rotate a key, add
//! the new one to every participant's ring, switch the signer, then remove
//! the old one.
//!
//! The other way round, a participant in doubt trusts the coordinator's
//! answer to the termination query only when it verifies against the
//! coordinator's keys (`ClientBuilder::coordinator_keys`, a [`Keyring`]
//! checked by a [`DecisionVerifier`]).
//!
//! [`Client`]: crate::Client

use crate::context::BranchContext;
use crate::problem::problem;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, OriginalUri, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use dtx_protocol::signature::{
    DEFAULT_REPLAY_CAPACITY, DEFAULT_WINDOW, DecisionNonce, DecisionSignatureError,
    DecisionVerifier, KeyError, Keyring, MIN_SECRET_BYTES, SignatureError, SignedCall, SigningKey,
    Verifier, unix_now,
};
use dtx_protocol::wire::HEADER_SIGNATURE;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::{Arc, Once};

/// The keys a participant accepts signed calls from, with the verifier's
/// time window and replay cache; or none ([`disabled`](Self::disabled)).
/// Put it in the router's state (reachable through [`FromRef`]) for
/// [`SignedJson`] to find. Clones share one replay cache, as they must: a
/// replay is only seen by the cache that saw the original.
///
/// `Debug` shows the key ids, never a secret.
#[derive(Clone, Default)]
pub struct SignatureKeys(Option<Arc<Verifier>>);

impl SignatureKeys {
    /// Calls must carry a valid signature under one of `keys` (typically
    /// the coordinator's and the initiator's), within the default window
    /// ([`DEFAULT_WINDOW`]) and replay capacity
    /// ([`DEFAULT_REPLAY_CAPACITY`]). Fails on no keys or two with one id.
    pub fn new(keys: impl IntoIterator<Item = SigningKey>) -> Result<Self, KeyError> {
        Ok(Self::with_verifier(Verifier::new(Keyring::new(keys)?)))
    }

    /// Calls are checked by `verifier`: for another window or replay
    /// capacity (`Verifier::new(ring).window(..).replay_capacity(..)`).
    pub fn with_verifier(verifier: Verifier) -> Self {
        SignatureKeys(Some(Arc::new(verifier)))
    }

    /// No signature is checked: any caller that reaches the participant
    /// may call it. The first call [`SignedJson`] lets through this way logs
    /// a warning.
    pub fn disabled() -> Self {
        SignatureKeys(None)
    }

    /// Whether signatures are checked.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Checks `signature` (the `dtx-signature` header) of a call received
    /// with `method` at `target` (its path, and `?query` if any) with this
    /// `body` and `context`, now; the id of the key that signed it. Always
    /// `Ok` (with no key) when disabled.
    pub fn verify(
        &self,
        method: &str,
        target: &str,
        context: &BranchContext,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<Option<&str>, SignatureError> {
        let Some(verifier) = &self.0 else {
            return Ok(None);
        };
        let call = SignedCall {
            method,
            target,
            body,
            gid: context.gid(),
            branch: context.branch_id(),
            op: context.op().as_str(),
            mode: context.mode().as_str(),
        };
        verifier.verify(signature, &call, unix_now()).map(Some)
    }
}

impl fmt::Debug for SignatureKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(verifier) => f
                .debug_tuple("SignatureKeys")
                .field(&verifier.keyring().ids().collect::<Vec<_>>())
                .finish(),
            None => f.write_str("SignatureKeys(disabled)"),
        }
    }
}

/// The `dtx-signature` header of a call made now with `key`: a fresh nonce
/// each time, so that a resent call is never taken for a replay.
#[cfg(feature = "client")]
pub(crate) fn sign_now(key: &SigningKey, call: &SignedCall<'_>) -> String {
    key.sign(call, unix_now(), rand::random())
}

/// The request target that is signed for `url`: its path, then `?query`
/// when it has one, as reqwest sends them. Empty for a URL that does not
/// parse (reqwest refuses to send it anyway).
#[cfg(feature = "client")]
pub(crate) fn request_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
        Err(_) => String::new(),
    }
}

/// Says once per process that calls are accepted unsigned.
static UNSIGNED_WARNING: Once = Once::new();

/// The JSON body of a participant call, after checking its signature.
///
/// Needs [`SignatureKeys`] in the router's state. It checks the signature
/// against the method and the path the request arrived with (before any
/// `Router::nest` stripped a prefix), so the coordinator must call the URL
/// the branch was registered with: a proxy in between that rewrites the
/// path makes every call a mismatch. With keys
/// [disabled](SignatureKeys::disabled) it only parses the body, and the
/// first such call logs a warning. It reads the branch context headers
/// itself (they are part of what is signed), so a handler may also extract
/// [`BranchContext`].
#[derive(Debug, Clone, PartialEq)]
pub struct SignedJson<T>(pub T);

impl<S, T> FromRequest<S> for SignedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    SignatureKeys: FromRef<S>,
{
    type Rejection = SignedJsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let keys = SignatureKeys::from_ref(state);
        let context = BranchContext::from_headers(request.headers())
            .map_err(|e| SignedJsonRejection::Context(e.to_string()))?;
        let signature = request
            .headers()
            .get(HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let method = request.method().as_str().to_owned();
        let uri = request
            .extensions()
            .get::<OriginalUri>()
            .map_or(request.uri(), |original| &original.0);
        let target = uri.path_and_query().map_or_else(
            || uri.path().to_owned(),
            |target| target.as_str().to_owned(),
        );
        let body = Bytes::from_request(request, state)
            .await
            .map_err(SignedJsonRejection::Body)?;
        if !keys.is_enabled() {
            UNSIGNED_WARNING.call_once(|| {
                tracing::warn!(
                    "SIGNATURES NOT CHECKED: this participant accepts calls from anyone who \
                     can reach it. Give `SignedJson` a `SignatureKeys` with the coordinator's \
                     signing key (dtx serve --signing-key) and the initiator's"
                )
            });
        }
        keys.verify(&method, &target, &context, &body, signature.as_deref())
            .map_err(SignedJsonRejection::Signature)?;
        // An empty body is JSON `null`: the coordinator sends the payload
        // `null` for a branch registered without one, and some clients send
        // nothing at all instead.
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::from_value(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&body)
        };
        parsed
            .map(SignedJson)
            .map_err(|e| SignedJsonRejection::Json(e.to_string()))
    }
}

/// Why [`SignedJson`] refused a request; answered as problem+json.
#[derive(Debug)]
pub enum SignedJsonRejection {
    /// 400: the branch context headers are missing or invalid.
    Context(String),
    /// 401: the signature is missing, wrong, stale or replayed; 503 with
    /// `Retry-After` when the replay cache is full.
    Signature(SignatureError),
    /// The body could not be read (e.g. 413 too large).
    Body(BytesRejection),
    /// 400: the body is not the JSON the handler expects.
    Json(String),
}

impl IntoResponse for SignedJsonRejection {
    fn into_response(self) -> Response {
        match self {
            SignedJsonRejection::Context(detail) => problem(
                StatusCode::BAD_REQUEST,
                "missing-branch-context",
                "Missing branch context",
                &detail,
            ),
            SignedJsonRejection::Signature(e) => match e.retry_after() {
                Some(seconds) => {
                    let mut response = problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "replay-cache-full",
                        "Too many signed calls",
                        &e.to_string(),
                    );
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                    response
                }
                None => problem(
                    StatusCode::UNAUTHORIZED,
                    "bad-signature",
                    "Bad signature",
                    &e.to_string(),
                ),
            },
            SignedJsonRejection::Body(e) => {
                problem(e.status(), "bad-body", "Unreadable body", &e.body_text())
            }
            SignedJsonRejection::Json(e) => problem(
                StatusCode::BAD_REQUEST,
                "bad-body",
                "Invalid JSON body",
                &format!("the body is not the JSON this participant expects: {e}"),
            ),
        }
    }
}
