//! Hostile and malformed registration bodies thrown at a real `dtx serve`
//! (generated with proptest): the answer is never a 5xx, a refusal is
//! always `application/problem+json`, and a refused request writes nothing.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// Any JSON value, with strings that include control characters, quotes,
/// unicode and very long runs.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[a-z:/.?#@%-]{0,40}",
        Just("x".repeat(5000)),
        Just("http://169.254.169.254/latest".to_owned()),
        Just("http://user:pw@127.0.0.1:1/x?token=abc".to_owned()),
        Just("javascript:alert(1)".to_owned()),
        Just("\u{0}\r\nHost: evil".to_owned()),
    ]
}

/// A registration that is almost right: real field names, each value either
/// plausible or hostile.
fn near_registration() -> impl Strategy<Value = Value> {
    let mode = prop_oneof![
        Just(json!("saga")),
        Just(json!("tcc")),
        Just(json!("2pc")),
        Just(json!("3pc")),
        any_json()
    ];
    let url = prop_oneof![
        Just(json!("http://127.0.0.1:9/a")),
        hostile_string().prop_map(Value::String),
        any_json()
    ];
    let branch = (
        hostile_string(),
        url.clone(),
        url,
        prop::collection::btree_map(hostile_string(), hostile_string(), 0..4),
        any_json(),
        prop::collection::vec(hostile_string(), 0..3),
    )
        .prop_map(|(id, action, compensate, headers, payload, depends_on)| {
            json!({
                "id": id, "action": action, "compensate": compensate,
                "prepare": action, "commit": compensate, "rollback": compensate,
                "headers": headers, "payload": payload, "depends_on": depends_on,
            })
        });
    let options = prop_oneof![
        Just(json!({})),
        any_json(),
        (any::<i64>(), any::<i64>(), any::<f64>()).prop_map(|(d, t, m)| json!({
            "deadline_ms": d, "request_timeout_ms": t,
            "retry": {"initial_ms": d, "max_ms": t, "multiplier": if m.is_finite() { m } else { 1.0 }},
        })),
    ];
    (
        prop::option::of(hostile_string()),
        mode,
        prop::collection::vec(branch, 0..4),
        options,
        prop::option::of((hostile_string(), any_json())),
    )
        .prop_map(|(gid, mode, branches, options, extra)| {
            let mut body = Map::new();
            if let Some(gid) = gid {
                body.insert("gid".into(), json!(gid));
            }
            body.insert("mode".into(), mode);
            body.insert("branches".into(), Value::Array(branches));
            body.insert("options".into(), options);
            if let Some((key, value)) = extra {
                body.insert(key, value);
            }
            Value::Object(body)
        })
}

/// A body as bytes: JSON (near-valid or anything) or not JSON at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => near_registration().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

async fn transaction_count(c: &Coordinator, client: &reqwest::Client) -> usize {
    let page: Value = client
        .get(c.url("/v1/transactions?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["transactions"].as_array().unwrap().len()
}

#[test]
fn hostile_registrations_never_get_a_5xx_and_a_refused_one_writes_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = runtime.block_on(Coordinator::sqlite(&[]));
    let client = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let refused = std::cell::Cell::new(0);
    let outcome = runner.run(&body(), |bytes| {
        let (status, kind, before, after) = runtime.block_on(async {
            let before = transaction_count(&c, &client).await;
            let response = client
                .post(c.url("/v1/transactions"))
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let after = transaction_count(&c, &client).await;
            (status, kind, before, after)
        });
        let shown = String::from_utf8_lossy(&bytes)
            .chars()
            .take(300)
            .collect::<String>();
        prop_assert!(status < 500, "{status} for {shown}");
        if status >= 400 {
            refused.set(refused.get() + 1);
            prop_assert_eq!(
                &kind,
                "application/problem+json",
                "{} for {}",
                status,
                shown
            );
            prop_assert_eq!(before, after, "a refused body wrote: {}", shown);
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = outcome {
        panic!("{e}\ncoordinator log:\n{}", c.process.log());
    }
    let refused = refused.get();
    assert!(
        refused > 100,
        "the bodies must mostly be refusals to test them: {refused}"
    );
}
