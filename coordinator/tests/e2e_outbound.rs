//! Whom dtx calls, end to end through a real `dtx serve`: a URL in a denied
//! range is refused at registration and nothing is stored; a host name that
//! resolves to a denied address is registered but never called, and the
//! branch's error names the policy; an allowed participant is called; and
//! the credentials and query of a URL reach neither errors, history nor log.
//!
//! Only loopback is called. To show the connect-time check, the policy
//! allows 127.0.0.2 alone and a branch names `localhost`, which resolves to
//! 127.0.0.1, where a participant listens.

mod common;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::post;
use common::*;
use dtx_tests::participant::FakeParticipant;
use dtx_tests::process::Http;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Serves `router` on `ip`, port 0, until the test ends.
async fn serve_on(ip: &str, router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A participant answering 200 `{}` on every path, counting the calls.
async fn counting_participant(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().fallback(post(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    }));
    (serve_on(ip, router).await, calls)
}

fn saga_to(gid: &str, action: &str, compensate: &str) -> Value {
    json!({"gid": gid, "mode": "saga", "options": fast_options(), "branches": [
        {"id": "pay", "action": action, "compensate": compensate},
    ]})
}

/// Registers `body` and expects a 400 problem document; returns its detail.
async fn refused(c: &Coordinator, path: &str, body: &Value) -> String {
    let (code, problem, content_type) = Http::new().post_json(&c.url(path), body).await;
    assert_eq!(code, 400, "{problem}");
    assert_eq!(content_type, "application/problem+json", "{problem}");
    problem["detail"].as_str().unwrap_or_default().to_owned()
}

async fn absent(c: &Coordinator, gid: &str) {
    let (code, t) = Http::new()
        .get_json(&c.url(&format!("/v1/transactions/{gid}")))
        .await;
    assert_eq!(code, 404, "nothing was stored: {t}");
}

/// Every `last_error` of the branches and every event detail of `t`.
fn error_texts(t: &Value) -> Vec<String> {
    let branches = t["branches"].as_array().into_iter().flatten();
    let events = t["events"].as_array().into_iter().flatten();
    branches
        .filter_map(|b| b["last_error"].as_str())
        .chain(events.filter_map(|e| e["detail"].as_str()))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_url_in_a_denied_range_is_refused_at_registration_and_nothing_is_stored() {
    let c = Coordinator::sqlite(&[]).await;
    for (i, (url, why)) in [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://169.254.10.1:8080/x", "link-local"),
        ("http://[fe80::1]:8080/x", "link-local"),
        ("http://0.0.0.0:8080/x", "unspecified"),
        ("http://[::]:8080/x", "unspecified"),
    ]
    .into_iter()
    .enumerate()
    {
        let gid = format!("denied-{i}");
        let detail = refused(
            &c,
            "/v1/transactions",
            &saga_to(&gid, url, "http://127.0.0.1:9/c"),
        )
        .await;
        assert!(
            detail.contains("outbound policy") && detail.contains(why),
            "{url}: {detail}"
        );
        absent(&c, &gid).await;
    }

    // The answer quotes the URL without its credentials or query.
    let secret_url = "http://user:pw@169.254.169.254/?token=abc";
    let detail = refused(
        &c,
        "/v1/transactions",
        &saga_to("denied-secret", secret_url, secret_url),
    )
    .await;
    assert!(
        detail.contains("URL `http://<hidden>@169.254.169.254/?<hidden"),
        "{detail}"
    );
    assert!(
        !detail.contains("pw") && !detail.contains("abc"),
        "{detail}"
    );

    // A TCC branch registered on its own is checked by the same rules.
    let http = Http::new();
    let (code, t, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": "tcc-denied", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let branch = json!({"id": "b", "confirm": "http://169.254.169.254/c",
                        "cancel": "http://127.0.0.1:9/x"});
    let detail = refused(&c, "/v1/transactions/tcc-denied/branches", &branch).await;
    assert!(detail.contains("metadata"), "{detail}");
    let (_, t) = http.get_json(&c.url("/v1/transactions/tcc-denied")).await;
    assert_eq!(t["branches"], json!([]), "no branch was stored: {t}");
}

