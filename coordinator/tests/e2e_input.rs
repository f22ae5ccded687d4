//! Input that would register but could never be called is refused: branch
//! ids that cannot travel as the `dtx-branch` header, and branch headers
//! that are not valid HTTP or that the coordinator and its HTTP client set.
//! Every registration path (saga, 2PC, 3PC, a TCC branch) answers 400
//! problem+json with a sentence naming the problem, and writes nothing.

mod common;

use common::*;
use dtx_tests::participant::FakeParticipant;
use dtx_tests::process::Http;
use serde_json::{Value, json};

/// `branch` with `field` set to `value`.
fn with(mut branch: Value, field: &str, value: Value) -> Value {
    branch[field] = value;
    branch
}

/// A change that spoils a valid branch.
type Spoil = Box<dyn Fn(Value) -> Value>;

/// What is wrong with a branch, as a change to a valid one, and a piece of
/// the sentence the refusal must hold.
fn bad_branches() -> Vec<(&'static str, Spoil, &'static str)> {
    let id = |id: String| -> Spoil { Box::new(move |b| with(b, "id", json!(id))) };
    let header = |name: &'static str, value: &'static str| -> Spoil {
        Box::new(move |b| with(b, "headers", json!({ name: value })))
    };
    vec![
        (
            "id with a space",
            id("reserve stock".into()),
            "a space (U+0020)",
        ),
        ("non-ASCII id", id("réserve".into()), "`é` (U+00E9)"),
        (
            "id with NUL",
            id("a\u{0}b".into()),
            "the control character U+0000",
        ),
        (
            "id with a newline",
            id("a\nb".into()),
            "the control character U+000A",
        ),
        (
            "129-character id",
            id("a".repeat(129)),
            "is 129 characters long",
        ),
        // Sliced at byte 16, inside an `é`, this id panicked the handler.
        (
            "300-character non-ASCII id",
            id(format!("x{}", "é".repeat(299))),
            "`é` (U+00E9) at character 2",
        ),
        (
            "host header",
            header("host", "elsewhere.test"),
            "header `host` is set by the coordinator",
        ),
        (
            "content-length header",
            header("Content-Length", "1"),
            "header `Content-Length` is set",
        ),
        (
            "transfer-encoding header",
            header("transfer-encoding", "chunked"),
            "header `transfer-encoding` is set",
        ),
        (
            "connection header",
            header("Connection", "close"),
            "header `Connection` is set",
        ),
        (
            "proxy header",
            header("proxy-authorization", "Basic eA=="),
            "header `proxy-authorization` is set",
        ),
        (
            "dtx header",
            header("DTX-Branch", "other"),
            "header `DTX-Branch` is set",
        ),
        (
            "header name with a space",
            header("x tenant", "acme"),
            "header name `x tenant`",
        ),
        (
            "header value with CR LF",
            header("x-tenant", "acme\r\nHost: evil"),
            "the control character U+000D",
        ),
    ]
}

/// POSTs `body` to `url`; checks the answer is a 400 problem+json whose
/// detail names the problem in one line (holds `expected`). Returns what was
/// wrong, if anything, so that one run reports every case that fails.
async fn refused(url: &str, body: &Value, expected: &str) -> Result<(), String> {
    // Not `Http::post_json`, which panics on a transport error: before the
    // fix, one case panicked the handler and the connection dropped.
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let code = response.status().as_u16();
    let ctype = response.headers().get("content-type").cloned();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    let detail = problem["detail"].as_str().unwrap_or_default();
    if code != 400
        || ctype
            .as_ref()
            .is_none_or(|c| c != "application/problem+json")
    {
        return Err(format!("answered {code} {ctype:?}: {problem}"));
    }
    if problem["status"] != 400 || !detail.contains(expected) {
        return Err(format!("{detail:?} should say {expected:?}"));
    }
    if detail.contains(['\0', '\r', '\n']) {
        return Err(format!("{detail:?} is not one clean line"));
    }
    Ok(())
}

#[tokio::test]
async fn branches_that_could_never_be_called_are_refused_on_every_registration_path() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    let modes: [(&str, Value); 3] = [
        ("saga", saga_branch(&p, "a")),
        ("2pc", two_phase_branch(&p, "a")),
        ("3pc", three_phase_branch(&p, "a")),
    ];
    let mut failures = Vec::new();
    for (mode, valid) in modes {
        for (n, (case, spoil, expected)) in bad_branches().into_iter().enumerate() {
            let gid = format!("bad-{mode}-{n}");
            let body = json!({"gid": gid, "mode": mode, "branches": [spoil(valid.clone())]});
            if let Err(e) = refused(&c.url("/v1/transactions"), &body, expected).await {
                failures.push(format!("{mode}, {case}: {e}"));
            }
            let (code, _) = http
                .get_json(&c.url(&format!("/v1/transactions/{gid}")))
                .await;
            if code != 404 {
                failures.push(format!(
                    "{mode}, {case}: GET {gid} answered {code}, not 404"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (_, page) = http.get_json(&c.url("/v1/transactions")).await;
    assert_eq!(page["transactions"], json!([]), "nothing was written");
    assert!(p.calls().is_empty(), "no participant was called");
}

#[tokio::test]
async fn tcc_branches_that_could_never_be_called_are_refused_and_change_nothing() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    let (code, t, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": "trip", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    let branches = c.url("/v1/transactions/trip/branches");
    let (code, t, _) = http.post_json(&branches, &tcc_branch(&p, "hotel")).await;
    assert_eq!(code, 201, "{t}");
    let (_, before) = http.get_json(&c.url("/v1/transactions/trip")).await;
    let mut failures = Vec::new();
    for (case, spoil, expected) in bad_branches() {
        let body = spoil(tcc_branch(&p, "flight"));
        if let Err(e) = refused(&branches, &body, expected).await {
            failures.push(format!("{case}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (_, after) = http.get_json(&c.url("/v1/transactions/trip")).await;
    assert_eq!(after, before, "the branch list and history are unchanged");
    let (_, t, _) = http
        .post_json(
            &c.url("/v1/transactions/trip/commit?wait_ms=10000"),
            &json!({}),
        )
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(
        paths(&p),
        ["/hotel/confirm"],
        "only the valid branch was ever called"
    );
}
