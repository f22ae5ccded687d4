//! TCC as a scope: open the transaction, register and Try each branch inside
//! the caller's code, commit when that code succeeds, abort when it fails,
//! panics or is cancelled. A commit whose answer is lost is settled by
//! asking the coordinator (`tcc_outcome`).

use super::endpoints::Endpoint;
use super::failover::Answered;
use super::tcc_outcome::settle_lost_commit;
use super::{Client, ClientError, TccBranch, TccBuilder, TransactionView, encode};
use crate::context::HEADER_TRACEPARENT;
use crate::op::BranchOp;
use crate::signature::{SignedCall, request_target, sign_now};
use dtx_protocol::problem::detail_of;
use dtx_protocol::wire::{
    AbortRequest, HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP, HEADER_SIGNATURE, RefusedTry,
};
use dtx_protocol::{BranchSpec, Mode, RegisterRequest, Reply, TxOptions};
use futures_util::FutureExt as _;
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TCC scope. The [options](TccBuilder::options)' `deadline_ms` bounds
/// the whole scope (a transaction neither committed nor aborted by then is
/// aborted by the coordinator); `request_timeout_ms` and `retry` also govern
/// the Try calls.
impl TccBuilder {
    /// After committing, wait up to this long for every Confirm to be
    /// delivered (default: do not wait; the commit decision is durable and
    /// the coordinator delivers the Confirms by itself).
    pub fn wait_for_outcome(mut self, wait: Duration) -> Self {
        self.parts.wait = wait;
        self
    }

    /// How many times a Try whose answer is unknown (timeout, transport
    /// error, 425, 5xx) is sent before the scope gives up (default 3, at
    /// least 1). The participant's barrier makes the repeats harmless.
    pub fn try_attempts(mut self, attempts: u32) -> Self {
        self.parts.try_attempts = attempts.max(1);
        self
    }

    /// When the commit's answer is lost, how long the scope keeps asking the
    /// coordinator what became of the commit before it gives up with
    /// [`ClientError::OutcomeUnknown`] (default 60 s). The questions are
    /// spaced by the options' `retry` backoff.
    pub fn outcome_patience(mut self, patience: Duration) -> Self {
        self.parts.outcome_patience = patience;
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
        let open = RegisterRequest {
            gid: Some(self.gid.clone()),
            mode: Mode::Tcc,
            branches: Vec::new(),
            options: self.options.clone(),
        };
        let opened: Answered<TransactionView> = self
            .client
            .call(
                Method::POST,
                "v1/transactions",
                Some(&open),
                Duration::ZERO,
                None,
            )
            .await?;
        // The coordinator that opened the transaction drives it: the scope's
        // branches, commit and abort go there first, so that a commit does
        // not make another coordinator take the transaction over.
        let home = opened.endpoint;
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            home: home.clone(),
            gid: Some(self.gid.clone()),
        };
        let scope_inner = Arc::new(ScopeInner {
            client: self.client.clone(),
            home: home.clone(),
            gid: self.gid.clone(),
            options: self.options.clone(),
            try_attempts: self.parts.try_attempts,
            refused: Mutex::new(None),
        });
        let scope = TccScope {
            inner: scope_inner.clone(),
        };
        // The body is called inside the unwind boundary too, so a panic
        // before its first await is caught like any other.
        let outcome = AssertUnwindSafe(async move { body(scope).await })
            .catch_unwind()
            .await;
        let path = format!("v1/transactions/{}/commit", encode(&self.gid));
        let result = match outcome {
            Ok(Ok(value)) => {
                let commit: Result<Answered<TransactionView>, _> = self
                    .client
                    .call(
                        Method::POST,
                        &path,
                        None::<&()>,
                        self.parts.wait,
                        Some(&home),
                    )
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
                            &home,
                            &self.gid,
                            &self.options.retry,
                            self.parts.outcome_patience,
                            e,
                        )
                        .await;
                        if settled.is_ok() && !self.parts.wait.is_zero() {
                            // Best effort, as `wait_for_outcome` is on the
                            // first try: the commit is durable either way.
                            let _ = self.client.wait(&self.gid, self.parts.wait).await;
                        }
                        settled.map(|()| value).map_err(E::from)
                    }
                }
            }
            Ok(Err(e)) => {
                let why = scope_inner.abort_request();
                abort_quietly(&self.client, &home, &self.gid, &why).await;
                Err(e)
            }
            Err(panic) => {
                let why = scope_inner.abort_request();
                abort_quietly(&self.client, &home, &self.gid, &why).await;
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
    /// The coordinator that opened the transaction.
    home: Arc<Endpoint>,
    gid: String,
    options: TxOptions,
    try_attempts: u32,
    /// The first Try refused in the scope: the abort that follows names it,
    /// so that the coordinator keeps the participant's reason (it never
    /// sees a Try's answer itself).
    refused: Mutex<Option<RefusedTry>>,
}

