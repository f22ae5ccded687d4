//! PostgreSQL end to end: two coordinators sharing one database, a paused
//! owner fenced out, and a database outage answered with 503.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::postgres::{PostgresServer, fresh_database};
use dtx_tests::process::Http;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn saga_and_tcc_run_on_postgres() {
    let db = fresh_database()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let c = Coordinator::on(&db, "pg-a", &[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/b/action", Answer::Status(409));
    let http = Http::new();
    let ok = json!({"gid": "pg-ok", "mode": "saga", "branches": [saga_branch(&p, "a")]});
    let (_, t, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &ok)
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    let refused = json!({"gid": "pg-no", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")]});
    let (_, t, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &refused)
        .await;
    assert_eq!(status(&t), "aborted", "{t}");
    http.post_json(
        &c.url("/v1/transactions"),
        &json!({"gid": "pg-tcc", "mode": "tcc"}),
    )
    .await;
    http.post_json(
        &c.url("/v1/transactions/pg-tcc/branches"),
        &tcc_branch(&p, "t"),
    )
    .await;
    let (_, t, _) = http
        .post_json(
            &c.url("/v1/transactions/pg-tcc/commit?wait_ms=10000"),
            &json!({}),
        )
        .await;
    assert_eq!(status(&t), "committed", "{t}");
    assert_eq!(p.count("/t/confirm"), 1);
}

#[tokio::test]
async fn paused_owner_cannot_overwrite_the_new_owners_work() {
    let db = fresh_database()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let a = Coordinator::on(&db, "pg-owner", &[]).await;
    let b = Coordinator::on(&db, "pg-successor", &[]).await;
    let p = FakeParticipant::start().await;
    // The owner's call to x is answered only after the owner was paused.
    p.script(
        "/x/action",
        [Answer::delayed(
            Duration::from_millis(1500),
            Answer::Status(200),
        )],
    );
    let body = json!({"gid": "fence-1", "mode": "saga", "branches": [saga_branch(&p, "x"), saga_branch(&p, "y")],
        "options": {"request_timeout_ms": 10000}});
    let (code, _, _) = Http::new()
        .post_json(&a.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201);
    p.wait_for_calls("/x/action", 1, Duration::from_secs(10))
        .await
        .unwrap();
    a.process.pause(); // SIGSTOP, a stall far past the 1.5 s lease
    let t = wait_final(&b, "fence-1").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(t["owner"], "pg-successor");
    let epoch = t["epoch"].clone();
    a.process.resume();
    // The old owner wakes up holding x's answer and tries to log it.
    a.process
        .wait_for_log(
            "another coordinator took this transaction over",
            Duration::from_secs(15),
        )
        .await
        .unwrap();
    let after = wait_final(&b, "fence-1").await;
    assert_eq!(after["owner"], "pg-successor");
    assert_eq!(after["epoch"], epoch);
    assert_eq!(
        after["updated_at_ms"], t["updated_at_ms"],
        "the stale owner wrote nothing"
    );
    assert_eq!(
        p.count("/y/action"),
        1,
        "the stale owner did not drive y again"
    );
    assert_eq!(p.count("/x/compensate") + p.count("/y/compensate"), 0);
}

#[tokio::test]
async fn database_outage_gives_503_and_the_coordinator_recovers_by_itself() {
    let pg = PostgresServer::start()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let c = Coordinator::on(&pg.url(), "pg-outage", &[]).await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    let body = |gid: &str| json!({"gid": gid, "mode": "saga", "branches": [saga_branch(&p, "a")]});
    let (_, t, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body("before"))
        .await;
    assert_eq!(status(&t), "committed");
    pg.kill().await.unwrap();
    let (code, problem, ctype) = http
        .post_json(&c.url("/v1/transactions"), &body("during"))
        .await;
    assert_eq!(
        (code, ctype.as_str()),
        (503, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(reqwest::get(c.url("/readyz")).await.unwrap().status(), 503);
    pg.start_again().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, t, _) = http
            .post_json(&c.url("/v1/transactions?wait_ms=10000"), &body("after"))
            .await;
        if code == 201 || code == 200 {
            assert_eq!(status(&t), "committed", "{t}");
            break;
        }
        assert_eq!(code, 503, "{t}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coordinator did not recover:\n{}",
            c.process.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = http.get_json(&c.url("/v1/transactions/during")).await;
    assert_eq!(code, 404, "the refused registration left nothing behind");
}
