//! TCC as a scope: open the transaction, register and Try each branch inside
//! the caller's code, commit when that code succeeds, abort when it fails,
//! panics or is cancelled. A commit whose answer is lost is settled by
//! asking the coordinator (`tcc_outcome`).

use super::tcc_outcome::settle_lost_commit;
use super::{Client, ClientError, Transaction, encode, new_gid};
use crate::context::{BranchOp, HEADER_TRACEPARENT};
use dtx_protocol::wire::{HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP, HEADER_SIGNATURE};
use dtx_protocol::{BranchSpec, Mode, Op, Reply, TxOptions};
use futures_util::FutureExt as _;
use reqwest::Method;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

/// One TCC branch: the Try the initiator calls, and the Confirm and Cancel
/// the coordinator calls after the decision.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct TccBranch {
    try_url: String,
    spec: BranchSpec,
}

impl TccBranch {
    /// A branch `id` (unique in the transaction) with its three URLs.
    pub fn new(
        id: impl Into<String>,
        try_url: impl Into<String>,
        confirm_url: impl Into<String>,
        cancel_url: impl Into<String>,
    ) -> Self {
        let urls = BTreeMap::from([
            (Op::Confirm, confirm_url.into()),
            (Op::Cancel, cancel_url.into()),
        ]);
        TccBranch {
            try_url: try_url.into(),
            spec: BranchSpec {
                id: id.into(),
                urls,
                payload: serde_json::Value::Null,
                headers: BTreeMap::new(),
                depends_on: None,
            },
        }
    }

    /// The JSON body of the Try, the Confirm and the Cancel.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.spec.payload = payload;
        self
    }

    /// An extra header on every call of the branch.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.headers.insert(name.into(), value.into());
        self
    }
}

/// A TCC transaction being described; [`run`](Self::run) carries it out.
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until `run`"]
pub struct TccBuilder {
    client: Client,
    gid: String,
    options: TxOptions,
    wait: Duration,
    try_attempts: u32,
    outcome_patience: Duration,
}

#[derive(Serialize)]
struct OpenBody<'a> {
    gid: &'a str,
    mode: Mode,
    options: &'a TxOptions,
}

impl TccBuilder {
    pub(super) fn new(client: Client) -> Self {
        TccBuilder {
            client,
            gid: new_gid(),
            options: TxOptions::default(),
            wait: Duration::ZERO,
            try_attempts: 3,
            outcome_patience: Duration::from_secs(60),
        }
    }

    /// Uses this gid instead of a fresh UUIDv7.
    pub fn with_gid(mut self, gid: impl Into<String>) -> Self {
        self.gid = gid.into();
        self
    }

    /// The gid the transaction will be opened under.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Sets the options. `deadline_ms` bounds the whole scope: a transaction
    /// neither committed nor aborted by then is aborted by the coordinator.
    /// `request_timeout_ms` and `retry` also govern the Try calls.
    pub fn options(mut self, options: TxOptions) -> Self {
        self.options = options;
        self
    }