#[tokio::test]
async fn with_a_list_an_address_outside_it_is_refused_at_registration() {
    let c = Coordinator::sqlite(&["--allow-participants", "127.0.0.1/32"]).await;
    let detail = refused(
        &c,
        "/v1/transactions",
        &saga_to("outside", "http://127.0.0.2:8080/a", "http://127.0.0.1:9/c"),
    )
    .await;
    assert!(
        detail.contains("outbound policy") && detail.contains("127.0.0.2"),
        "{detail}"
    );
    absent(&c, "outside").await;
}

#[tokio::test]
async fn a_name_that_resolves_to_a_denied_address_is_registered_but_never_called() {
    let c = Coordinator::sqlite(&["--allow-participants", "127.0.0.2/32"]).await;
    // Listens on 127.0.0.1, where `localhost` resolves.
    let p = FakeParticipant::start().await;
    let port = p.addr().port();
    let body = saga_to(
        "rebound",
        &format!("http://localhost:{port}/pay/action"),
        &format!("http://localhost:{port}/pay/compensate"),
    );
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "a name may resolve into the list: {t}");
    let t = wait_until(&c, "rebound", Duration::from_secs(20), |t| {
        t["branches"][0]["attempts"].as_u64() >= Some(2)
    })
    .await;
    let error = t["branches"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("outbound policy") && error.contains("`localhost`"),
        "the branch's error names the policy: {t:#}"
    );
    assert_eq!(
        status(&t),
        "running",
        "a denied call is unknown, retried: {t:#}"
    );
    assert!(p.calls().is_empty(), "never called: {:?}", paths(&p));
}

#[tokio::test]
async fn an_allowed_participant_is_called_and_the_saga_commits() {
    let c = Coordinator::sqlite(&["--allow-participants", "127.0.0.2/32"]).await;
    let (participant, calls) = counting_participant("127.0.0.2").await;
    let body = json!({"gid": "allowed", "mode": "saga", "options": fast_options(), "branches": [
        {"id": "a", "action": format!("http://{participant}/a/action"),
         "compensate": format!("http://{participant}/a/compensate")},
        {"id": "b", "action": format!("http://{participant}/b/action"),
         "compensate": format!("http://{participant}/b/compensate")},
    ]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    let t = wait_final(&c, "allowed").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "both actions, once each");
}

#[tokio::test]
async fn credentials_and_queries_of_urls_reach_no_error_history_or_log() {
    let c = Coordinator::sqlite(&[]).await;
    // Nothing listens on port 1: every call is a connection error.
    let unreachable = "http://user:pw@127.0.0.1:1/x?token=abc";
    let (code, t, _) = Http::new()
        .post_json(
            &c.url("/v1/transactions"),
            &saga_to("secret-unreachable", unreachable, unreachable),
        )
        .await;
    assert_eq!(code, 201, "{t}");

    // A redirect whose target carries credentials and a query.
    let redirector = serve_on(
        "127.0.0.1",
        Router::new().fallback(post(|| async {
            (
                StatusCode::FOUND,
                [(header::LOCATION, "http://admin:pw@elsewhere/next?token=abc")],
            )
        })),
    )
    .await;
    let redirected = format!("http://{redirector}/pay/action");
    let (code, t, _) = Http::new()
        .post_json(
            &c.url("/v1/transactions"),
            &saga_to("secret-redirect", &redirected, &redirected),
        )
        .await;
    assert_eq!(code, 201, "{t}");

    for (gid, expected) in [
        ("secret-unreachable", "cannot connect"),
        (
            "secret-redirect",
            "redirect to `http://<hidden>@elsewhere/next?<hidden>`",
        ),
    ] {
        let t = wait_until(&c, gid, Duration::from_secs(20), |t| {
            t["branches"][0]["attempts"].as_u64() >= Some(2)
        })
        .await;
        let texts = error_texts(&t);
        assert!(
            texts.iter().any(|text| text.contains(expected)),
            "{gid}: {texts:#?}"
        );
        for text in &texts {
            assert!(
                !text.contains("pw") && !text.contains("abc"),
                "{gid}: a secret in {text:?}"
            );
        }
        // The view shows branch URLs without their secrets too.
        let shown = t["branches"][0].to_string();
        assert!(
            !shown.contains("pw") && !shown.contains("abc") && shown.contains("<hidden>"),
            "{gid}: a secret in the view's branch {shown}"
        );
    }
    let log = c.process.log();
    assert!(
        !log.contains("user:pw") && !log.contains("token=abc"),
        "a secret in the log:\n{log}"
    );
}
