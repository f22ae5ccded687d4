//! Signed participant calls through a real `dtx serve --signing-key`: a
//! participant on 127.0.0.1 that checks every call with the protocol's
//! verifier (against the method and the path and query the call arrived at)
//! accepts them; one whose keyring lacks dtx's key answers 401, which dtx
//! keeps in the history and retries; a short or empty secret stops start-up
//! with the reason. The answer to the termination query is signed with the
//! same key, over the nonce of the question.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::*;
use dtx_protocol::DecisionAnswer;
use dtx_protocol::signature::{
    DecisionNonce, DecisionSignatureError, DecisionVerifier, Keyring, SignedCall, SigningKey,
    Verifier,
};
use dtx_tests::process::Http;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEY: &str = "dtx-1:0123456789abcdef0123456789abcdef";

/// What the participant accepted: `METHOD target key` per call.
type Accepted = Arc<Mutex<Vec<String>>>;

/// A participant answering every path: 200 for a call whose
/// `dtx-signature` verifies under `ring`, else 401 with the reason.
async fn verifying_participant(ring: Keyring) -> (SocketAddr, Accepted) {
    let verifier = Arc::new(Verifier::new(ring));
    let accepted = Accepted::default();
    let log = accepted.clone();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (verifier, log) = (verifier.clone(), log.clone());
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let target = uri.path_and_query().map_or("/", |t| t.as_str()).to_owned();
            let call = SignedCall {
                method: method.as_str(),
                target: &target,
                body: &body,
                gid: &header("dtx-gid"),
                branch: &header("dtx-branch"),
                op: &header("dtx-op"),
                mode: &header("dtx-mode"),
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let signature = header("dtx-signature");
            match verifier.verify(Some(&signature), &call, now) {
                Ok(key) => {
                    log.lock().unwrap().push(format!("{method} {target} {key}"));
                    (StatusCode::OK, "{}".to_owned())
                }
                Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(handler);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, accepted)
}

fn key(text: &str) -> SigningKey {
    text.parse().unwrap()
}

#[tokio::test]
async fn a_participant_verifies_each_call_against_the_path_and_query_it_arrived_at() {
    let c = Coordinator::sqlite(&["--signing-key", KEY]).await;
    let (addr, accepted) = verifying_participant(Keyring::new([key(KEY)]).unwrap()).await;
    let body = json!({"gid": "signed-1", "mode": "saga", "options": fast_options(), "branches": [
        {"id": "stock", "action": format!("http://{addr}/stock/action?tenant=a"),
         "compensate": format!("http://{addr}/stock/compensate"), "payload": {"qty": 2}},
    ]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    let t = wait_final(&c, "signed-1").await;
    assert_eq!(status(&t), "committed", "{t:#}");
    assert_eq!(
        *accepted.lock().unwrap(),
        ["POST /stock/action?tenant=a dtx-1"]
    );
}

#[tokio::test]
async fn a_call_signed_with_a_key_the_participant_lacks_is_a_401_kept_in_the_history() {
    let c = Coordinator::sqlite(&["--signing-key", KEY]).await;
    let other = "other:fedcba9876543210fedcba9876543210";
    let (addr, accepted) = verifying_participant(Keyring::new([key(other)]).unwrap()).await;
    let body = json!({"gid": "unsigned-1", "mode": "saga", "options": fast_options(), "branches": [
        {"id": "stock", "action": format!("http://{addr}/stock/action"),
         "compensate": format!("http://{addr}/stock/compensate")},
    ]});
    let (code, t, _) = Http::new()
        .post_json(&c.url("/v1/transactions"), &body)
        .await;
    assert_eq!(code, 201, "{t}");
    // A 401 is an unknown answer: retried, with the participant's reason.
    wait_until(&c, "unsigned-1", Duration::from_secs(20), |t| {
        t["events"].as_array().into_iter().flatten().any(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("HTTP 401") && d.contains("`dtx-1`"))
        })
    })
    .await;
    assert!(accepted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_empty_or_short_secret_stops_start_up_with_the_reason() {
    for (key, says) in [
        ("dtx-1:tooShortSecret", "at least 32"),
        ("dtx-1:", "is empty"),
        ("no-separator", "ID:SECRET"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("dtx.db").display());
        let run = tokio::process::Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
            .args(["--signing-key", key])
            .kill_on_drop(true)
            .output();
        // Were the key accepted, dtx would serve until killed.
        let output = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap_or_else(|_| panic!("{key}: dtx started and kept running"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}: started");
        assert!(stderr.contains(says), "{key}: {stderr}");
        assert!(
            !stderr.contains("tooShortSecret"),
            "the secret is not echoed: {stderr}"
        );
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asks `c` the termination query for `gid` with `query` appended; the
/// status, the `dtx-signature` header and the body.
async fn ask_decision(c: &Coordinator, gid: &str, query: &str) -> (u16, Option<String>, String) {
    let url = c.url(&format!("/v1/transactions/{gid}/decision{query}"));
    let response = reqwest::get(url).await.unwrap();
    let signature = response
        .headers()
        .get("dtx-signature")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        signature,
        response.text().await.unwrap(),
    )
}

#[tokio::test]
async fn the_decision_answer_is_signed_over_the_nonce_of_the_question() {
    let c = Coordinator::sqlite(&["--signing-key", KEY]).await;
    let verifier = DecisionVerifier::new(Keyring::new([key(KEY)]).unwrap());
    let nonce = DecisionNonce::from_bytes([42; 16]);
    let (code, signature, body) = ask_decision(&c, "never-seen", &format!("?nonce={nonce}")).await;
    assert_eq!(code, 200, "{body}");
    let answer: DecisionAnswer = serde_json::from_str(&body).unwrap();
    assert_eq!(
        verifier.verify(
            signature.as_deref(),
            "never-seen",
            &nonce,
            &answer,
            unix_now()
        ),
        Ok("dtx-1")
    );
    // The same answer does not pass for the answer to another question.
    let later = DecisionNonce::from_bytes([43; 16]);
    assert_eq!(
        verifier.verify(
            signature.as_deref(),
            "never-seen",
            &later,
            &answer,
            unix_now()
        ),
        Err(DecisionSignatureError::OtherNonce)
    );
    // A question without a nonce is answered signed all the same.
    let (code, signature, _) = ask_decision(&c, "never-seen", "").await;
    assert_eq!(code, 200);
    assert!(signature.is_some_and(|s| s.starts_with("v2; key=dtx-1; ")));
    let (code, _, body) = ask_decision(&c, "never-seen", "?nonce=xyz").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("32 hex digits"), "{body}");
}

#[tokio::test]
async fn without_a_signing_key_the_decision_answer_is_unsigned_and_unchanged() {
    let c = Coordinator::sqlite(&[]).await;
    let (code, signature, body) =
        ask_decision(&c, "never-seen", "?nonce=00112233445566778899aabbccddeeff").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(signature, None);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        json!({"gid": "never-seen", "mode": null, "status": null, "decision": "abort"})
    );
}
