//! The API's handlers: parse, check, ask the engine, answer.

use super::AppState;
use super::problem::{ApiError, Json, Query};
use super::requests::{
    ListParams, RegisterRequest, WaitQuery, check_gid, check_tcc_branch, new_transaction,
};
use crate::engine::{Registered, Verdict};
use crate::store::{BranchRegistered, Event, Page, TransactionRecord};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use dtx_protocol::{BranchSpec, Decision, Mode, Status};
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

fn wait_of(state: &AppState, query: &WaitQuery) -> Option<Duration> {
    query
        .wait_ms
        .filter(|&ms| ms > 0)
        .map(|ms| Duration::from_millis(ms).min(state.max_wait))
}

pub(super) async fn register(
    State(state): State<AppState>,
    Query(wait): Query<WaitQuery>,
    Json(request): Json<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let new = new_transaction(request)?;
    let (code, record) = match state.engine.register(new).await? {
        Registered::Created(record) => (StatusCode::CREATED, *record),
        Registered::Existing(record) => (StatusCode::OK, *record),
    };
    let record = match wait_of(&state, &wait) {
        Some(timeout) => state.engine.wait(&record.gid, timeout).await?,
        None => record,
    };
    let location = format!("/v1/transactions/{}", record.gid);
    Ok((
        code,
        [(header::LOCATION, location)],
        Json(TransactionView {
            record,
            events: None,
        }),
    ))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    Query(wait): Query<WaitQuery>,
) -> Result<Json<TransactionView>, ApiError> {
    check_gid(&gid)?;
    let record = match wait_of(&state, &wait) {
        Some(timeout) => state.engine.wait(&gid, timeout).await?,
        None => state
            .engine
            .store()
            .get(&gid)
            .await
            .map_err(crate::engine::EngineError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("transaction `{gid}` does not exist")))?,
    };
    let events = state
        .engine
        .store()
        .events(&gid)
        .await
        .map_err(crate::engine::EngineError::from)?;
    Ok(Json(TransactionView {
        record,
        events: Some(events),
    }))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, ApiError> {
    let query = params.into_query()?;
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
    Path(gid): Path<String>,
    Json(spec): Json<BranchSpec>,
) -> Result<impl IntoResponse, ApiError> {
    check_gid(&gid)?;
    check_tcc_branch(&spec)?;
    let branch = spec.id.clone();
    let (code, index) = match state.engine.register_branch(&gid, spec).await? {
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
    gid: Path<String>,
    wait: Query<WaitQuery>,
) -> Result<Json<TransactionView>, ApiError> {
    decide(state, gid, wait, Verdict::Commit).await
}

pub(super) async fn abort(
    state: State<AppState>,
    gid: Path<String>,
    wait: Query<WaitQuery>,
) -> Result<Json<TransactionView>, ApiError> {
    decide(state, gid, wait, Verdict::Abort).await
}

async fn decide(
    State(state): State<AppState>,
    Path(gid): Path<String>,
    Query(wait): Query<WaitQuery>,
    verdict: Verdict,
) -> Result<Json<TransactionView>, ApiError> {
    check_gid(&gid)?;
    state.engine.decide(&gid, verdict).await?;
    let timeout = wait_of(&state, &wait).unwrap_or(Duration::ZERO);
    let record = state.engine.wait(&gid, timeout).await?;
    Ok(Json(TransactionView {
        record,
        events: None,
    }))
}

/// The answer to a termination query.
#[derive(Serialize)]
pub struct DecisionView {
    gid: String,
    /// `None` when dtx has no record of the transaction.
    mode: Option<Mode>,
    status: Option<Status>,
    decision: Decision,
}

/// `GET /v1/transactions/{gid}/decision`: what a participant in doubt (a
/// prepared 2PC branch, a 3PC branch past its timeout) must do. A gid with no
/// record is answered `abort`: 2PC presumes abort, and a participant can only
/// have prepared for a transaction that was registered first.
pub(super) async fn decision(
    State(state): State<AppState>,
    Path(gid): Path<String>,
) -> Result<Json<DecisionView>, ApiError> {
    check_gid(&gid)?;
    let record = state
        .engine
        .store()
        .get(&gid)
        .await
        .map_err(crate::engine::EngineError::from)?;
    let (mode, status) = match &record {
        Some(r) => (Some(r.mode), Some(r.status)),
        None => (None, None),
    };
    Ok(Json(DecisionView {
        gid,
        mode,
        status,
        decision: Decision::of(status),
    }))
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

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics().render(),
    )
}

pub(super) async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API lives under /v1 (see the README)".into())
}
