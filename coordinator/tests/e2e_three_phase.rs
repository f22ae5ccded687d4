//! 3PC end to end: a real `dtx serve` process driving real HTTP participants
//! through CanCommit, PreCommit and DoCommit, with the coordinator-side
//! timeouts: an unknown vote or a missing PreCommit ack at the deadline
//! aborts; once DoCommit is decided it is retried until acknowledged.

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

/// Fast retries and a short deadline, for the timeout rules.
fn short_deadline() -> Value {
    let mut options = fast_options();
    options["request_timeout_ms"] = json!(300);
    options["deadline_ms"] = json!(1500);
    options
}

#[tokio::test]
async fn all_yes_runs_the_three_phases_in_order() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let body = json!({"gid": "3pc-yes", "mode": "3pc",
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    let t = register(&c, &body, 10_000).await;
    assert_eq!(status(&t), "committed", "{t}");
    let calls = paths(&p);
    let phase = |i: usize| {
        let mut two = calls[2 * i..2 * i + 2].to_vec();
        two.sort();
        two
    };
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(phase(0), ["/a/can_commit", "/b/can_commit"]);
    assert_eq!(phase(1), ["/a/pre_commit", "/b/pre_commit"]);
    assert_eq!(phase(2), ["/a/do_commit", "/b/do_commit"]);
    assert_eq!(p.calls()[0].mode(), Some("3pc"));
    let t = wait_final(&c, "3pc-yes").await;
    assert_eq!(
        status_history(&t),
        ["pre_committing", "committing", "committed"],
        "{t:#}"
    );
}

#[tokio::test]
async fn a_no_vote_aborts_every_branch_and_nobody_pre_commits() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/can_commit", Answer::Status(409));
    let body = json!({"gid": "3pc-no", "mode": "3pc",
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    let t = register(&c, &body, 10_000).await;
    assert_eq!(status(&t), "aborted", "{t}");
    assert_eq!(p.count("/a/abort"), 1);
    assert_eq!(p.count("/b/abort"), 1);
    assert_eq!(p.count("/a/pre_commit") + p.count("/b/pre_commit"), 0);
}

#[tokio::test]
async fn a_vote_that_never_comes_aborts_at_the_deadline() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/can_commit", Answer::Hang);
    let body = json!({"gid": "3pc-mute", "mode": "3pc", "options": short_deadline(),
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    let t = wait_final(&c, "3pc-mute").await;
    assert_eq!(status(&t), "aborted", "{t:#}");
    assert!(
        p.count("/b/can_commit") >= 2,
        "an unknown vote is asked again"
    );
    assert_eq!(p.count("/a/pre_commit") + p.count("/b/pre_commit"), 0);
    assert_eq!(p.count("/a/abort"), 1);
    assert_eq!(p.count("/b/abort"), 1);
}

#[tokio::test]
async fn a_missing_pre_commit_ack_aborts_at_the_deadline() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/pre_commit", Answer::Hang);
    let body = json!({"gid": "3pc-noack", "mode": "3pc", "options": short_deadline(),
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    let t = wait_final(&c, "3pc-noack").await;
    assert_eq!(status(&t), "aborted", "{t:#}");
    assert_eq!(
        status_history(&t),
        ["pre_committing", "aborting", "aborted"]
    );
    assert_eq!(p.count("/a/pre_commit"), 1);
    assert!(
        p.count("/b/pre_commit") >= 2,
        "an unknown ack is asked again"
    );
    assert_eq!(p.count("/a/do_commit") + p.count("/b/do_commit"), 0);
    assert_eq!(p.count("/a/abort"), 1, "the pre-committed branch is told");
    assert_eq!(p.count("/b/abort"), 1);
}

#[tokio::test]
async fn do_commit_is_retried_past_the_deadline_until_acknowledged() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.script(
        "/a/do_commit",
        [
            Answer::Status(500),
            Answer::delayed(Duration::from_millis(1000), Answer::Status(200)),
            Answer::Status(409),
        ],
    );
    let body = json!({"gid": "3pc-retry", "mode": "3pc", "options": short_deadline(),
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    let t = wait_final(&c, "3pc-retry").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(p.count("/a/do_commit"), 4);
    assert_eq!(p.count("/a/abort") + p.count("/b/abort"), 0);
    assert!(
        t["attention"].is_string(),
        "a refused do_commit flags it: {t:#}"
    );
}

#[tokio::test]
async fn a_crash_while_pre_committing_resumes_and_commits() {
    let mut c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.script(
        "/b/pre_commit",
        [Answer::delayed(
            Duration::from_secs(20),
            Answer::Status(200),
        )],
    );
    let body = json!({"gid": "3pc-crash", "mode": "3pc", "options": {"request_timeout_ms": 30000},
        "branches": [three_phase_branch(&p, "a"), three_phase_branch(&p, "b")]});
    register(&c, &body, 0).await;
    p.wait_for_calls("/b/pre_commit", 1, Duration::from_secs(10))
        .await
        .unwrap();
    // a's ack is logged before the crash, so only b's PreCommit is redone.
    wait_until(&c, "3pc-crash", Duration::from_secs(10), |t| {
        t["branches"][0]["status"] == "pre_committed"
    })
    .await;
    c.process.kill9().await;
    c.restart("node-a2", &[]).await;
    let t = wait_final(&c, "3pc-crash").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(p.count("/a/can_commit"), 1, "the votes were logged");
    assert_eq!(p.count("/b/can_commit"), 1);
    assert_eq!(
        p.count("/b/pre_commit"),
        2,
        "the unacknowledged one is sent again"
    );
    assert_eq!(p.count("/a/do_commit"), 1);
    assert_eq!(p.count("/b/do_commit"), 1);
}
