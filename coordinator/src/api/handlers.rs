//! The API's handlers: parse, check, ask the engine, answer.

use super::AppState;
use super::problem::{ApiError, Json, OptionalJson, Query};
use super::requests::{
    DecisionQuery, ListParams, RegisterRequest, WaitQuery, check_gid, check_tcc_branch,
    new_transaction,
};
use crate::auth::{Authenticated, Caller};
use crate::engine::{Asked, RefusedTry, Registered, Verdict};
use crate::outbound::redacted_url;
use crate::store::{BranchRegistered, Event, Page, TransactionRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use dtx_protocol::signature::{DecisionNonce, unix_now};
use dtx_protocol::spec::check_branch_id;
use dtx_protocol::wire::AbortRequest;
use dtx_protocol::wire::HEADER_SIGNATURE;
use dtx_protocol::{BranchSpec, DecisionAnswer};
use serde::Serialize;
use std::time::Duration;

/// A transaction as the API shows it.
#[derive(Serialize)]
pub struct TransactionView {
    #[serde(flatten)]
    record: TransactionRecord,
    /// History, oldest first; present on `GET /v1/transactions/{gid}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Event>>,
}

impl TransactionView {
    /// The view of `record`: branch URLs are shown without credentials or
    /// query strings, which may hold participants' secrets (the calls use
    /// them as registered).
    fn of(mut record: TransactionRecord, events: Option<Vec<Event>>) -> TransactionView {
        for branch in &mut record.branches {
            for url in branch.spec.urls.values_mut() {
                *url = redacted_url(url);
            }
        }
        TransactionView { record, events }
    }
}

fn wait_of(state: &AppState, query: &WaitQuery) -> Option<Duration> {
    query
        .wait_ms
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms).min(state.max_wait))
}

/// Waits up to `timeout` for `gid` to be final, holding one of the
/// `--max-waiters` permits; without a free permit, a 503 at once.
async fn wait_bounded(
    state: &AppState,
    gid: &str,
    timeout: Duration,
) -> Result<TransactionRecord, ApiError> {
    let _permit = state.waiters.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} requests are already waiting for outcomes (`--max-waiters`); retry later, \
             or ask without `wait_ms`",
            state.limits.max_waiters
        ))
    })?;
    Ok(state.engine.wait(gid, timeout).await?)
}

/// Answers 404 unless `caller` may see the transaction `gid`: another
/// namespace's transaction is answered as if it did not exist. Operators see
/// every namespace and skip the read.
async fn check_visible(state: &AppState, caller: &Caller, gid: &str) -> Result<(), ApiError> {
    if caller.listing_namespace().is_none() {
        return Ok(());
    }
    visible_record(state, caller, gid).await.map(drop)
}

/// The transaction `gid`, if it exists and `caller` may see it; else 404.
async fn visible_record(
    state: &AppState,
    caller: &Caller,
    gid: &str,
) -> Result<TransactionRecord, ApiError> {
    let record = state
        .engine
        .store()
        .get(gid)
        .await
        .map_err(crate::engine::EngineError::from)?;
    match record {
        Some(record) if caller.sees(&record.namespace) => Ok(record),
        _ => Err(no_such_transaction(gid)),
    }
}

fn no_such_transaction(gid: &str) -> ApiError {
    ApiError::NotFound(format!("transaction `{gid}` does not exist"))
}

