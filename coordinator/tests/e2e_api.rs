//! The API's contract: problem+json for bad input (and nothing changed),
//! idempotent registration, listing, health and metrics.

mod common;

use common::*;
use dtx_tests::participant::FakeParticipant;
use dtx_tests::process::Http;
use serde_json::json;

async fn count_transactions(c: &Coordinator) -> usize {
    let (code, page) = Http::new()
        .get_json(&c.url("/v1/transactions?limit=1000"))
        .await;
    assert_eq!(code, 200, "{page}");
    page["transactions"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    let c = Coordinator::sqlite(&["--max-body-bytes", "2000"]).await;
    let p = FakeParticipant::start().await;
    let ok_branch = saga_branch(&p, "a");
    let client = reqwest::Client::new();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"mode\": ".into(), 400, ""),
        ("unknown mode", json!({"mode": "xa", "branches": [ok_branch]}).to_string(), 400, "unknown variant"),
        ("empty branch id", json!({"mode": "saga", "branches": [saga_branch(&p, "")]}).to_string(), 400, "non-empty"),
        ("duplicate ids", json!({"mode": "saga", "branches": [ok_branch, ok_branch]}).to_string(), 400, "used twice"),
        (
            "cycle",
            json!({"mode": "saga", "branches": [
                {"id": "x", "action": "http://h/a", "compensate": "http://h/c", "depends_on": ["y"]},
                {"id": "y", "action": "http://h/a", "compensate": "http://h/c", "depends_on": ["x"]}]})
            .to_string(),
            400,
            "cycle",
        ),
        (
            "non-http URL",
            json!({"mode": "saga", "branches": [{"id": "x", "action": "file:///etc/passwd", "compensate": "http://h/c"}]}).to_string(),
            400,
            "http or https",
        ),
        ("body over the limit", json!({"mode": "saga", "branches": [ok_branch], "pad": "x".repeat(5000)}).to_string(), 413, "limit"),
    ];
    for (name, body, expected_code, expected_detail) in cases {
        let response = client
            .post(c.url("/v1/transactions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let ctype = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(code, expected_code, "{name}: {problem}");
        assert_eq!(ctype, "application/problem+json", "{name}");
        assert_eq!(problem["status"], expected_code, "{name}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(expected_detail),
            "{name}: {problem}"
        );
    }
    assert_eq!(count_transactions(&c).await, 0, "bad input changed nothing");
    assert!(p.calls().is_empty());
}

#[tokio::test]
async fn same_gid_same_body_is_the_same_transaction_and_another_body_conflicts() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    let body = json!({"gid": "idem-1", "mode": "saga", "branches": [saga_branch(&p, "a")]});
    let http = Http::new();
    let (first, t1, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=5000"), &body)
        .await;
    let (second, t2, _) = http
        .post_json(&c.url("/v1/transactions?wait_ms=5000"), &body)
        .await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(t1["gid"], t2["gid"]);
    assert_eq!(
        p.count("/a/action"),
        1,
        "the retry did not run the saga again"
    );
    let other = json!({"gid": "idem-1", "mode": "saga", "branches": [saga_branch(&p, "b")]});
    let (code, problem, ctype) = http.post_json(&c.url("/v1/transactions"), &other).await;
    assert_eq!(
        (code, ctype.as_str()),
        (409, "application/problem+json"),
        "{problem}"
    );
    assert_eq!(count_transactions(&c).await, 1);
}

#[tokio::test]
async fn list_filters_and_pages_without_gaps_or_duplicates() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    p.set_default("/bad/action", dtx_tests::participant::Answer::Status(409));
    let http = Http::new();
    for i in 0..7 {
        let branch = if i % 2 == 0 {
            saga_branch(&p, "a")
        } else {
            saga_branch(&p, "bad")
        };
        let body = json!({"gid": format!("list-{i}"), "mode": "saga", "branches": [branch]});
        http.post_json(&c.url("/v1/transactions?wait_ms=5000"), &body)
            .await;
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut url = c.url("/v1/transactions?limit=3");
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let (code, page) = http.get_json(&url).await;
        assert_eq!(code, 200, "{page}");
        seen.extend(
            page["transactions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["gid"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 7, "{seen:?}");
    let (_, aborted) = http
        .get_json(&c.url("/v1/transactions?status=aborted"))
        .await;
    assert_eq!(aborted["transactions"].as_array().unwrap().len(), 3);
    for bad in ["status=sideways", "cursor=garbage", "limit=0"] {
        let (code, problem) = http
            .get_json(&c.url(&format!("/v1/transactions?{bad}")))
            .await;
        assert_eq!(code, 400, "{bad}: {problem}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let c = Coordinator::sqlite(&[]).await;
    let p = FakeParticipant::start().await;
    Http::new()
        .post_json(
            &c.url("/v1/transactions?wait_ms=5000"),
            &json!({"mode": "saga", "branches": [saga_branch(&p, "a")]}),
        )
        .await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            reqwest::get(c.url(path)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let metrics = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dtx_transactions_registered_total{mode=\"saga\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dtx_transactions_finished_total{mode=\"saga\",status=\"committed\"} 1"),
        "{metrics}"
    );
    let (code, _) = Http::new().get_json(&c.url("/v2/whatever")).await;
    assert_eq!(code, 404);
}
