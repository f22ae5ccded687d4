//! TCC end to end: open, register, commit or abort, deadline.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::json;

async fn open_with_branches(
    c: &Coordinator,
    p: &FakeParticipant,
    gid: &str,
    ids: &[&str],
    options: serde_json::Value,
) {
    let http = Http::new();
    let (code, t, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": gid, "mode": "tcc", "options": options}),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    assert_eq!(status(&t), "open");
    for (i, id) in ids.iter().enumerate() {
        let (code, b, _) = http
            .post_json(
                &c.url(&format!("/v1/transactions/{gid}/branches")),
                &tcc_branch(p, id),
            )
            .await;
        assert_eq!(code, 201, "{b}");
        assert_eq!(b["index"], i);
    }
}

#[tokio::test]
async fn commit_confirms_every_branch_once() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.script("/b/confirm", [Answer::Status(500)]);
    open_with_branches(&c, &p, "tcc-ok", &["a", "b"], fast_options()).await;
    let (code, t, _) = Http::new()
        .post_json(
            &c.url("/v1/transactions/tcc-ok/commit?wait_ms=10000"),
            &json!({}),
        )
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(p.count("/a/confirm"), 1);
    assert_eq!(p.count("/b/confirm"), 2, "an unknown confirm is retried");
    assert_eq!(p.count("/a/cancel") + p.count("/b/cancel"), 0);
    assert_eq!(p.calls_to("/a/confirm")[0].mode(), Some("tcc"));
    // Committing again is answered with the outcome; aborting now is a conflict.
    let (code, _, _) = Http::new()
        .post_json(&c.url("/v1/transactions/tcc-ok/commit"), &json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, problem, ctype) = Http::new()
        .post_json(&c.url("/v1/transactions/tcc-ok/abort"), &json!({}))
        .await;
    assert_eq!(code, 409, "{problem}");
    assert_eq!(ctype, "application/problem+json");
}

#[tokio::test]
async fn abort_cancels_every_registered_branch() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    open_with_branches(&c, &p, "tcc-abort", &["a", "b"], fast_options()).await;
    let (_, t, _) = Http::new()
        .post_json(
            &c.url("/v1/transactions/tcc-abort/abort?wait_ms=10000"),
            &json!({}),
        )
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!((p.count("/a/cancel"), p.count("/b/cancel")), (1, 1));
    assert_eq!(p.count("/a/confirm") + p.count("/b/confirm"), 0);
}

#[tokio::test]
async fn open_transaction_is_aborted_at_its_deadline() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let mut options = fast_options();
    options["deadline_ms"] = json!(800);
    open_with_branches(&c, &p, "tcc-late", &["a"], options).await;
    let t = wait_final(&c, "tcc-late").await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!(p.count("/a/cancel"), 1);
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("deadline")),
        "{t:#}"
    );
}

#[tokio::test]
async fn branch_on_a_decided_transaction_is_refused_and_changes_nothing() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    open_with_branches(&c, &p, "tcc-closed", &["a"], fast_options()).await;
    Http::new()
        .post_json(
            &c.url("/v1/transactions/tcc-closed/commit?wait_ms=10000"),
            &json!({}),
        )
        .await;
    let (code, problem, ctype) = Http::new()
        .post_json(
            &c.url("/v1/transactions/tcc-closed/branches"),
            &tcc_branch(&p, "late"),
        )
        .await;
    assert_eq!(code, 409, "{problem}");
    assert_eq!(ctype, "application/problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no longer accepts branches"),
        "{problem}"
    );
    let t = wait_final(&c, "tcc-closed").await;
    assert_eq!(t["branches"].as_array().unwrap().len(), 1);
    assert_eq!(p.count("/late/confirm"), 0);
}

#[tokio::test]
async fn registering_a_branch_twice_is_idempotent_and_a_different_spec_conflicts() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    open_with_branches(&c, &p, "tcc-dup", &["a"], fast_options()).await;
    let url = c.url("/v1/transactions/tcc-dup/branches");
    let (code, b, _) = Http::new().post_json(&url, &tcc_branch(&p, "a")).await;
    assert_eq!((code, b["index"].as_u64()), (200, Some(0)));
    let mut other = tcc_branch(&p, "a");
    other["payload"] = json!({"other": true});
    let (code, _, _) = Http::new().post_json(&url, &other).await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn commit_of_an_unknown_gid_is_not_found() {
    let c = Coordinator::sqlite(&[]).await;
    let (code, problem, ctype) = Http::new()
        .post_json(&c.url("/v1/transactions/nope/commit"), &json!({}))
        .await;
    assert_eq!(code, 404, "{problem}");
    assert_eq!(ctype, "application/problem+json");
    assert!(problem["detail"].as_str().unwrap().contains("nope"));
}

/// The initiator makes a Try itself, so only it learns a refusing
/// participant's reason; an abort may name the refused Try, and the reason
/// is then kept on the branch and in the history, as the reasons of the
/// refusals the coordinator receives itself are.
#[tokio::test]
async fn an_abort_naming_a_refused_try_keeps_its_reason_on_the_branch_and_in_the_history() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    open_with_branches(&c, &p, "tcc-refused", &["a", "b"], fast_options()).await;
    let http = Http::new();
    let why = json!({"refused_try": {"branch": "b", "reason": "not enough pear"}});
    let (code, t, _) = http
        .post_json(
            &c.url("/v1/transactions/tcc-refused/abort?wait_ms=10000"),
            &why,
        )
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!(t["branches"][1]["refusal"], "not enough pear", "{t:#}");
    assert!(t["branches"][0]["refusal"].is_null(), "{t:#}");
    let (_, t) = http.get_json(&c.url("/v1/transactions/tcc-refused")).await;
    let aborting = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["detail"].as_str().unwrap().starts_with("aborting"))
        .unwrap_or_else(|| panic!("no aborting event: {t:#}"));
    assert!(
        aborting["detail"]
            .as_str()
            .unwrap()
            .contains("branch `b` refused its Try: not enough pear"),
        "{aborting}"
    );
}

/// An abort whose body is not an abort request is a problem document, and
/// the transaction stays open.
#[tokio::test]
async fn an_abort_with_a_malformed_body_is_refused_and_changes_nothing() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    open_with_branches(&c, &p, "tcc-bad-abort", &["a"], fast_options()).await;
    let http = Http::new();
    for body in [
        json!({"refused_try": {"branch": "a"}}),
        json!({"why": "no reason"}),
        json!({"refused_try": {"branch": "not an id", "reason": "x"}}),
        json!([1, 2]),
    ] {
        let (code, answer, kind) = http
            .post_json(&c.url("/v1/transactions/tcc-bad-abort/abort"), &body)
            .await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(kind, "application/problem+json", "{body}");
    }
    let (_, t) = http
        .get_json(&c.url("/v1/transactions/tcc-bad-abort"))
        .await;
    assert_eq!(status(&t), "open", "{t:#}");
}
