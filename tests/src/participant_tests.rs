//! Tests of the fake participant, through a real HTTP client.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Answer, FakeParticipant};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// POSTs `{}` to `path` and returns the status, or the error text when no
/// response came.
async fn post(fake: &FakeParticipant, path: &str) -> Result<u16, String> {
    client()
        .post(fake.url(path))
        .json(&json!({}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn scripted_answers_are_served_in_order_then_the_default() {
    let fake = FakeParticipant::start().await;
    fake.script("/inv/action", [Answer::Status(500), Answer::Status(425)]);
    fake.script("inv/action", [Answer::Status(409)]); // appends; slash optional

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(post(&fake, "/inv/action").await.unwrap());
    }
    assert_eq!(got, [500, 425, 409, 200, 200]);
    assert_eq!(fake.count("/inv/action"), 5);
}

#[tokio::test]
async fn set_default_and_fallback_apply_once_the_script_is_used_up() {
    let fake = FakeParticipant::start().await;
    fake.set_fallback(Answer::Status(503));
    fake.set_default("/x", Answer::Status(409));
    fake.script("/x", [Answer::Json(200, json!({"vote": "read-only"}))]);

    let response = client().post(fake.url("/x")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"vote": "read-only"})
    );
    assert_eq!(post(&fake, "/x").await.unwrap(), 409);
    assert_eq!(post(&fake, "/x").await.unwrap(), 409);
    assert_eq!(post(&fake, "/other").await.unwrap(), 503);
}

#[tokio::test]
async fn calls_are_recorded_with_headers_body_and_arrival_time() {
    let fake = FakeParticipant::start().await;
    let before = Instant::now();
    client()
        .post(fake.url("/inv/try?attempt=2"))
        .header("dtx-gid", "g-1")
        .header("dtx-branch", "01")
        .header("dtx-op", "try")
        .header("dtx-mode", "tcc")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-extra", "yes")
        .json(&json!({"sku": "A", "qty": 2}))
        .send()
        .await
        .unwrap();
    client()
        .post(fake.url("/inv/confirm"))
        .body("not json")
        .send()
        .await
        .unwrap();

    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/inv/try");
    assert_eq!(call.query.as_deref(), Some("attempt=2"));
    assert_eq!(call.gid(), Some("g-1"));
    assert_eq!(call.branch(), Some("01"));
    assert_eq!(call.op(), Some("try"));
    assert_eq!(call.mode(), Some("tcc"));
    assert!(call.traceparent().unwrap().starts_with("00-0af7"));
    assert_eq!(call.header("x-extra"), Some("yes"));
    assert_eq!(call.body, json!({"sku": "A", "qty": 2}));
    assert!(call.at >= before && call.at <= calls[1].at);

    // A body that is not JSON is kept raw.
    assert_eq!(calls[1].body, Value::Null);
    assert_eq!(&calls[1].raw_body[..], b"not json");
    assert_eq!(fake.calls_to("/inv/confirm").len(), 1);
    assert_eq!(fake.count("/inv/try"), 1);
    assert_eq!(fake.count("/nowhere"), 0);
}

#[tokio::test]
async fn delay_answers_after_the_delay() {
    let fake = FakeParticipant::start().await;
    let delay = Duration::from_millis(300);
    fake.script("/slow", [Answer::delayed(delay, Answer::Status(201))]);

    let start = Instant::now();
    assert_eq!(post(&fake, "/slow").await.unwrap(), 201);
    assert!(
        start.elapsed() >= delay,
        "answered after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn delay_makes_a_client_timeout_fire() {
    let fake = FakeParticipant::start().await;
    fake.script(
        "/slow",
        [Answer::delayed(
            Duration::from_secs(30),
            Answer::Status(200),
        )],
    );
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = short.post(fake.url("/slow")).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The call was recorded on arrival, although it was never answered.
    assert_eq!(fake.count("/slow"), 1);
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let fake = FakeParticipant::start().await;
    fake.script("/flaky", [Answer::Drop]);
    let err = post(&fake, "/flaky").await.unwrap_err();
    assert!(
        !err.contains("TimedOut"),
        "expected a closed connection: {err}"
    );
    // The next call gets the default on a fresh connection.
    assert_eq!(post(&fake, "/flaky").await.unwrap(), 200);
}

#[tokio::test]
async fn hang_is_released_by_stop_and_stop_refuses_new_calls() {
    let mut fake = FakeParticipant::start().await;
    fake.script("/stuck", [Answer::Hang]);
    let url = fake.url("/stuck");
    let pending = tokio::spawn(async move { client().post(url).send().await });
    fake.wait_for_calls("/stuck", 1, Duration::from_secs(5))
        .await
        .unwrap();

    let start = Instant::now();
    fake.stop().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        start.elapsed()
    );
    assert!(
        pending.await.unwrap().is_err(),
        "a hanging call must get no answer"
    );
    assert!(
        post(&fake, "/stuck").await.is_err(),
        "a stopped fake must refuse calls"
    );

    // Restart on the same port keeps what was recorded and scripted.
    fake.script("/stuck", [Answer::Status(409)]);
    fake.restart().await.unwrap();
    assert_eq!(post(&fake, "/stuck").await.unwrap(), 409);
    assert_eq!(fake.count("/stuck"), 2);
}

#[tokio::test]
async fn dropping_the_fake_cuts_open_connections() {
    let fake = FakeParticipant::start().await;
    fake.script("/stuck", [Answer::Hang]);
    let url = fake.url("/stuck");
    let pending = tokio::spawn(async move { client().post(url).send().await });
    fake.wait_for_calls("/stuck", 1, Duration::from_secs(5))
        .await
        .unwrap();
    drop(fake);
    // The client would wait 10 s for an answer; the abort closes it first.
    let result = tokio::time::timeout(Duration::from_secs(5), pending).await;
    assert!(result.expect("connection not cut").unwrap().is_err());
}

#[tokio::test]
async fn wait_for_calls_wakes_on_arrival() {
    let fake = FakeParticipant::start().await;
    let url = fake.url("/a");
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            client().post(&url).send().await.unwrap();
        }
    });
    fake.wait_for_calls("/a", 3, Duration::from_secs(5))
        .await
        .unwrap();
    sender.await.unwrap();
    // Already satisfied: returns at once.
    fake.wait_for_calls("/a", 2, Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn wait_for_calls_error_lists_what_did_arrive() {
    let fake = FakeParticipant::start().await;
    client()
        .post(fake.url("/inv/cancel"))
        .header("dtx-gid", "g-7")
        .header("dtx-op", "cancel")
        .send()
        .await
        .unwrap();
    let err = fake
        .wait_for_calls("/inv/confirm", 1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.contains("to /inv/confirm"), "{err}");
    assert!(err.contains("got 0"), "{err}");
    assert!(err.contains("POST /inv/cancel gid=g-7"), "{err}");
    assert!(err.contains("op=cancel"), "{err}");
}

#[test]
#[should_panic(expected = "invalid HTTP status 1000")]
fn an_invalid_status_fails_where_it_is_scripted() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime.block_on(FakeParticipant::start());
    fake.script(
        "/x",
        [Answer::delayed(Duration::ZERO, Answer::Status(1000))],
    );
}
