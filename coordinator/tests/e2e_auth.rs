//! API tokens end to end against a real `dtx serve`: who may do what, in
//! which namespace, and what the history says about it.

mod common;

use common::*;
use dtx_coordinator::auth::{Role, new_token};
use dtx_tests::participant::FakeParticipant;
use serde_json::{Value, json};
use std::process::Stdio;

/// A token file with these `(name, role, namespace)` tokens; the tokens, in
/// the same order, and the file's directory (kept alive by the caller).
fn token_file(grants: &[(&str, Role, &str)]) -> (Vec<String>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec!["# tokens for the test".to_owned()];
    let mut tokens = Vec::new();
    for (name, role, namespace) in grants {
        let (token, line) = new_token(name, *role, namespace).unwrap();
        tokens.push(token);
        lines.push(line);
    }
    let path = dir.path().join("tokens");
    std::fs::write(&path, lines.join("\n")).unwrap();
    (tokens, dir, path.display().to_string())
}

/// A call with an optional bearer token: status, body, content type.
async fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        kind,
    )
}

fn tcc(gid: &str) -> Value {
    json!({"gid": gid, "mode": "tcc", "options": fast_options()})
}

#[tokio::test]
async fn without_a_known_token_every_api_call_is_401_and_health_stays_open() {
    let (_tokens, _dir, file) = token_file(&[("orders", Role::Initiator, "shop")]);
    let c = Coordinator::sqlite(&["--tokens", &file]).await;
    for (method, path) in [
        ("POST", "/v1/transactions"),
        ("GET", "/v1/transactions"),
        ("GET", "/v1/transactions/g1"),
        ("POST", "/v1/transactions/g1/commit"),
        ("GET", "/v1/transactions/g1/decision"),
        ("GET", "/metrics"),
    ] {
        for token in [None, Some("dtx_not-a-token")] {
            let (code, problem, kind) = call(method, &c.url(path), token, Some(&tcc("g1"))).await;
            assert_eq!(code, 401, "{method} {path} with {token:?}: {problem}");
            assert_eq!(kind, "application/problem+json");
            assert_eq!(problem["type"], "urn:dtx:problem:unauthorized", "{problem}");
        }
    }
    let (code, _, _) = call("GET", &c.url("/healthz"), None, None).await;
    assert_eq!(code, 200);
    let (code, _, _) = call("GET", &c.url("/readyz"), None, None).await;
    assert_eq!(code, 200);
    let (code, list, _) = call("GET", &c.url("/v1/transactions"), Some(&_tokens[0]), None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(
        list["transactions"],
        json!([]),
        "the refused registrations wrote nothing"
    );
}

#[tokio::test]
async fn a_namespace_sees_only_its_own_transactions_and_a_reader_only_reads() {
    let (t, _dir, file) = token_file(&[
        ("shop-app", Role::Initiator, "shop"),
        ("bank-app", Role::Initiator, "bank"),
        ("shop-viewer", Role::Reader, "shop"),
        ("admin", Role::Operator, "ops"),
    ]);
    let (shop, bank, viewer, admin) = (&t[0], &t[1], &t[2], &t[3]);
    let c = Coordinator::sqlite(&["--tokens", &file]).await;
    let p = FakeParticipant::start().await;
    let (code, body, _) = call(
        "POST",
        &c.url("/v1/transactions"),
        Some(shop),
        Some(&tcc("s1")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["namespace"], "shop");
    let (code, body, _) = call(
        "POST",
        &c.url("/v1/transactions"),
        Some(bank),
        Some(&tcc("b1")),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    // Another namespace: 404 for every call, as if the transaction were absent.
    let branch = tcc_branch(&p, "a");
    for (method, path, body) in [
        ("GET", "/v1/transactions/s1", None),
        ("POST", "/v1/transactions/s1/branches", Some(&branch)),
        ("POST", "/v1/transactions/s1/commit", None),
        ("POST", "/v1/transactions/s1/abort", None),
        ("GET", "/v1/transactions/s1/decision", None),
    ] {
        let (code, problem, kind) = call(method, &c.url(path), Some(bank), body).await;
        assert_eq!(code, 404, "{method} {path}: {problem}");
        assert_eq!(kind, "application/problem+json");
        assert_eq!(problem["detail"], "transaction `s1` does not exist");
    }
    // The same gid cannot be taken by another namespace, and shows nothing.
    let (code, problem, _) = call(
        "POST",
        &c.url("/v1/transactions"),
        Some(bank),
        Some(&tcc("s1")),
    )
    .await;
    assert_eq!(code, 409, "{problem}");
    assert!(problem.to_string().contains("already in use"), "{problem}");

    let gids = |list: &Value| -> Vec<String> {
        list["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["gid"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, list, _) = call("GET", &c.url("/v1/transactions"), Some(bank), None).await;
    assert_eq!(gids(&list), ["b1"]);
    let (_, list, _) = call("GET", &c.url("/v1/transactions"), Some(viewer), None).await;
    assert_eq!(gids(&list), ["s1"]);
    let (_, list, _) = call("GET", &c.url("/v1/transactions"), Some(admin), None).await;
    let mut all = gids(&list);
    all.sort();
    assert_eq!(all, ["b1", "s1"], "an operator sees every namespace");

    // A reader reads its namespace but changes nothing.
    let (code, view, _) = call("GET", &c.url("/v1/transactions/s1"), Some(viewer), None).await;
    assert_eq!(code, 200, "{view}");
    for (method, path, body) in [
        ("POST", "/v1/transactions", Some(&tcc("r1"))),
        ("POST", "/v1/transactions/s1/branches", Some(&branch)),
        ("POST", "/v1/transactions/s1/commit", None),
        ("POST", "/v1/transactions/s1/abort", None),
    ] {
        let (code, problem, kind) = call(method, &c.url(path), Some(viewer), body).await;
        assert_eq!(code, 403, "{method} {path}: {problem}");
        assert_eq!(kind, "application/problem+json");
        assert!(
            problem["detail"].as_str().unwrap().contains("`reader`"),
            "{problem}"
        );
    }
    let (_, view, _) = call("GET", &c.url("/v1/transactions/s1"), Some(shop), None).await;
    assert_eq!(
        view["status"], "open",
        "nothing the refused calls asked for happened"
    );
    assert_eq!(view["branches"], json!([]));

    // A participant asking with the wrong token is never told "abort".
    let (code, answer, _) = call(
        "GET",
        &c.url("/v1/transactions/s1/decision"),
        Some(viewer),
        None,
    )
    .await;
    assert_eq!(
        (code, &answer["decision"]),
        (200, &json!("pending")),
        "{answer}"
    );
}

#[tokio::test]
async fn the_history_names_the_token_that_registered_added_a_branch_and_committed() {
    let (t, _dir, file) = token_file(&[("shop-app", Role::Initiator, "shop")]);
    let c = Coordinator::sqlite(&["--tokens", &file]).await;
    let p = FakeParticipant::start().await;
    let token = Some(t[0].as_str());
    let (code, _, _) = call("POST", &c.url("/v1/transactions"), token, Some(&tcc("h1"))).await;
    assert_eq!(code, 201);
    let (code, _, _) = call(
        "POST",
        &c.url("/v1/transactions/h1/branches"),
        token,
        Some(&tcc_branch(&p, "a")),
    )
    .await;
    assert_eq!(code, 201);
    let (code, view, _) = call(
        "POST",
        &c.url("/v1/transactions/h1/commit?wait_ms=10000"),
        token,
        None,
    )
    .await;
    assert_eq!(
        (code, view["status"].as_str()),
        (200, Some("committed")),
        "{view}"
    );
    let (_, view, _) = call("GET", &c.url("/v1/transactions/h1"), token, None).await;
    let details: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    for expected in [
        "registered tcc transaction with 0 branches by token `shop-app`",
        "branch registered at index 0 by token `shop-app`",
    ] {
        assert!(details.contains(&expected), "{expected:?} in {details:?}");
    }
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("committing:") && d.ends_with("by token `shop-app`")),
        "{details:?}"
    );
}

#[tokio::test]
async fn metrics_need_a_token_on_the_api_address_and_not_on_their_own() {
    let (t, _dir, file) = token_file(&[("scraper", Role::Reader, "ops")]);
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c = Coordinator::sqlite(&[
        "--tokens",
        &file,
        "--metrics-listen",
        &metrics_port.to_string(),
    ])
    .await;
    let (code, _, _) = call("GET", &c.url("/metrics"), None, None).await;
    assert_eq!(code, 401);
    let (code, text, _) = call("GET", &c.url("/metrics"), Some(&t[0]), None).await;
    assert_eq!(code, 200);
    assert!(text.as_str().unwrap().contains("# EOF"), "{text}");
    let (code, text, _) = call("GET", &format!("http://{metrics_port}/metrics"), None, None).await;
    assert_eq!(code, 200, "{text}");
    let (code, _, _) = call(
        "GET",
        &format!("http://{metrics_port}/v1/transactions"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 404, "the metrics listener serves nothing else");
}

#[tokio::test]
async fn an_open_api_is_refused_off_loopback_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("dtx.db").display());
    let output = tokio::process::Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--db", &db])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve an API without tokens"),
        "{stderr}"
    );
    // Explicitly asked for, it runs (and is told to say so).
    let c = Coordinator::on(&db, "open", &["--listen", "0.0.0.0:0", "--insecure-open"]).await;
    let (code, _, _) = call("GET", &c.url("/v1/transactions"), None, None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn token_new_prints_a_token_and_the_line_that_grants_it() {
    let output = std::process::Command::new(binary())
        .args([
            "token",
            "new",
            "--name",
            "cli",
            "--role",
            "initiator",
            "--namespace",
            "shop",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout
        .split_whitespace()
        .find(|w| w.starts_with("dtx_"))
        .unwrap()
        .to_owned();
    let line = stdout.lines().last().unwrap();
    assert!(line.starts_with("cli initiator shop sha256:"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, line).unwrap();
    let c = Coordinator::sqlite(&["--tokens", file.to_str().unwrap()]).await;
    let (code, body, _) = call(
        "POST",
        &c.url("/v1/transactions"),
        Some(&token),
        Some(&tcc("t1")),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // For scripts: the line goes to the file, only the token to stdout.
    let appended = dir.path().join("appended");
    let mut tokens = Vec::new();
    for name in ["one", "two"] {
        let output = std::process::Command::new(binary())
            .args([
                "token",
                "new",
                "--name",
                name,
                "--role",
                "reader",
                "--append-to",
            ])
            .arg(&appended)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        tokens.push(String::from_utf8(output.stdout).unwrap().trim().to_owned());
    }
    assert_eq!(
        std::fs::read_to_string(&appended).unwrap().lines().count(),
        2
    );
    let c = Coordinator::sqlite(&["--tokens", appended.to_str().unwrap()]).await;
    for token in &tokens {
        let (code, body, _) = call("GET", &c.url("/v1/transactions"), Some(token), None).await;
        assert_eq!(code, 200, "{body}");
    }
    let bad = std::process::Command::new(binary())
        .args(["token", "new", "--name", "x", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
