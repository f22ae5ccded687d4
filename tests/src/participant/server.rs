//! The HTTP side of the fake participant: accept loop, connections and the
//! one axum handler that records each call and carries out its [`Answer`].
//!
//! It runs its own accept loop on hyper instead of `axum::serve` because
//! [`Answer::Drop`] and a stop must close individual connections without
//! writing a response, and `axum::serve` has no way to do that.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Duration, Instant};
use tower::ServiceExt as _;

use super::{Answer, Call, Shared};

/// The server of one run (between start or restart and stop).
#[derive(Debug)]
pub(super) struct Running {
    /// Set to `true` to stop: the accept loop ends, idle connections close
    /// and every hanging or delayed answer drops its connection.
    pub(super) shutdown: watch::Sender<bool>,
    /// The accept loop; it owns the connection tasks in a `JoinSet`, so
    /// aborting it cuts every connection too.
    pub(super) task: JoinHandle<()>,
}

/// State of the axum handler for one run.
#[derive(Clone)]
struct RunState {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// Put on a response to tell the connection task to close the connection
/// instead of writing the response.
#[derive(Clone, Copy)]
struct DropConnection;

pub(super) fn serve(listener: TcpListener, shared: Arc<Shared>) -> Running {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let router = Router::new().fallback(handle).with_state(RunState {
        shared,
        shutdown: shutdown_rx.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, router, shutdown_rx));
    Running { shutdown, task }
}

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    // Dropping this set (when the loop ends or is aborted) aborts every
    // connection task, so nothing outlives the server.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
                }
                // Usually EMFILE; back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            () = stopped(&mut shutdown) => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                // hyper closes the connection, without writing anything,
                // when the service fails.
                return Err(std::io::Error::other("scripted Answer::Drop"));
            }
            Ok::<_, std::io::Error>(response)
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    State(run): State<RunState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw_body: body,
        at: Instant::now(),
    };
    let answer = run.shared.record(call);
    give(answer, run.shutdown).await
}

/// Carries out `answer`; every wait gives up when the server stops.
async fn give(mut answer: Answer, mut shutdown: watch::Receiver<bool>) -> Response {
    let drop_connection = || {
        let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        response.extensions_mut().insert(DropConnection);
        response
    };
    loop {
        match answer {
            Answer::Status(code) => return json_response(code, json!({})),
            Answer::Json(code, body) => return json_response(code, body),
            Answer::ReadOnlyVote => {
                let mut response = json_response(200, json!({}));
                response.headers_mut().insert(
                    dtx_protocol::wire::HEADER_VOTE,
                    header::HeaderValue::from_static(dtx_protocol::wire::VOTE_READ_ONLY),
                );
                return response;
            }
            Answer::Delay(delay, inner) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => answer = *inner,
                    () = stopped(&mut shutdown) => return drop_connection(),
                }
            }
            Answer::Hang => {
                stopped(&mut shutdown).await;
                return drop_connection();
            }
            Answer::Drop => return drop_connection(),
        }
    }
}

/// Resolves once the server is told to stop (or its sender is gone). The
/// borrow of the channel ends inside, so callers' futures stay `Send`.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn json_response(code: u16, body: Value) -> Response {
    // Validated when scripted, so the fallback to 500 cannot happen.
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
