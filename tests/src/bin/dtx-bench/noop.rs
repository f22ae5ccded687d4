//! The no-op participants: one lean axum server that answers every POST at
//! once with 200 `{}`, whatever the path, so that what is measured is the
//! coordinator and not the business.
//!
//! Paths under `/notify/` answer the same way and also tell a waiting
//! client that a transaction's last call arrived ([`Completions`]). Only the
//! peer needs that: DTM's submit returns before the transaction is done, and
//! this lets the bench learn when it is (nearly) done without polling the
//! peer in a tight loop (see `peer.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What every call gets back: the smallest JSON both coordinators accept as
/// success (dtmrs reads a body containing `FAILURE` as a refusal).
const ANSWER: &str = "{}";

/// Clients waiting for the last calls of their transaction, keyed by gid.
#[derive(Debug, Default)]
pub struct Completions {
    waiting: Mutex<HashMap<String, Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    /// Calls still to arrive before the client is told.
    remaining: u32,
    done: oneshot::Sender<()>,
}

impl Completions {
    /// Registers a client that wants to know when `calls` calls to a
    /// `/notify/` path carrying `?gid=<gid>` have arrived. Call it before
    /// the request that starts them.
    pub fn expect(&self, gid: &str, calls: u32) -> oneshot::Receiver<()> {
        let (done, receiver) = oneshot::channel();
        self.lock().insert(
            gid.to_owned(),
            Waiter {
                remaining: calls,
                done,
            },
        );
        receiver
    }

    /// Forgets a client that gave up (error or timeout), so the map does
    /// not grow during a long run with failures.
    pub fn forget(&self, gid: &str) {
        self.lock().remove(gid);
    }

    fn arrived(&self, gid: &str) {
        let mut waiting = self.lock();
        let finished = match waiting.get_mut(gid) {
            Some(waiter) => {
                waiter.remaining = waiter.remaining.saturating_sub(1);
                waiter.remaining == 0
            }
            // A repeated call after the client was told, or a gid nobody
            // waits for: nothing to do.
            None => false,
        };
        if finished && let Some(waiter) = waiting.remove(gid) {
            let _ = waiter.done.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running participant server. Dropping it stops the server.
#[derive(Debug)]
pub struct NoopParticipants {
    addr: SocketAddr,
    completions: Arc<Completions>,
    server: JoinHandle<()>,
}

impl NoopParticipants {
    /// Binds 127.0.0.1 on a free port, then serves on it in a task.
    pub async fn start() -> std::io::Result<NoopParticipants> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let completions = Arc::new(Completions::default());
        let app = Router::new()
            .route("/notify/{*rest}", post(notify))
            .fallback(answer)
            .with_state(completions.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("dtx-bench: the no-op participant server stopped: {e}");
            }
        });
        Ok(NoopParticipants {
            addr,
            completions,
            server,
        })
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The waiters that `/notify/` paths wake.
    pub fn completions(&self) -> Arc<Completions> {
        self.completions.clone()
    }
}

impl Drop for NoopParticipants {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads the body before answering: hyper can only reuse a keep-alive
/// connection once the request body has been consumed.
async fn answer(_body: Bytes) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], ANSWER)
}

/// DTM's convention: the coordinator names the transaction in the query.
#[derive(Deserialize)]
struct GidQuery {
    #[serde(default)]
    gid: String,
}

async fn notify(
    State(completions): State<Arc<Completions>>,
    Query(query): Query<GidQuery>,
    _body: Bytes,
) -> impl IntoResponse {
    completions.arrived(&query.gid);
    ([(CONTENT_TYPE, "application/json")], ANSWER)
}
