//! Crash recovery on SQLite: kill -9 at awkward moments, start again, and
//! check every transaction finishes and nothing finished is redone.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn kill9_mid_saga_resumes_from_the_log_and_finishes() {
    let mut c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    // b's first call is still in flight when the coordinator dies.
    p.script(
        "/b/action",
        [Answer::delayed(Duration::from_secs(3), Answer::Status(200))],
    );
    let body = json!({"gid": "crash-1", "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")],
        "options": {"request_timeout_ms": 5000}});
    let (code, _, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201);
    p.wait_for_calls("/b/action", 1, Duration::from_secs(10))
        .await
        .unwrap();
    c.process.kill9().await;
    c.restart("node-a2", &[]).await;
    let t = wait_final(&c, "crash-1").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(
        p.count("/a/action"),
        1,
        "a's success was logged: not redone"
    );
    assert_eq!(p.count("/b/action"), 2, "b may not have run: sent again");
    assert_eq!(p.count("/a/compensate") + p.count("/b/compensate"), 0);
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "takeover"),
        "{t:#}"
    );
}

#[tokio::test]
async fn acknowledged_transactions_survive_kill9() {
    let mut c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_fallback(Answer::delayed(
        Duration::from_millis(300),
        Answer::Status(200),
    ));
    let http = Http::new();
    let mut gids = vec![];
    for i in 0..25 {
        let gid = format!("ack-{i}");
        let body = json!({"gid": gid, "mode": "saga", "branches": [saga_branch(&p, "a"), saga_branch(&p, "b")]});
        let (code, t, _) = http.post_json(&c.url("/v1/transactions"), &body).await;
        assert_eq!(code, 201, "{t}");
        gids.push(gid);
    }
    // Every registration above was acknowledged; die before most finished.
    c.process.kill9().await;
    c.restart("node-a2", &[]).await;
    for gid in &gids {
        let t = wait_final(&c, gid).await;
        assert_eq!(status(&t), "committed", "{t:#}");
    }
    assert_eq!(
        p.calls()
            .iter()
            .filter(|c| c.op() == Some("compensate"))
            .count(),
        0
    );
    for gid in &gids {
        let actions = p
            .calls()
            .iter()
            .filter(|c| c.gid() == Some(gid) && c.op() == Some("action"))
            .count();
        assert!((2..=4).contains(&actions), "{gid}: {actions} action calls");
    }
}

#[tokio::test]
async fn finished_transactions_are_not_redone_after_a_restart() {
    let mut c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let http = Http::new();
    let done = json!({"gid": "done-1", "mode": "saga", "branches": [saga_branch(&p, "a")]});
    let (_, t, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=5000"), &done)
        .await;
    assert_eq!(status(&t), "committed");
    // A second transaction is left unfinished (its action hangs past the kill),
    // so that its recovery proves the new process has scanned the log.
    p.script(
        "/slow/action",
        [Answer::delayed(Duration::from_secs(5), Answer::Status(200))],
    );
    let pending =
        json!({"gid": "pending-1", "mode": "saga", "branches": [saga_branch(&p, "slow")]});
    http.post_json(&c.url("/v1/transactions"), &pending).await;
    p.wait_for_calls("/slow/action", 1, Duration::from_secs(10))
        .await
        .unwrap();
    c.process.kill9().await;
    c.restart("node-a2", &[]).await;
    let t = wait_final(&c, "pending-1").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(
        p.count("/a/action"),
        1,
        "the finished saga was not driven again"
    );
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_the_next_run_resumes_at_once() {
    let mut c = Coordinator::sqlite(&["--shutdown-grace-ms", "500"]).await;
    let p = FakeParticipant::start().await;
    p.script(
        "/a/action",
        [Answer::delayed(Duration::from_secs(4), Answer::Status(200))],
    );
    let body = json!({"gid": "term-1", "mode": "saga", "branches": [saga_branch(&p, "a")],
        "options": {"request_timeout_ms": 6000}});
    Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    p.wait_for_calls("/a/action", 1, Duration::from_secs(10))
        .await
        .unwrap();
    // A client waiting for the outcome must not hold the shutdown up.
    let waiting_url = c.url("/v1/transactions/term-1?wait_ms=60000");
    let waiter = tokio::spawn(async move { Http::new().get_json(&waiting_url).await });
    c.process
        .wait_for_log("path=\"/v1/transactions/term-1\"", Duration::from_secs(10))
        .await
        .unwrap();
    c.process.sigterm();
    let exit = c
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", c.process.log());
    let (code, t) = waiter.await.unwrap();
    assert_eq!(
        (code, status(&t)),
        (200, "running"),
        "the waiter got the state as it was"
    );
    // The process has exited, but its last lines may still be in the pipe
    // on their way to the log reader: wait for the line, do not snapshot.
    c.process
        .wait_for_log("leases released", Duration::from_secs(5))
        .await
        .unwrap();
    // Released leases are taken over without waiting for them to expire.
    c.restart("node-a2", &["--lease-ms", "60000"]).await;
    let t = wait_until(&c, "term-1", Duration::from_secs(15), |t| {
        status(t) == "committed"
    })
    .await;
    assert_eq!(t["owner"], "node-a2");
}
