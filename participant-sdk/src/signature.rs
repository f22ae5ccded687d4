//! The callback signature: `dtx-signature` is the hex HMAC-SHA256, under a
//! secret shared with the coordinator, of gid, branch, operation and body
//! separated by newlines. [`SignedJson`] checks it and parses the body.

use crate::context::BranchContext;
use crate::problem::problem;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dtx_protocol::wire::HEADER_SIGNATURE;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// Computes the signature of a call: hex HMAC-SHA256 of
/// `gid "\n" branch "\n" op "\n" body`, as the coordinator does.
pub fn sign(secret: &[u8], gid: &str, branch_id: &str, op: &str, body: &[u8]) -> String {
    hex::encode(
        mac(secret, gid, branch_id, op, body)
            .finalize()
            .into_bytes(),
    )
}

fn mac(secret: &[u8], gid: &str, branch_id: &str, op: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for part in [
        gid.as_bytes(),
        b"\n",
        branch_id.as_bytes(),
        b"\n",
        op.as_bytes(),
        b"\n",
        body,
    ] {
        mac.update(part);
    }
    mac
}

/// The secret the coordinator signs calls with (`--callback-secret`), or
/// none. Put it in the router's state (reachable through [`FromRef`]) for
/// [`SignedJson`] to find; give it to the initiator [`Client`](crate::Client)
/// too, so that the TCC Try calls it makes are signed the same way.
///
/// `Debug` never shows the secret.
#[derive(Clone, Default)]
pub struct CallbackSecret(Option<Arc<[u8]>>);

impl CallbackSecret {
    /// Calls must carry a valid signature under `secret`.
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        CallbackSecret(Some(Arc::from(secret.as_ref())))
    }

    /// No signature is checked (and none is made): for services whose
    /// coordinator runs without `--callback-secret`.
    pub fn disabled() -> Self {
        CallbackSecret(None)
    }

    /// Whether signatures are checked.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The signature of a call under this secret; `None` when disabled.
    pub fn sign(&self, gid: &str, branch_id: &str, op: &str, body: &[u8]) -> Option<String> {
        self.0
            .as_deref()
            .map(|secret| sign(secret, gid, branch_id, op, body))
    }

    /// Checks `signature` (the `dtx-signature` header) for a call. Always
    /// `Ok` when disabled. The comparison takes constant time, so the
    /// answer's timing says nothing about how much of a forgery was right.
    pub fn verify(
        &self,
        context: &BranchContext,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let Some(secret) = self.0.as_deref() else {
            return Ok(());
        };
        let signature = signature.ok_or(SignatureError::Missing)?;
        let bytes = hex::decode(signature.trim()).map_err(|_| SignatureError::Invalid)?;
        mac(
            secret,
            context.gid(),
            context.branch_id(),
            context.op().as_str(),
            body,
        )
        .verify_slice(&bytes)
        .map_err(|_| SignatureError::Invalid)
    }
}

impl fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("CallbackSecret(<hidden>)"),
            None => f.write_str("CallbackSecret(disabled)"),
        }
    }
}

/// A signature check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A secret is configured but the call has no `dtx-signature` header.
    #[error("the call has no `dtx-signature` header, but this participant requires signed calls")]
    Missing,
    /// The signature does not match the call under the configured secret.
    #[error(
        "the `dtx-signature` header does not match the call: the coordinator and this \
         participant do not share the same callback secret, or the call was altered"
    )]
    Invalid,
}

/// The JSON body of a participant call, after checking its signature.
///
/// Needs a [`CallbackSecret`] in the router's state. When the secret is
/// [disabled](CallbackSecret::disabled) it only parses the body. It reads the
/// branch context headers itself (they are part of what is signed), so a
/// handler may also extract [`BranchContext`].
#[derive(Debug, Clone, PartialEq)]
pub struct SignedJson<T>(pub T);

impl<S, T> FromRequest<S> for SignedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    CallbackSecret: FromRef<S>,
{
    type Rejection = SignedJsonRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let secret = CallbackSecret::from_ref(state);
        let context = BranchContext::from_headers(request.headers())
            .map_err(|e| SignedJsonRejection::Context(e.to_string()))?;
        let signature = request
            .headers()
            .get(HEADER_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Bytes::from_request(request, state)
            .await
            .map_err(SignedJsonRejection::Body)?;
        secret
            .verify(&context, &body, signature.as_deref())
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
    /// 401: the signature is missing or wrong.
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
            SignedJsonRejection::Signature(e) => problem(
                StatusCode::UNAUTHORIZED,
                "bad-signature",
                "Bad signature",
                &e.to_string(),
            ),
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
