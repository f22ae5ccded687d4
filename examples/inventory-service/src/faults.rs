//! A demo and test aid, not something a real service would ship: injected
//! faults on the branch endpoints, and a log of every branch call received.
//!
//! `POST /faults {"path": "/saga/reserve", "kind": "fail", "count": 2}` makes
//! the next two calls to that path answer 500 without touching anything.
//! Kinds:
//! - `fail`: answer 500 before the handler runs (the call never happened);
//! - `fail_after`: run the handler, then answer 500 anyway (the work is done
//!   but the answer is lost, so the retry must be a no-op);
//! - `slow`: wait `delay_ms` before the handler runs.
//!
//! `GET /calls` lists every branch call (gid, path, status) so the demo can
//! count attempts per order.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dtx_sdk::BranchAnswer;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to the next calls of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer 500 without running the handler.
    Fail,
    /// Run the handler, then answer 500 (a lost answer).
    FailAfter,
    /// Wait `delay_ms`, then run the handler normally.
    Slow,
}

/// A fault armed on one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The route, e.g. `/tcc/confirm`.
    pub path: String,
    /// What happens.
    pub kind: FaultKind,
    /// How many of the next calls are affected.
    pub count: u32,
    /// For `slow`: how long to wait.
    #[serde(default)]
    pub delay_ms: u64,
}

/// One branch call as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The `dtx-gid` header, if any.
    pub gid: Option<String>,
    /// The `dtx-branch` header, if any.
    pub branch: Option<String>,
    /// The route called.
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Armed faults and the call log, shared by the middleware and the routes.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    armed: Arc<Mutex<HashMap<String, Fault>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Faults {
    /// Arms `fault`, replacing any fault on the same path.
    pub fn arm(&self, fault: Fault) {
        tracing::warn!(?fault, "fault armed (demo/test aid)");
        self.lock_armed().insert(fault.path.clone(), fault);
    }

    /// Takes one use of the fault on `path`, if one is armed.
    fn take(&self, path: &str) -> Option<Fault> {
        let mut armed = self.lock_armed();
        let fault = armed.get_mut(path)?;
        let taken = fault.clone();
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            armed.remove(path);
        }
        (taken.count > 0).then_some(taken)
    }

    /// Every branch call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_armed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fault>> {
        // A panic elsewhere must not turn every later call into a panic.
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Middleware on the branch routes: applies an armed fault and logs the call.
pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let (gid, branch) = (header(&request, "dtx-gid"), header(&request, "dtx-branch"));
    let response = match faults.take(&path) {
        Some(fault) if fault.kind == FaultKind::Fail => {
            tracing::warn!(path, ?gid, "injected failure before the handler");
            injected_failure()
        }
        Some(fault) if fault.kind == FaultKind::FailAfter => {
            let _ = next.run(request).await;
            tracing::warn!(path, ?gid, "injected failure after the handler");
            injected_failure()
        }
        Some(fault) => {
            tracing::warn!(path, ?gid, delay_ms = fault.delay_ms, "injected delay");
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            next.run(request).await
        }
        None => next.run(request).await,
    };
    faults
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Call {
            gid,
            branch,
            path,
            status: response.status().as_u16(),
        });
    response
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn injected_failure() -> Response {
    BranchAnswer::unknown("injected failure (demo/test fault)").into_response()
}

/// `POST /faults`.
pub async fn arm(State(faults): State<Faults>, Json(fault): Json<Fault>) -> StatusCode {
    faults.arm(fault);
    StatusCode::NO_CONTENT
}

/// `GET /calls`.
pub async fn calls(State(faults): State<Faults>) -> Json<Vec<Call>> {
    Json(faults.calls())
}