    /// After committing, wait up to this long for every Confirm to be
    /// delivered (default: do not wait; the commit decision is durable and
    /// the coordinator delivers the Confirms by itself).
    pub fn wait_for_outcome(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// How many times a Try whose answer is unknown (timeout, transport
    /// error, 425, 5xx) is sent before the scope gives up (default 3, at
    /// least 1). The participant's barrier makes the repeats harmless.
    pub fn try_attempts(mut self, attempts: u32) -> Self {
        self.try_attempts = attempts.max(1);
        self
    }

    /// When the commit's answer is lost, how long the scope keeps asking the
    /// coordinator what became of the commit before it gives up with
    /// [`ClientError::OutcomeUnknown`] (default 60 s). The questions are
    /// spaced by the options' `retry` backoff.
    pub fn outcome_patience(mut self, patience: Duration) -> Self {
        self.outcome_patience = patience;
        self
    }

    /// Opens the transaction, runs `body` with a [`TccScope`] to register and
    /// Try branches, then commits if `body` returned `Ok`, and aborts if it
    /// returned `Err`, panicked (the panic continues after the abort) or was
    /// cancelled (the abort is spawned on the current runtime).
    ///
    /// # Outcomes
    /// - `Ok(value)`: `body` succeeded and the transaction is committed (the
    ///   decision is durable; the coordinator delivers the Confirms, and
    ///   [`wait_for_outcome`](Self::wait_for_outcome) waits for them).
    /// - `Err(e)`, `body`'s own error: `body` failed; the scope asked for the
    ///   abort, and the coordinator cancels every Try. A failed abort is only
    ///   logged: the coordinator aborts the transaction at its deadline.
    /// - [`ClientError::Aborted`] (through `E::from`): `body` succeeded but
    ///   the transaction was aborted, not committed: its deadline passed
    ///   before the commit arrived, or the commit request was lost on its way
    ///   and the scope, finding the transaction still open, aborted it.
    ///   Nothing stays; starting again is safe.
    /// - [`ClientError::OutcomeUnknown`]: the commit's answer was lost and
    ///   the coordinator could not be asked within
    ///   [`outcome_patience`](Self::outcome_patience). It may have committed:
    ///   do not start again under a new gid; ask [`Client::wait`] later.
    /// - Any other [`ClientError`]: opening failed (nothing was started), or
    ///   the coordinator answered the question about the outcome with an
    ///   error that repeating will not fix.
    ///
    /// A commit whose answer is lost (connection reset, timeout, 503) may
    /// have landed, so the scope never reads that as a failure: it asks the
    /// coordinator for the transaction, retrying with backoff while there
    /// is no clear answer, and reports what it finds: `committing` or
    /// `committed` is `Ok`; `aborting` or `aborted` is
    /// [`ClientError::Aborted`] with the coordinator's reason. Only a
    /// transaction still `open` (the commit never arrived) is aborted by
    /// the scope, and if that abort is refused because the commit landed
    /// meanwhile, it asks again and reports the commit.
    pub async fn run<F, Fut, T, E>(self, body: F) -> Result<T, E>
    where
        F: FnOnce(TccScope) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ClientError>,
    {
        let open = OpenBody {
            gid: &self.gid,
            mode: Mode::Tcc,
            options: &self.options,
        };
        let _: (_, Transaction) = self
            .client
            .call(Method::POST, "v1/transactions", Some(&open), Duration::ZERO)
            .await?;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            gid: Some(self.gid.clone()),
        };
        let scope = TccScope {
            inner: Arc::new(ScopeInner {
                client: self.client.clone(),
                gid: self.gid.clone(),
                options: self.options.clone(),
                try_attempts: self.try_attempts,
            }),
        };
        // The body is called inside the unwind boundary too, so a panic
        // before its first await is caught like any other.
        let outcome = AssertUnwindSafe(async move { body(scope).await })
            .catch_unwind()
            .await;
        let path = format!("v1/transactions/{}/commit", encode(&self.gid));
        let result = match outcome {
            Ok(Ok(value)) => {
                let commit: Result<(_, Transaction), _> = self
                    .client
                    .call(Method::POST, &path, None::<&()>, self.wait)
                    .await;
                match commit {
                    Ok(_) => Ok(value),
                    Err(e) => {
                        // The answer may be lost while the commit landed:
                        // aborting now and reporting a failure would make a
                        // caller that retries under a new gid do the
                        // business operation twice. Ask instead.
                        let settled = settle_lost_commit(
                            &self.client,
                            &self.gid,
                            &self.options.retry,
                            self.outcome_patience,
                            e,
                        )
                        .await;
                        if settled.is_ok() && !self.wait.is_zero() {
                            // Best effort, as `wait_for_outcome` is on the
                            // first try: the commit is durable either way.
                            let _ = self.client.wait(&self.gid, self.wait).await;
                        }
                        settled.map(|()| value).map_err(E::from)
                    }
                }
            }
            Ok(Err(e)) => {
                abort_quietly(&self.client, &self.gid).await;
                Err(e)
            }
            Err(panic) => {
                abort_quietly(&self.client, &self.gid).await;
                guard.disarm();
                std::panic::resume_unwind(panic);
            }
        };
        guard.disarm();
        result
    }
}

/// Inside [`TccBuilder::run`]: registers branches and calls their Try.
/// Cheap to clone, so Trys can run concurrently (e.g. with `tokio::join!`).
#[derive(Debug, Clone)]
pub struct TccScope {
    inner: Arc<ScopeInner>,
}

#[derive(Debug)]
struct ScopeInner {
    client: Client,
    gid: String,
    options: TxOptions,
    try_attempts: u32,
}

