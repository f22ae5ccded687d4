//! 2PC end to end: a real `dtx serve` process driving real HTTP participants
//! through Prepare and Commit or Rollback, including the coordinator's crash
//! between its decision and phase two.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::{Value, json};
use std::time::Duration;

async fn register(c: &Coordinator, body: &Value, wait_ms: u64) -> Value {
    let (code, t, _) = Http::new()
        .post_json(&c.url(&format!("/v1/transactions?wait_ms={wait_ms}")), body)
        .await;
    assert_eq!(code, 201, "{t}");
    t
}

async fn decision(c: &Coordinator, gid: &str) -> Value {
    let (code, d) = Http::new()
        .get_json(&c.url(&format!("/v1/transactions/{gid}/decision")))
        .await;
    assert_eq!(code, 200, "{d}");
    d
}

#[tokio::test]
async fn all_yes_prepares_everyone_before_committing_anyone() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let body = json!({"gid": "2pc-yes", "mode": "2pc",
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b")]});
    let t = register(&c, &body, 10_000).await;
    assert_eq!(status(&t), "committed", "{t}");
    let calls = paths(&p);
    assert_eq!(calls.len(), 4, "{calls:?}");
    let mut prepares = calls[..2].to_vec();
    prepares.sort();
    assert_eq!(prepares, ["/a/prepare", "/b/prepare"], "{calls:?}");
    let mut commits = calls[2..].to_vec();
    commits.sort();
    assert_eq!(commits, ["/a/commit", "/b/commit"], "{calls:?}");
    let first = &p.calls()[0];
    assert_eq!(first.mode(), Some("2pc"));
    assert_eq!(first.op(), Some("prepare"));
    let t = wait_final(&c, "2pc-yes").await;
    assert_eq!(branch_statuses(&t), ["committed", "committed"]);
    assert_eq!(status_history(&t), ["committing", "committed"], "{t:#}");
    assert_eq!(decision(&c, "2pc-yes").await["decision"], "commit");
}

#[tokio::test]
async fn one_no_vote_rolls_back_every_branch_that_may_have_prepared() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/prepare", Answer::Status(409));
    p.set_default("/c/prepare", Answer::ReadOnlyVote);
    let body = json!({"gid": "2pc-no", "mode": "2pc",
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b"), two_phase_branch(&p, "c")]});
    let t = register(&c, &body, 10_000).await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!(p.count("/a/rollback"), 1);
    assert_eq!(p.count("/b/rollback"), 1, "a no may hide an earlier yes");
    assert_eq!(p.count("/c/rollback"), 0, "read-only takes no part");
    assert_eq!(
        p.count("/a/commit") + p.count("/b/commit") + p.count("/c/commit"),
        0
    );
    let t = wait_final(&c, "2pc-no").await;
    assert_eq!(
        branch_statuses(&t),
        ["rolled_back", "rolled_back", "read_only"]
    );
    assert_eq!(decision(&c, "2pc-no").await["decision"], "abort");
}

#[tokio::test]
async fn read_only_voters_are_not_called_in_phase_two() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/prepare", Answer::ReadOnlyVote);
    let body = json!({"gid": "2pc-ro", "mode": "2pc",
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b")]});
    let t = register(&c, &body, 10_000).await;
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(p.count("/a/commit"), 1);
    assert_eq!(p.count("/b/commit"), 0);
}

#[tokio::test]
async fn prepare_without_an_answer_until_the_deadline_aborts() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/prepare", Answer::Hang);
    let mut options = fast_options();
    options["request_timeout_ms"] = json!(300);
    options["deadline_ms"] = json!(1500);
    let body = json!({"gid": "2pc-slow", "mode": "2pc", "options": options,
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b")]});
    let t = register(&c, &body, 0).await;
    assert_eq!(status(&t), "preparing");
    assert_eq!(decision(&c, "2pc-slow").await["decision"], "pending");
    let t = wait_final(&c, "2pc-slow").await;
    assert_eq!(status(&t), "aborted", "{t:#}");
    assert!(p.count("/b/prepare") >= 2, "an unknown vote is asked again");
    assert_eq!(p.count("/a/rollback"), 1);
    assert_eq!(p.count("/b/rollback"), 1);
    assert_eq!(p.count("/a/commit") + p.count("/b/commit"), 0);
}

#[tokio::test]
async fn commit_is_retried_until_acknowledged_and_never_turns_into_a_rollback() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.script(
        "/b/commit",
        [
            Answer::delayed(Duration::from_millis(800), Answer::Status(200)),
            Answer::Status(503),
            Answer::Drop,
        ],
    );
    let mut options = fast_options();
    options["request_timeout_ms"] = json!(300);
    options["deadline_ms"] = json!(1000);
    let body = json!({"gid": "2pc-retry", "mode": "2pc", "options": options,
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    let t = wait_final(&c, "2pc-retry").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(
        p.count("/b/commit"),
        4,
        "three failures, then the default 200"
    );
    assert_eq!(p.count("/a/rollback") + p.count("/b/rollback"), 0);
}

#[tokio::test]
async fn the_decision_survives_a_crash_between_decision_and_phase_two() {
    let mut c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    // Phase two cannot finish before the crash: every commit hangs.
    p.set_default("/a/commit", Answer::Hang);
    p.set_default("/b/commit", Answer::Hang);
    let body = json!({"gid": "2pc-crash", "mode": "2pc", "options": {"request_timeout_ms": 20000},
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    for path in ["/a/commit", "/b/commit"] {
        p.wait_for_calls(path, 1, Duration::from_secs(10))
            .await
            .unwrap();
    }
    c.process.kill9().await;
    p.set_default("/a/commit", Answer::Status(200));
    p.set_default("/b/commit", Answer::Status(200));
    c.restart("node-a2", &[]).await;
    let t = wait_final(&c, "2pc-crash").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(
        p.count("/a/prepare"),
        1,
        "the votes were logged: not asked again"
    );
    assert_eq!(p.count("/b/prepare"), 1);
    assert_eq!(p.count("/a/commit"), 2);
    assert_eq!(p.count("/b/commit"), 2);
    assert_eq!(p.count("/a/rollback") + p.count("/b/rollback"), 0);
}

#[tokio::test]
async fn a_participant_down_while_prepared_gets_its_commit_when_it_returns() {
    let c = Coordinator::sqlite(&[]).await;
    let mut p = FakeParticipant::start().await;
    let q = FakeParticipant::start().await;
    // q's prepare is slow, so p is down between its vote and its commit.
    q.script(
        "/b/prepare",
        [Answer::delayed(
            Duration::from_millis(500),
            Answer::Status(200),
        )],
    );
    let body = json!({"gid": "2pc-down", "mode": "2pc", "options": fast_options(),
        "branches": [two_phase_branch(&p, "a"), two_phase_branch(&q, "b")]});
    register(&c, &body, 0).await;
    p.wait_for_calls("/a/prepare", 1, Duration::from_secs(10))
        .await
        .unwrap();
    p.stop().await;
    wait_until(&c, "2pc-down", Duration::from_secs(10), |t| {
        t["branches"][0]["attempts"].as_u64() >= Some(3)
    })
    .await;
    p.restart().await.unwrap();
    let t = wait_final(&c, "2pc-down").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(p.count("/a/commit"), 1, "only the call that reached it");
    assert_eq!(q.count("/b/commit"), 1);
}

#[tokio::test]
async fn termination_query_presumes_abort_for_an_unknown_gid() {
    let c = Coordinator::sqlite(&[]).await;
    let d = decision(&c, "never-registered").await;
    assert_eq!(d["decision"], "abort", "{d}");
    assert!(d["status"].is_null(), "{d}");
    let (code, _) = Http::new()
        .get_json(&c.url("/v1/transactions/bad%20gid/decision"))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn bad_two_phase_registrations_are_refused_and_change_nothing() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let mut missing_rollback = two_phase_branch(&p, "a");
    missing_rollback.as_object_mut().unwrap().remove("rollback");
    let mut saga_url = two_phase_branch(&p, "a");
    saga_url["action"] = json!(p.url("/a/action"));
    for (body, needle) in [
        (
            json!({"mode": "2pc", "branches": []}),
            "at least one branch",
        ),
        (
            json!({"mode": "2pc", "branches": [missing_rollback]}),
            "rollback",
        ),
        (json!({"mode": "2pc", "branches": [saga_url]}), "action"),
        (
            json!({"mode": "3pc", "branches": [two_phase_branch(&p, "a")]}),
            "can_commit",
        ),
        (
            json!({"mode": "2pc", "branches": [two_phase_branch(&p, "a"), two_phase_branch(&p, "a")]}),
            "used twice",
        ),
    ] {
        let (code, problem, content_type) = Http::new()
            .post_json(&c.url("/v1/transactions"), &body)
            .await;
        assert_eq!(code, 400, "{body} → {problem}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{problem}"
        );
    }
    let (_, list) = Http::new().get_json(&c.url("/v1/transactions")).await;
    assert_eq!(list["transactions"].as_array().unwrap().len(), 0, "{list}");
    assert!(p.calls().is_empty());
}
