//! Tests of the HTTP transport: signing and tracing, and calls against real
//! HTTP servers on loopback (redirects, error bodies).

use super::*;

#[test]
fn traceparent_is_stable_per_transaction() {
    let a = traceparent("g1");
    let b = traceparent("g1");
    assert_eq!(a.len(), 55);
    assert_eq!(a[..36], b[..36], "same trace id");
    assert_ne!(a[36..], b[36..], "fresh span id");
    assert_ne!(traceparent("g2")[..36], a[..36]);
}

#[test]
fn the_signature_covers_the_url_path_and_query_the_body_and_the_context() {
    use dtx_protocol::signature::{Keyring, SignatureError, SignedCall, SigningKey, Verifier};
    let key = SigningKey::new("k1", "0123456789abcdef0123456789abcdef").unwrap();
    let payload = serde_json::json!({"qty": 3});
    let headers = BTreeMap::new();
    let request = CallRequest {
        url: "http://127.0.0.1:9/stock/confirm?tenant=a",
        gid: "g",
        branch_id: "b",
        op: Op::Confirm,
        mode: Mode::Tcc,
        payload: &payload,
        headers: &headers,
        timeout: Duration::from_secs(1),
    };
    let body = serde_json::to_vec(&payload).unwrap();
    let header = sign(&key, &request, &body, 1_700_000_000, [1; 16]);
    let received = SignedCall {
        method: "POST",
        target: "/stock/confirm?tenant=a",
        body: &body,
        gid: "g",
        branch: "b",
        op: "confirm",
        mode: "tcc",
    };
    let verify = |call: &SignedCall<'_>| {
        Verifier::new(Keyring::new([key.clone()]).unwrap())
            .verify(Some(&header), call, 1_700_000_000)
            .map(str::to_owned)
    };
    assert_eq!(verify(&received), Ok("k1".to_owned()));
    for other in [
        SignedCall {
            target: "/stock/confirm",
            ..received
        },
        SignedCall {
            target: "/stock/cancel?tenant=a",
            ..received
        },
        SignedCall {
            body: b"{}",
            ..received
        },
        SignedCall {
            op: "cancel",
            ..received
        },
    ] {
        assert_eq!(verify(&other), Err(SignatureError::Mismatch), "{other:?}");
    }
}

mod over_http {
    //! Calls through [`HttpTransport`] to real servers on 127.0.0.1:0.

    use super::*;
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::routing::{any, post};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serves `router` on a fresh loopback port until the test ends.
    async fn serve(router: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    async fn call(url: &str, timeout: Duration) -> CallOutcome {
        let transport = HttpTransport::new(None).unwrap();
        let payload = serde_json::json!({"amount": 3});
        let headers = BTreeMap::new();
        transport
            .call(CallRequest {
                url,
                gid: "g1",
                branch_id: "pay",
                op: Op::Action,
                mode: Mode::Saga,
                payload: &payload,
                headers: &headers,
                timeout,
            })
            .await
    }

    #[tokio::test]
    async fn a_redirect_is_an_unknown_answer_and_never_followed() {
        let landed = Arc::new(AtomicUsize::new(0));
        let counter = landed.clone();
        let router = Router::new()
            .route(
                "/act/{code}",
                post(
                    |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                        let code = StatusCode::from_u16(code).unwrap();
                        (code, [(header::LOCATION, "/landed")], "moved")
                    },
                ),
            )
            // Answers 200 to every method: followed, any redirect "succeeds".
            .route(
                "/landed",
                any(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { "ok" }
                }),
            );
        let addr = serve(router).await;
        for code in [301, 302, 303, 307, 308] {
            let outcome = call(
                &format!("http://{addr}/act/{code}"),
                Duration::from_secs(10),
            )
            .await;
            assert_eq!(outcome.reply, Reply::Unknown, "{code}: {outcome:?}");
            assert_eq!(outcome.http_status, Some(code), "{code}: the 3xx is kept");
            let error = outcome.error.unwrap_or_default();
            assert!(
                error.starts_with(&format!("HTTP {code}: redirect to `/landed` not followed")),
                "{code}: {error:?}"
            );
        }
        assert_eq!(landed.load(Ordering::SeqCst), 0, "no redirect was followed");
    }

    #[tokio::test]
    async fn a_refusals_reason_is_its_problem_detail() {
        let router = Router::new()
            .route(
                "/problem",
                post(|| async {
                    let problem = r#"{"type":"about:blank","title":"Conflict","status":409,"detail":"not enough widget available for 3 unit(s)"}"#;
                    (StatusCode::CONFLICT, [(header::CONTENT_TYPE, "application/problem+json")], problem)
                }),
            )
            .route(
                "/text",
                post(|| async { (StatusCode::CONFLICT, "  card declined \n") }),
            )
            .route(
                "/busy",
                post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "later") }),
            );
        let addr = serve(router).await;
        let refusal = |path: &'static str| {
            let url = format!("http://{addr}{path}");
            async move { call(&url, Duration::from_secs(10)).await }
        };
        let problem = refusal("/problem").await;
        assert_eq!(problem.reply, Reply::Refused);
        assert_eq!(
            problem.refusal.as_deref(),
            Some("not enough widget available for 3 unit(s)")
        );
        assert_eq!(
            refusal("/text").await.refusal.as_deref(),
            Some("card declined")
        );
        // Not a refusal: no reason, only the error.
        let busy = refusal("/busy").await;
        assert_eq!(busy.refusal, None);
        assert_eq!(busy.error.as_deref(), Some("HTTP 503: later"));
    }

    #[tokio::test]
    async fn a_failed_answers_body_is_kept_short_and_storable() {
        let mut body = b"boom\0\x1b[31m\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 100_000));
        let router = Router::new().route(
            "/fail",
            post(move || async move { (StatusCode::INTERNAL_SERVER_ERROR, body) }),
        );
        let addr = serve(router).await;
        let outcome = call(&format!("http://{addr}/fail"), Duration::from_secs(10)).await;
        assert_eq!(
            (outcome.reply, outcome.http_status),
            (Reply::Unknown, Some(500))
        );
        let kept = "boom\u{FFFD}\u{FFFD}[31m\u{FFFD}\n";
        let expected = format!("HTTP 500: {kept}{}", "x".repeat(300 - kept.chars().count()));
        assert_eq!(outcome.error.as_deref(), Some(expected.as_str()));
    }

    /// A server whose every answer is a 500 with a chunked body that never
    /// ends: it writes until the client hangs up.
    async fn endless_error_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 500 Internal Server Error\r\n\
                                content-type: text/plain\r\n\
                                transfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("400\r\n{}\r\n", "y".repeat(0x400));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_endless_error_body_is_read_only_in_part() {
        let addr = endless_error_server().await;
        // Read to its end, the body ran into the request timeout and the
        // error kept nothing of it.
        let outcome = call(&format!("http://{addr}/fail"), Duration::from_secs(5)).await;
        assert_eq!(
            (outcome.reply, outcome.http_status),
            (Reply::Unknown, Some(500))
        );
        let expected = format!("HTTP 500: {}", "y".repeat(300));
        assert_eq!(outcome.error.as_deref(), Some(expected.as_str()));
    }
}
