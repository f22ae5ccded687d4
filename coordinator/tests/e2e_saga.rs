//! Sagas end to end: a real `dtx serve` process calling real HTTP participants.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn saga_success_calls_each_action_once_in_order() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let body = json!({"gid": "ok-1", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    assert_eq!(status(&t), "committed", "{t}");
    let calls = p.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/a/action", "/b/action"]);
    let first = &calls[0];
    assert_eq!(first.gid(), Some("ok-1"));
    assert_eq!(first.branch(), Some("a"));
    assert_eq!(first.op(), Some("action"));
    assert_eq!(first.mode(), Some("saga"));
    assert_eq!(first.body, json!({"branch": "a"}));
    let trace = |c: &dtx_tests::participant::Call| c.traceparent().map(|t| t[..36].to_owned());
    assert!(trace(first).is_some());
    assert_eq!(trace(first), trace(&calls[1]), "one trace per transaction");
}

#[tokio::test]
async fn refusal_compensates_every_branch_that_may_have_run_in_reverse() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/c/action", Answer::Status(409));
    let body = json!({"gid": "refused-1", "mode": "saga",
        "branches": [saga_branch(&p, "a"), saga_branch(&p, "b"), saga_branch(&p, "c"), saga_branch(&p, "d")]});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    let paths: Vec<String> = p.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            "/a/action",
            "/b/action",
            "/c/action",
            "/c/compensate",
            "/b/compensate",
            "/a/compensate"
        ]
    );
    let t = wait_final(&c, "refused-1").await;
    let statuses: Vec<&str> = t["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["rolled_back", "rolled_back", "rolled_back", "pending"]
    );
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("refused"))
    );
}

#[tokio::test]
async fn a_refusals_reason_is_kept_on_the_branch_and_in_the_history() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let problem =
        json!({"title": "Conflict", "status": 409, "detail": "card declined: limit reached"});
    p.set_default("/b/action", Answer::Json(409, problem));
    let body = json!({"gid": "refused-why", "mode": "saga",
        "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")]});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    let t = wait_final(&c, "refused-why").await;
    // Kept although the refused branch's own compensation succeeded later
    // (which clears its last error).
    let refused = &t["branches"][1];
    assert_eq!(refused["refusal"], "card declined: limit reached", "{t}");
    assert_eq!(t["branches"][0]["refusal"], serde_json::Value::Null, "{t}");
    let events = t["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("refused: card declined: limit reached"))),
        "{events:#?}"
    );
}

#[tokio::test]
async fn unknown_answers_are_retried_until_success() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.script(
        "/a/action",
        [
            Answer::Status(500),
            Answer::Status(503),
            Answer::Status(425),
        ],
    );
    let body = json!({"gid": "flaky-1", "mode": "saga", "branches": [saga_branch(&p, "a")], "options": fast_options()});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(p.count("/a/action"), 4);
    assert_eq!(
        p.count("/a/compensate"),
        0,
        "an unknown answer is never a failure"
    );
    let t = wait_final(&c, "flaky-1").await;
    assert_eq!(t["branches"][0]["attempts"], 4);
    assert_eq!(t["branches"][0]["last_http_status"], 200);
    let failures = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "call_failed")
        .count();
    assert_eq!(failures, 3, "{t:#}");
}

#[tokio::test]
async fn timeout_never_triggers_compensation() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    // The first two answers come after the 1 s request timeout.
    p.script(
        "/a/action",
        [
            Answer::delayed(Duration::from_millis(1500), Answer::Status(200)),
            Answer::delayed(Duration::from_millis(1500), Answer::Status(200)),
        ],
    );
    let body = json!({"gid": "slow-1", "mode": "saga", "branches": [saga_branch(&p, "a")], "options": fast_options()});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=20000"), &body)
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(p.count("/a/action"), 3);
    assert_eq!(p.count("/a/compensate"), 0);
    let t = wait_final(&c, "slow-1").await;
    assert!(
        t["events"].as_array().unwrap().iter().any(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("no answer within 1000 ms")),
        "{t:#}"
    );
}

#[tokio::test]
async fn deadline_aborts_a_saga_and_compensates_the_hanging_branch() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/action", Answer::Status(503));
    let mut options = fast_options();
    options["deadline_ms"] = json!(1000);
    let body = json!({"gid": "late-1", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")], "options": options});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=15000"), &body)
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert!(p.count("/b/action") >= 2);
    assert_eq!(p.count("/b/compensate"), 1, "b may have run: compensated");
    assert_eq!(p.count("/a/compensate"), 1);
    let calls = p.calls();
    let pos = |path: &str| calls.iter().position(|c| c.path == path).unwrap();
    assert!(pos("/b/compensate") < pos("/a/compensate"), "reverse order");
}

#[tokio::test]
async fn graph_runs_independent_branches_concurrently() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    // a and b each take 500 ms; c needs both.
    p.script(
        "/a/action",
        [Answer::delayed(
            Duration::from_millis(500),
            Answer::Status(200),
        )],
    );
    p.script(
        "/b/action",
        [Answer::delayed(
            Duration::from_millis(500),
            Answer::Status(200),
        )],
    );
    let mut c_branch = saga_branch(&p, "c");
    c_branch["depends_on"] = json!(["a", "b"]);
    let body = json!({"gid": "dag-1", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b"), c_branch]});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    let calls = p.calls();
    assert_eq!(calls.last().unwrap().path, "/c/action");
    let a = calls.iter().find(|c| c.path == "/a/action").unwrap().at;
    let b = calls.iter().find(|c| c.path == "/b/action").unwrap().at;
    // b was sent before a's answer came back: they overlapped.
    assert!(
        b.max(a) - b.min(a) < Duration::from_millis(400),
        "a and b were not concurrent"
    );
}

#[tokio::test]
async fn compensation_refused_flags_the_transaction_and_keeps_retrying() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/action", Answer::Status(409));
    let closed = json!({"title": "Conflict", "status": 409, "detail": "account 7 is closed"});
    p.script(
        "/a/compensate",
        [Answer::Json(409, closed.clone()), Answer::Json(409, closed)],
    );
    let body = json!({"gid": "flag-1", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")], "options": fast_options()});
    let (_, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body)
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!(p.count("/a/compensate"), 3);
    let t = wait_final(&c, "flag-1").await;
    assert!(
        t["attention"]
            .as_str()
            .unwrap()
            .contains("refused its compensate (HTTP 409: account 7 is closed)"),
        "the operator reads the participant's reason: {t:#}"
    );
    let (_, page) = Http::new()
        .get_json(&c.url("/v1/transactions?attention=true"))
        .await;
    assert_eq!(page["transactions"].as_array().unwrap().len(), 1);
    let metrics = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dtx_transactions_flagged_total 1"),
        "{metrics}"
    );
}