impl TccScope {
    /// The transaction's gid.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Registers `branch` with the coordinator, then POSTs its Try with the
    /// branch context headers (`dtx-op: try`, `dtx-mode: tcc`, signed when
    /// the client has a callback secret). Returns the Try's JSON answer
    /// (`Null` if it sent none).
    ///
    /// Registration comes first so that a Try that runs is always known to
    /// the coordinator, which then cancels it if the transaction aborts.
    /// A refusal is [`ClientError::Refused`]; an answer still unknown after
    /// every attempt is [`ClientError::TryUnknown`]. Return the error from
    /// the scope (`?`) and the transaction aborts.
    pub async fn try_branch(&self, branch: TccBranch) -> Result<serde_json::Value, ClientError> {
        let inner = &self.inner;
        let path = format!("v1/transactions/{}/branches", encode(&inner.gid));
        let _: (_, serde_json::Value) = inner
            .client
            .call(Method::POST, &path, Some(&branch.spec), Duration::ZERO)
            .await?;
        let body = serde_json::to_vec(&branch.spec.payload).unwrap_or_else(|_| b"null".to_vec());
        let mut attempt = 1;
        loop {
            let detail = match self.send_try(&branch, &body).await {
                Ok((Reply::Success | Reply::ReadOnly, answer)) => {
                    return Ok(serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null));
                }
                Ok((Reply::Refused, answer)) => {
                    return Err(ClientError::Refused {
                        gid: inner.gid.clone(),
                        branch: branch.spec.id.clone(),
                        detail: crate::problem::detail_of(&answer),
                    });
                }
                Ok((Reply::StillWorking, _)) => "the participant is still working (425)".to_owned(),
                Ok((Reply::Unknown, answer)) => crate::problem::detail_of(&answer),
                Err(e) => e.to_string(),
            };
            if attempt >= inner.try_attempts {
                return Err(ClientError::TryUnknown {
                    gid: inner.gid.clone(),
                    branch: branch.spec.id.clone(),
                    detail: format!("after {attempt} attempt(s): {detail}"),
                });
            }
            tokio::time::sleep(inner.options.retry.delay(attempt, rand::random())).await;
            attempt += 1;
        }
    }

    /// One Try call; the answer's classification and body.
    async fn send_try(
        &self,
        branch: &TccBranch,
        body: &[u8],
    ) -> Result<(Reply, Vec<u8>), reqwest::Error> {
        let inner = &self.inner;
        let (gid, id, op) = (&inner.gid, &branch.spec.id, BranchOp::Try.as_str());
        let mut request = inner
            .client
            .http()
            .post(&branch.try_url)
            .timeout(Duration::from_millis(inner.options.request_timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_GID, gid)
            .header(HEADER_BRANCH, id)
            .header(HEADER_OP, op)
            .header(HEADER_MODE, Mode::Tcc.as_str())
            .header(HEADER_TRACEPARENT, traceparent(gid));
        for (name, value) in &branch.spec.headers {
            request = request.header(name, value);
        }
        if let Some(signature) = inner.client.secret().sign(gid, id, op, body) {
            request = request.header(HEADER_SIGNATURE, signature);
        }
        let response = request.body(body.to_vec()).send().await?;
        let reply = Reply::from_status(response.status().as_u16());
        let answer = response.bytes().await?;
        Ok((reply, answer.to_vec()))
    }
}

/// Aborts; a refusal because the transaction is already deciding or final
/// is fine, anything else is logged (the deadline aborts it anyway).
async fn abort_quietly(client: &Client, gid: &str) {
    match client.abort(gid).await {
        Ok(_) | Err(ClientError::Conflict { .. }) => {}
        Err(e) => tracing::warn!(
            gid,
            error = %e,
            "could not abort the TCC transaction; the coordinator aborts it at its deadline"
        ),
    }
}

/// Aborts the transaction if the scope's future is dropped before it
/// decided (the caller was cancelled, e.g. its HTTP request went away).
struct AbortOnDrop {
    client: Client,
    /// `Some` while a decision is still owed.
    gid: Option<String>,
}

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.gid = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(gid) = self.gid.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let client = self.client.clone();
                runtime.spawn(async move { abort_quietly(&client, &gid).await });
            }
            Err(_) => tracing::warn!(
                gid,
                "TCC scope dropped outside a runtime; the coordinator aborts it at its deadline"
            ),
        }
    }
}

/// A W3C trace context whose trace id is derived from the gid, exactly as
/// the coordinator derives it, so the Try lands in the transaction's trace.
fn traceparent(gid: &str) -> String {
    let digest = Sha256::digest(gid.as_bytes());
    let trace_id = hex::encode(&digest[..16]);
    let span_id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..8]);
    format!("00-{trace_id}-{span_id}-01")
}
