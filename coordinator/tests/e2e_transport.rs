//! What participants answer, end to end through a real `dtx serve`: a
//! redirect is an unknown answer and is never followed, and an error body
//! holding a NUL is stored on PostgreSQL like any other.
//!
//! The answers the fake participant cannot give (a `Location` header, a body
//! that is not JSON) come from a small axum server of this file, on
//! 127.0.0.1:0.

mod common;

use common::*;
use dtx_tests::participant::FakeParticipant;
use dtx_tests::postgres::fresh_database;
use dtx_tests::process::Http;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::post;

/// Serves `router` on a fresh loopback port until the test ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A route that counts its calls and answers the `n`th (from 0) with
/// `answer(n)`.
fn counted<F, R>(calls: Arc<AtomicUsize>, answer: F) -> axum::routing::MethodRouter
where
    F: Fn(usize) -> R + Clone + Send + Sync + 'static,
    R: axum::response::IntoResponse,
{
    post(move || {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let response = answer(n).into_response();
        async move { response }
    })
}

fn events_with(t: &Value, needle: &str) -> Vec<String> {
    t["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["detail"].as_str())
        .filter(|d| d.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_redirected_action_is_never_success_and_the_saga_compensates_at_its_deadline() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    // Followed, the 302 led to a page answering 200 (the fake answers every
    // path and method so), and the saga committed although no action ran.
    let landing = p.url("/pay/landed");
    let redirects = Arc::new(AtomicUsize::new(0));
    let redirector = serve(Router::new().route(
        "/pay/action",
        counted(redirects.clone(), move |_| {
            (StatusCode::FOUND, [(header::LOCATION, landing.clone())])
        }),
    ))
    .await;
    let mut options = fast_options();
    options["deadline_ms"] = json!(1500);
    let body = json!({"gid": "redirected-1", "mode": "saga", "options": options, "branches": [
        saga_branch(&p, "stock"),
        {"id": "pay", "action": format!("http://{redirector}/pay/action"),
         "compensate": p.url("/pay/compensate")},
    ]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    let t = wait_final(&c, "redirected-1").await;
    assert_eq!(status(&t), "aborted", "{t:#}");
    assert_eq!(p.count("/pay/landed"), 0, "the redirect was never followed");
    assert!(
        redirects.load(Ordering::SeqCst) >= 2,
        "a redirect is unknown, so the action was retried"
    );
    assert!(
        !events_with(&t, "HTTP 302: redirect to").is_empty(),
        "the history keeps the 302 and where it pointed: {t:#}"
    );
    // The action's outcome was unknown, so it may have run: both branches
    // are compensated, newest first.
    assert_eq!(
        paths(&p),
        ["/stock/action", "/pay/compensate", "/stock/compensate"]
    );
}

#[tokio::test]
async fn an_error_body_with_nul_is_stored_on_postgres_and_the_saga_commits() {
    let db = fresh_database()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let c = Coordinator::on(&db, "pg-nul", &[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let participant = serve(
        Router::new()
            .route(
                "/a/action",
                counted(calls.clone(), |n| match n {
                    0 => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        b"boom\0 at start".to_vec(),
                    ),
                    _ => (StatusCode::OK, b"{}".to_vec()),
                }),
            )
            .route("/a/compensate", post(|| async { "{}" })),
    )
    .await;
    let body = json!({"gid": "nul-1", "mode": "saga", "options": fast_options(), "branches": [
        {"id": "a", "action": format!("http://{participant}/a/action"),
         "compensate": format!("http://{participant}/a/compensate")},
    ]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    let t = wait_final(&c, "nul-1").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one failure, one retry");
    // PostgreSQL refused the NUL in the failed call's record: that write
    // failed, the driver stopped, and another took the transaction over.
    assert_eq!(
        events_with(&t, "boom\u{FFFD} at start").len(),
        1,
        "the failed call is in the history, NUL replaced: {t:#}"
    );
    assert_eq!(t["epoch"], 1, "no driver was restarted: {t:#}");
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "takeover"),
        "{t:#}"
    );
    assert!(
        !c.process.log().contains("invalid byte sequence"),
        "{}",
        c.process.log()
    );
}
