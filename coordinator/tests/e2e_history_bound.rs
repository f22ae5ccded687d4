//! `--max-history-events` against a real `dtx serve`: a participant that
//! keeps changing its answer ("still working", then a failure, then "still
//! working" again) starts a new failure run each time, and each run is
//! logged, so its transaction's history would grow for as long as it keeps
//! doing so. It stops at the bound, with one event that says so, and the
//! status changes that follow are still recorded.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::{Value, json};
use std::time::Duration;

const BOUND: usize = 8;

fn kinds(t: &Value) -> Vec<String> {
    t["events"]
        .as_array()
        .expect("the view carries the history")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The coordinator's flags: the bound, and retries as fast as allowed.
fn flags() -> [String; 4] {
    [
        "--max-history-events".into(),
        BOUND.to_string(),
        "--min-retry-ms".into(),
        "10".into(),
    ]
}

/// A coordinator with [`flags`] and a saga `gid` registered on it whose one
/// action answers `cycles` times "still working" then "failed", then
/// succeeds.
async fn start_flapping(gid: &str, cycles: usize) -> (Coordinator, FakeParticipant) {
    let flags = flags();
    let c = Coordinator::sqlite(&flags.each_ref().map(String::as_str)).await;
    let participant = FakeParticipant::start().await;
    let flapping = (0..cycles).flat_map(|_| [Answer::Status(425), Answer::Status(500)]);
    participant.script("/act", flapping);
    participant.set_default("/act", Answer::Status(200));
    let body = json!({
        "gid": gid,
        "mode": "saga",
        "branches": [{"id": "a", "action": participant.url("/act"),
            "compensate": participant.url("/undo")}],
        "options": {"poll_interval_ms": 10,
            "retry": {"initial_ms": 10, "max_ms": 10, "multiplier": 1.0}},
    });
    let (code, answer, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "{answer}");
    (c, participant)
}

#[tokio::test]
async fn a_flapping_participant_fills_the_history_to_its_bound_and_no_further() {
    let (c, participant) = start_flapping("flapping", 60).await;

    let done = wait_final(&c, "flapping").await;
    assert_eq!(status(&done), "committed", "{done:#}");
    assert_eq!(participant.count("/act"), 121, "every answer was asked for");
    let kinds = kinds(&done);
    let not_status = kinds.iter().filter(|k| *k != "status").count();
    assert_eq!(
        not_status, BOUND,
        "the registration and the driver's events fill the bound exactly: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "history_limit").count(),
        1,
        "one event says the rest are left out: {kinds:?}"
    );
    let limit_at = kinds.iter().position(|k| k == "history_limit").unwrap();
    assert!(
        kinds[limit_at + 1..].iter().all(|k| k == "status"),
        "after the limit only status changes: {kinds:?}"
    );
    let last = done["events"].as_array().unwrap().last().unwrap();
    assert!(
        last["detail"].as_str().unwrap().starts_with("committed"),
        "the outcome is recorded past the bound: {last}"
    );
    let limit = &done["events"][limit_at]["detail"];
    assert!(
        limit.as_str().unwrap().contains("--max-history-events"),
        "{limit}"
    );
    // The branch's row still shows every attempt.
    assert_eq!(done["branches"][0]["attempts"], 121, "{done:#}");
}

#[tokio::test]
async fn a_bound_below_four_is_refused_at_start() {
    let out = std::process::Command::new(binary())
        .args(["serve", "--max-history-events", "3"])
        .output()
        .expect("run dtx");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-history-events"), "{stderr}");
}

/// A driver that takes the transaction over after a kill -9 counts the
/// events its history holds: it adds no second limit event and no other
/// event of its own past the bound (the store's `takeover` event, written
/// outside drivers, is the one allowed past it).
#[tokio::test]
async fn a_driver_that_takes_a_full_history_over_adds_nothing_but_status_changes() {
    let (mut c, participant) = start_flapping("taken-over", 150).await;
    wait_until(&c, "taken-over", Duration::from_secs(20), |t| {
        kinds(t).iter().any(|k| k == "history_limit")
    })
    .await;
    c.process.kill9().await;
    let flags = flags();
    c.restart("node-b", &flags.each_ref().map(String::as_str))
        .await;

    let done = wait_final(&c, "taken-over").await;
    assert_eq!(status(&done), "committed", "{done:#}");
    assert_eq!(participant.count("/act"), 301, "every answer was asked for");
    let kinds = kinds(&done);
    assert_eq!(
        kinds.iter().filter(|k| *k == "history_limit").count(),
        1,
        "{kinds:?}"
    );
    let limit_at = kinds.iter().position(|k| k == "history_limit").unwrap();
    assert!(
        kinds[limit_at + 1..]
            .iter()
            .all(|k| k == "status" || k == "takeover"),
        "after the limit only status changes and the takeover: {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "takeover"), "{kinds:?}");
}
