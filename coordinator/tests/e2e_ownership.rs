//! What a coordinator does with a request for a transaction that another
//! live coordinator owns (two coordinators sharing one PostgreSQL), as
//! docs/design.md ("A request at a coordinator that does not own the
//! transaction") promises:
//!
//! - reads, waits and the termination query are served from the shared
//!   store: the owner keeps driving, nothing changes hands;
//! - a TCC branch registration is a conditional write to the shared store,
//!   served by any coordinator;
//! - commit and abort are taken over: the coordinator that received them
//!   fences the owner out (a new epoch) and drives the transaction itself.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::postgres::fresh_database;
use dtx_tests::process::Http;
use serde_json::json;
use std::time::Duration;

async fn two_coordinators() -> (Coordinator, Coordinator) {
    let db = fresh_database()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let owner = Coordinator::on(&db, "owner", &[]).await;
    let other = Coordinator::on(&db, "other", &[]).await;
    (owner, other)
}

#[tokio::test]
async fn reads_and_waits_at_another_coordinator_are_served_from_the_store() {
    let (owner, other) = two_coordinators().await;
    let p = FakeParticipant::start().await;
    // The owner is busy with branch a for a while: long enough to read and wait
    // at the other coordinator meanwhile.
    p.script(
        "/a/action",
        [Answer::delayed(
            Duration::from_millis(1500),
            Answer::Status(200),
        )],
    );
    let body = json!({"gid": "served-1", "mode": "saga", "branches": [saga_branch(&p, "a")],
        "options": {"request_timeout_ms": 10000}});
    let http = Http::new();
    let (code, _, _) = http.post_json(&owner.url("/v1/transactions"), &body).await;
    assert_eq!(code, 201);
    p.wait_for_calls("/a/action", 1, Duration::from_secs(10))
        .await
        .unwrap();

    let (code, seen) = http.get_json(&other.url("/v1/transactions/served-1")).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["owner"], "owner", "{seen:#}");
    assert_eq!(status(&seen), "running", "{seen:#}");
    let (code, decision) = http
        .get_json(&other.url("/v1/transactions/served-1/decision"))
        .await;
    assert_eq!(code, 200, "{decision}");
    assert_eq!(decision["decision"], "pending", "{decision}");

    // A wait at the other coordinator ends when the owner finishes.
    let (code, done) = http
        .get_json(&other.url("/v1/transactions/served-1?wait_ms=20000"))
        .await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(status(&done), "committed", "{done:#}");
    assert_eq!(done["owner"], "owner", "nothing changed hands: {done:#}");
    assert_eq!(done["epoch"], seen["epoch"], "{done:#}");
    let events: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(!events.contains(&"takeover"), "{events:?}");
    assert_eq!(p.count("/a/action"), 1);
}

#[tokio::test]
async fn a_commit_at_another_coordinator_takes_the_transaction_over() {
    let (owner, other) = two_coordinators().await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    let (code, opened, _) = http
        .post_json(
            &owner.url("/v1/transactions"),
            &json!({"gid": "moved-1", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201, "{opened}");
    // A branch registered at either coordinator lands in the shared store.
    let (code, _, _) = http
        .post_json(
            &owner.url("/v1/transactions/moved-1/branches"),
            &tcc_branch(&p, "x"),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _, _) = http
        .post_json(
            &other.url("/v1/transactions/moved-1/branches"),
            &tcc_branch(&p, "y"),
        )
        .await;
    assert_eq!(code, 201);
    let (_, before) = http.get_json(&owner.url("/v1/transactions/moved-1")).await;
    assert_eq!(before["owner"], "owner", "{before:#}");

    let (code, committed, _) = http
        .post_json(
            &other.url("/v1/transactions/moved-1/commit?wait_ms=20000"),
            &json!({}),
        )
        .await;
    assert_eq!(code, 200, "{committed}");
    assert_eq!(status(&committed), "committed", "{committed:#}");
    assert_eq!(committed["owner"], "other", "{committed:#}");
    assert!(
        committed["epoch"].as_i64() > before["epoch"].as_i64(),
        "the takeover fenced the owner out: {committed:#}"
    );
    assert_eq!(p.count("/x/confirm"), 1);
    assert_eq!(p.count("/y/confirm"), 1);

    // The fenced owner, still alive, neither confirms again nor cancels;
    // a renewal or two later it has seen that the lease is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(p.count("/x/confirm") + p.count("/y/confirm"), 2);
    assert_eq!(p.count("/x/cancel") + p.count("/y/cancel"), 0);
    // Asking the old owner again answers from the store, with no new work.
    let (code, again, _) = http
        .post_json(&owner.url("/v1/transactions/moved-1/commit"), &json!({}))
        .await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(status(&again), "committed");
    assert_eq!(p.count("/x/confirm") + p.count("/y/confirm"), 2);
}

#[tokio::test]
async fn an_abort_at_another_coordinator_takes_the_transaction_over() {
    let (owner, other) = two_coordinators().await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    http.post_json(
        &owner.url("/v1/transactions"),
        &json!({"gid": "moved-2", "mode": "tcc"}),
    )
    .await;
    let (code, _, _) = http
        .post_json(
            &owner.url("/v1/transactions/moved-2/branches"),
            &tcc_branch(&p, "x"),
        )
        .await;
    assert_eq!(code, 201);
    let (code, aborted, _) = http
        .post_json(
            &other.url("/v1/transactions/moved-2/abort?wait_ms=20000"),
            &json!({}),
        )
        .await;
    assert_eq!(code, 200, "{aborted}");
    assert_eq!(status(&aborted), "aborted", "{aborted:#}");
    assert_eq!(aborted["owner"], "other", "{aborted:#}");
    assert_eq!(p.count("/x/cancel"), 1);
    assert_eq!(p.count("/x/confirm"), 0);
    // The opposite decision, asked of the old owner, is refused.
    let (code, refused, _) = http
        .post_json(&owner.url("/v1/transactions/moved-2/commit"), &json!({}))
        .await;
    assert_eq!(
        code,
        409,
        "{refused}\n--- old owner ---\n{}",
        owner.process.log()
    );
    assert_eq!(p.count("/x/confirm"), 0);
}