pub(super) async fn register(
    State(state): State<AppState>,
    caller: Authenticated,
    Query(wait): Query<WaitQuery>,
    Json(request): Json<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.writer()?;
    let mut new = new_transaction(request, &state.outbound, &state.limits)?;
    new.namespace = caller.namespace.clone();
    new.registered_by = caller.token_name().map(str::to_owned);
    let (code, record) = match state.engine.register(new).await? {
        Registered::Created(record) => (StatusCode::CREATED, *record),
        Registered::Existing(record) => (StatusCode::OK, *record),
    };
    if !caller.sees(&record.namespace) {
        // The same body under a gid another namespace holds: the gid is
        // taken, and nothing of that transaction is shown.
        return Err(ApiError::Conflict(format!(
            "gid `{}` is already in use; choose another",
            record.gid
        )));
    }
    let record = match wait_of(&state, &wait) {
        Some(timeout) => wait_bounded(&state, &record.gid, timeout).await?,
        None => record,
    };
    let location = format!("/v1/transactions/{}", record.gid);
    Ok((
        code,
        [(header::LOCATION, location)],
        Json(TransactionView::of(record, None)),
    ))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(gid): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> Result<Json<TransactionView>, ApiError> {
    check_gid(&gid)?;
    let record = match wait_of(&state, &wait) {
        Some(timeout) => {
            check_visible(&state, &caller, &gid).await?;
            wait_bounded(&state, &gid, timeout).await?
        }
        // One read serves both the namespace check and the answer.
        None => visible_record(&state, &caller, &gid).await?,
    };
    let events = state
        .engine
        .store()
        .events(&gid)
        .await
        .map_err(crate::engine::EngineError::from)?;
    Ok(Json(TransactionView::of(record, Some(events))))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, ApiError> {
    let mut query = params.into_query()?;
    query.namespace = caller.listing_namespace().map(str::to_owned);
    let page = state
        .engine
        .store()
        .list(query)
        .await
        .map_err(crate::engine::EngineError::from)?;
    Ok(Json(page))
}

#[derive(Serialize)]
pub(super) struct BranchAnswer {
    gid: String,
    branch: String,
    index: u32,
}

pub(super) async fn register_branch(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(gid): Path<String>,
    Json(spec): Json<BranchSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.writer()?;
    check_gid(&gid)?;
    check_tcc_branch(&spec, &state.outbound, &state.limits)?;
    let record = visible_record(&state, &caller, &gid).await?;
    if !record.branches.iter().any(|b| b.spec.id == spec.id) {
        // Not exact under concurrent registrations of one transaction (two
        // may pass at the limit minus one): a bound on size, not a rule of
        // the protocol.
        state.limits.check_branch_count(record.branches.len() + 1)?;
    }
    let branch = spec.id.clone();
    let registered = state
        .engine
        .register_branch(&gid, spec, caller.token_name())
        .await?;
    let (code, index) = match registered {
        BranchRegistered::Added(i) => (StatusCode::CREATED, i),
        BranchRegistered::AlreadyRegistered(i) => (StatusCode::OK, i),
        BranchRegistered::IdConflict | BranchRegistered::NotOpen(_) => {
            return Err(ApiError::Internal);
        }
    };
    Ok((code, Json(BranchAnswer { gid, branch, index })))
}

pub(super) async fn commit(
    state: State<AppState>,
    caller: Authenticated,
    gid: Path<String>,
    wait: Query<WaitQuery>,
) -> Result<Json<TransactionView>, ApiError> {
    decide(state, caller, gid, wait, Verdict::Commit, None).await
}

/// `POST /v1/transactions/{gid}/abort`, with an optional body
/// ([`AbortRequest`]) naming the refused Try behind the abort.
pub(super) async fn abort(
    state: State<AppState>,
    caller: Authenticated,
    gid: Path<String>,
    wait: Query<WaitQuery>,
    OptionalJson(body): OptionalJson<AbortRequest>,
) -> Result<Json<TransactionView>, ApiError> {
    let refused_try = body.and_then(|b| b.refused_try);
    if let Some(refused) = &refused_try {
        check_branch_id(&refused.branch)
            .map_err(|e| ApiError::BadRequest(format!("refused_try.branch: {e}")))?;
    }
    decide(state, caller, gid, wait, Verdict::Abort, refused_try).await
}

async fn decide(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(gid): Path<String>,
    Query(wait): Query<WaitQuery>,
    verdict: Verdict,
    refused_try: Option<RefusedTry>,
) -> Result<Json<TransactionView>, ApiError> {
    let caller = caller.writer()?;
    check_gid(&gid)?;
    check_visible(&state, &caller, &gid).await?;
    let asked = Asked {
        by: caller.token_name().map(str::to_owned),
        refused_try,
    };
    state.engine.decide(&gid, verdict, asked).await?;
    let record = match wait_of(&state, &wait) {
        Some(timeout) => wait_bounded(&state, &gid, timeout).await?,
        None => state.engine.wait(&gid, Duration::ZERO).await?,
    };
    Ok(Json(TransactionView::of(record, None)))
}

/// `GET /v1/transactions/{gid}/decision`: what a participant in doubt (a
/// prepared 2PC branch, a 3PC branch past its timeout) must do. A gid with no
/// record is answered `abort`: 2PC presumes abort, and a participant can only
/// have prepared for a transaction that was registered first.
///
/// With a signing key the answer carries `dtx-signature` over the answer and
/// the question's `?nonce=` (one drawn here when it has none), so that a
/// participant acts only on what this coordinator said to its question.
pub(super) async fn decision(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(gid): Path<String>,
    Query(question): Query<DecisionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    check_gid(&gid)?;
    let nonce = question.nonce()?;
    let record = state
        .engine
        .store()
        .get(&gid)
        .await
        .map_err(crate::engine::EngineError::from)?;
    let (mode, status) = match &record {
        // Never "abort" (the answer for no record) for a transaction the
        // caller may not see: a participant asking with the wrong token
        // would roll back work that committed.
        Some(r) if !caller.sees(&r.namespace) => return Err(no_such_transaction(&gid)),
        Some(r) => (Some(r.mode), Some(r.status)),
        None => (None, None),
    };
    let answer = DecisionAnswer::of(gid, mode, status);
    let signature = state.signing_key.as_ref().map(|key| {
        let nonce = nonce.unwrap_or_else(|| DecisionNonce::from_bytes(rand::random()));
        [(
            HEADER_SIGNATURE,
            key.sign_decision(&answer, unix_now(), &nonce),
        )]
    });
    Ok((signature, Json(answer)))
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state
        .engine
        .store()
        .ping()
        .await
        .map_err(crate::engine::EngineError::from)?;
    Ok("ready\n")
}

/// `/metrics` on the API's listener: needs a token (any role) when the API
/// has tokens.
pub(super) async fn metrics(
    State(state): State<AppState>,
    _caller: Authenticated,
) -> impl IntoResponse {
    metrics_text(&state.engine)
}

/// `/metrics` on its own listener (`--metrics-listen`): open, for a
/// scraper on a network the operator chose.
pub(super) async fn open_metrics(State(engine): State<crate::engine::Engine>) -> impl IntoResponse {
    metrics_text(&engine)
}

fn metrics_text(engine: &crate::engine::Engine) -> impl IntoResponse + use<> {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        engine.metrics().render(),
    )
}

pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API lives under /v1 (see the README)".into())
}