impl ScopeInner {
    /// Remembers a refused Try, unless one was refused before.
    fn note_refused(&self, branch: &str, reason: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.get_or_insert_with(|| RefusedTry {
            branch: branch.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// What the scope's abort says: the refused Try, if there was one.
    fn abort_request(&self) -> AbortRequest {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        AbortRequest {
            refused_try: refused.clone(),
        }
    }
}

impl TccScope {
    /// The transaction's gid.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Registers `branch` with the coordinator, then POSTs its Try with the
    /// branch context headers (`dtx-op: try`, `dtx-mode: tcc`, signed when
    /// the client has a signing key). Returns the Try's JSON answer
    /// (`Null` if it sent none).
    ///
    /// Registration comes first so that a Try that runs is always known to
    /// the coordinator, which then cancels it if the transaction aborts.
    /// A branch missing a URL is [`ClientError::IncompleteBranch`] (nothing
    /// sent); a refusal is [`ClientError::Refused`], with the participant's
    /// reason; an answer still unknown after every attempt is
    /// [`ClientError::TryUnknown`]. Return the error from the scope (`?`)
    /// and the transaction aborts.
    pub async fn try_branch(&self, branch: TccBranch) -> Result<serde_json::Value, ClientError> {
        let inner = &self.inner;
        let spec = branch.to_spec()?;
        let try_url = branch
            .url(BranchOp::Try)
            .expect("a complete TCC branch has a Try URL");
        let path = format!("v1/transactions/{}/branches", encode(&inner.gid));
        let _: Answered<serde_json::Value> = inner
            .client
            .call(
                Method::POST,
                &path,
                Some(&spec),
                Duration::ZERO,
                Some(&inner.home),
            )
            .await?;
        let body = serde_json::to_vec(&spec.payload).unwrap_or_else(|_| b"null".to_vec());
        let mut attempt = 1;
        loop {
            let detail = match self.send_try(try_url, &spec, &body).await {
                Ok((Reply::Success | Reply::ReadOnly, answer)) => {
                    return Ok(serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null));
                }
                Ok((Reply::Refused, answer)) => {
                    let detail = detail_of(&answer);
                    inner.note_refused(&spec.id, &detail);
                    return Err(ClientError::Refused {
                        gid: inner.gid.clone(),
                        branch: spec.id.clone(),
                        detail,
                    });
                }
                Ok((Reply::StillWorking, _)) => "the participant is still working (425)".to_owned(),
                Ok((Reply::Unknown, answer)) => detail_of(&answer),
                Err(e) => e.to_string(),
            };
            if attempt >= inner.try_attempts {
                return Err(ClientError::TryUnknown {
                    gid: inner.gid.clone(),
                    branch: spec.id.clone(),
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
        try_url: &str,
        spec: &BranchSpec,
        body: &[u8],
    ) -> Result<(Reply, Vec<u8>), reqwest::Error> {
        let inner = &self.inner;
        let (gid, id, op) = (&inner.gid, &spec.id, BranchOp::Try.as_str());
        let mut request = inner
            .client
            .http()
            .post(try_url)
            .timeout(Duration::from_millis(inner.options.request_timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_GID, gid)
            .header(HEADER_BRANCH, id)
            .header(HEADER_OP, op)
            .header(HEADER_MODE, Mode::Tcc.as_str())
            .header(HEADER_TRACEPARENT, traceparent(gid));
        for (name, value) in &spec.headers {
            request = request.header(name, value);
        }
        if let Some(key) = inner.client.signing_key() {
            let target = request_target(try_url);
            let call = SignedCall {
                method: "POST",
                target: &target,
                body,
                gid,
                branch: id,
                op,
                mode: Mode::Tcc.as_str(),
            };
            request = request.header(HEADER_SIGNATURE, sign_now(key, &call));
        }
        let response = request.body(body.to_vec()).send().await?;
        let reply = Reply::from_status(response.status().as_u16());
        let answer = response.bytes().await?;
        Ok((reply, answer.to_vec()))
    }
}

/// Aborts, saying `why`; a refusal because the transaction is already
/// deciding or final is fine, anything else is logged (the deadline aborts
/// it anyway).
async fn abort_quietly(client: &Client, home: &Arc<Endpoint>, gid: &str, why: &AbortRequest) {
    match client.abort_at(gid, Some(home), why).await {
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
    home: Arc<Endpoint>,
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
                let (client, home) = (self.client.clone(), self.home.clone());
                runtime.spawn(async move {
                    abort_quietly(&client, &home, &gid, &AbortRequest::default()).await
                });
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
