//! The branch context extractor, the answers and the signature check, on a
//! tiny router driven with `oneshot` (no network).

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::FromRef;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use dtx_sdk::signature::SignedCall;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, Mode, SignatureKeys, SignedJson, SigningKey};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use tower::ServiceExt as _;

#[derive(Clone)]
struct State {
    keys: SignatureKeys,
}

impl FromRef<State> for SignatureKeys {
    fn from_ref(state: &State) -> Self {
        state.keys.clone()
    }
}

/// Echoes the context, so the tests can see what was extracted.
async fn context_echo(ctx: BranchContext) -> BranchAnswer {
    BranchAnswer::Success(Some(json!({
        "gid": ctx.gid(),
        "branch": ctx.branch_id(),
        "op": ctx.op().as_str(),
        "mode": ctx.mode().as_str(),
        "traceparent": ctx.traceparent(),
    })))
}

/// Echoes the verified body.
async fn signed_echo(_ctx: BranchContext, SignedJson(body): SignedJson<Value>) -> BranchAnswer {
    BranchAnswer::Success(Some(body))
}

/// A compensation endpoint, bound to its operation.
async fn refund(ctx: BranchContext) -> Result<BranchAnswer, dtx_sdk::barrier::BarrierError> {
    ctx.expect(BranchOp::Compensate)?;
    Ok(BranchAnswer::success())
}

/// Answers what the path says.
async fn answer(axum::extract::Path(kind): axum::extract::Path<String>) -> BranchAnswer {
    match kind.as_str() {
        "refused" => BranchAnswer::refused("out of stock"),
        "working" => BranchAnswer::StillWorking,
        "unknown" => BranchAnswer::unknown("downstream timed out"),
        _ => BranchAnswer::success(),
    }
}

fn app(keys: SignatureKeys) -> Router {
    Router::new()
        .route("/context", post(context_echo))
        .route("/signed", post(signed_echo))
        .route("/refund", post(refund))
        .route("/answer/{kind}", post(answer))
        .with_state(State { keys })
}

fn call(path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

const CONTEXT: [(&str, &str); 4] = [
    ("dtx-gid", "order-1"),
    ("dtx-branch", "stock"),
    ("dtx-op", "try"),
    ("dtx-mode", "tcc"),
];

async fn send(router: Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let response: Response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test]
async fn context_is_read_from_the_headers() {
    let mut headers = CONTEXT.to_vec();
    headers.push(("traceparent", "00-aa-bb-01"));
    let (status, _, body) = send(
        app(SignatureKeys::disabled()),
        call("/context", &headers, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"gid": "order-1", "branch": "stock", "op": "try", "mode": "tcc", "traceparent": "00-aa-bb-01"})
    );
}

#[tokio::test]
async fn missing_headers_are_a_400_problem_naming_each() {
    let headers = [("dtx-branch", "stock"), ("dtx-mode", "tcc")];
    let (status, content_type, body) = send(
        app(SignatureKeys::disabled()),
        call("/context", &headers, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 400);
    assert_eq!(body["title"], "Missing branch context");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("`dtx-gid`"), "{detail}");
    assert!(detail.contains("`dtx-op`"), "{detail}");
    assert!(!detail.contains("`dtx-branch`"), "{detail}");
}

#[tokio::test]
async fn unknown_op_and_op_of_another_mode_are_rejected() {
    let unknown = [
        ("dtx-gid", "g"),
        ("dtx-branch", "b"),
        ("dtx-op", "launch"),
        ("dtx-mode", "saga"),
    ];
    let (status, _, body) = send(
        app(SignatureKeys::disabled()),
        call("/context", &unknown, ""),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("`launch`"), "{detail}");
    assert!(
        detail.contains("can_commit"),
        "every operation is listed: {detail}"
    );
    // Every header is there: the context is invalid, not missing.
    assert_eq!(body["title"], "Invalid branch context");
    assert_eq!(body["type"], "urn:dtx:problem:invalid-branch-context");

    let mismatch = [
        ("dtx-gid", "g"),
        ("dtx-branch", "b"),
        ("dtx-op", "try"),
        ("dtx-mode", "saga"),
    ];
    let (status, _, body) = send(
        app(SignatureKeys::disabled()),
        call("/context", &mismatch, ""),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not an operation of a saga"),
        "{body}"
    );
}

#[tokio::test]
async fn a_handler_bound_to_its_operation_refuses_any_other_with_what_is_wrong() {
    let compensate = [
        ("dtx-gid", "g"),
        ("dtx-branch", "b"),
        ("dtx-op", "compensate"),
        ("dtx-mode", "saga"),
    ];
    let (status, _, _) = send(
        app(SignatureKeys::disabled()),
        call("/refund", &compensate, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A well-formed call for the action, sent to the compensation's URL.
    let action = [
        ("dtx-gid", "g"),
        ("dtx-branch", "b"),
        ("dtx-op", "action"),
        ("dtx-mode", "saga"),
    ];
    let (status, content_type, body) = send(
        app(SignatureKeys::disabled()),
        call("/refund", &action, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["type"], "urn:dtx:problem:wrong-operation");
    assert_eq!(body["title"], "Wrong operation");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("carries out `compensate`") && detail.contains("`dtx-op` is `action`"),
        "{detail}"
    );
}

#[test]
fn expect_names_both_operations() {
    let ctx = BranchContext::new("g", "b", BranchOp::Try);
    assert_eq!(ctx.expect(BranchOp::Try), Ok(()));
    let wrong = ctx.expect(BranchOp::Cancel).unwrap_err();
    assert_eq!(
        (wrong.expected, wrong.got),
        (BranchOp::Cancel, BranchOp::Try)
    );
}

#[tokio::test]
async fn answers_map_to_the_coordinator_status_codes() {
    for (kind, expected) in [
        ("ok", StatusCode::OK),
        ("refused", StatusCode::CONFLICT),
        ("working", StatusCode::TOO_EARLY),
        ("unknown", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let (status, _, body) = send(
            app(SignatureKeys::disabled()),
            call(&format!("/answer/{kind}"), &[], ""),
        )
        .await;
        assert_eq!(status, expected, "{kind}");
        if kind == "refused" {
            assert_eq!(body["detail"], "out of stock");
        }
    }
}

const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

fn key(id: &str, secret: &str) -> SigningKey {
    SigningKey::new(id, secret).unwrap()
}

fn keys(ring: &[SigningKey]) -> SignatureKeys {
    SignatureKeys::new(ring.iter().cloned()).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `dtx-signature` header of a POST of `body` to `target` with the
/// [`CONTEXT`] headers, signed now with `nonce`.
fn signature(key: &SigningKey, target: &str, op: &str, body: &str, nonce: u8) -> String {
    let call = SignedCall {
        method: "POST",
        target,
        body: body.as_bytes(),
        gid: "order-1",
        branch: "stock",
        op,
        mode: "tcc",
    };
    key.sign(&call, now(), [nonce; 16])
}

#[tokio::test]
async fn a_correct_signature_is_accepted() {
    let body = r#"{"sku":"apple","qty":2}"#;
    let k1 = key("k1", SECRET);
    let signature = signature(&k1, "/signed", "try", body, 1);
    let mut headers = CONTEXT.to_vec();
    headers.push(("dtx-signature", &signature));
    let (status, _, echoed) = send(app(keys(&[k1])), call("/signed", &headers, body)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, json!({"sku": "apple", "qty": 2}));
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_a_401() {
    let body = r#"{"sku":"apple","qty":2}"#;
    let k1 = key("k1", SECRET);
    // Signed with another secret under the same id, with an unknown key,
    // for another body, operation or path, in version 1, or not at all.
    let wrong_secret = signature(
        &key("k1", &SECRET.replace('s', "z")),
        "/signed",
        "try",
        body,
        1,
    );
    let unknown_key = signature(&key("k9", SECRET), "/signed", "try", body, 2);
    let other_body = signature(&k1, "/signed", "try", "{}", 3);
    let other_op = signature(&k1, "/signed", "confirm", body, 4);
    let other_path = signature(&k1, "/context", "try", body, 5);
    let version_1 = "a".repeat(64);
    for signature in [
        Some(wrong_secret),
        Some(unknown_key),
        Some(other_body),
        Some(other_op),
        Some(other_path),
        Some(version_1),
        Some("zz".into()),
        None,
    ] {
        let mut headers = CONTEXT.to_vec();
        if let Some(signature) = &signature {
            headers.push(("dtx-signature", signature));
        }
        let (status, content_type, problem) = send(
            app(keys(std::slice::from_ref(&k1))),
            call("/signed", &headers, body),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["type"], "urn:dtx:problem:bad-signature");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("dtx-signature")
        );
    }
}

#[tokio::test]
async fn a_full_replay_cache_is_a_503_with_retry_after() {
    use dtx_sdk::signature::{Keyring, Verifier};
    let k1 = key("k1", SECRET);
    let verifier = Verifier::new(Keyring::new([k1.clone()]).unwrap()).replay_capacity(1);
    let router = app(SignatureKeys::with_verifier(verifier));
    let body = "{}";
    for (nonce, expected) in [(1, StatusCode::OK), (2, StatusCode::SERVICE_UNAVAILABLE)] {
        let signature = signature(&k1, "/signed", "try", body, nonce);
        let mut headers = CONTEXT.to_vec();
        headers.push(("dtx-signature", &signature));
        let response: Response = router
            .clone()
            .oneshot(call("/signed", &headers, body))
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        if expected == StatusCode::SERVICE_UNAVAILABLE {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=301).contains(&retry_after), "{retry_after}");
        }
    }
}

#[tokio::test]
async fn without_a_secret_the_body_is_only_parsed() {
    let (status, _, echoed) = send(
        app(SignatureKeys::disabled()),
        call("/signed", &CONTEXT, r#"{"a":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, json!({"a": 1}));
    let (status, _, problem) = send(
        app(SignatureKeys::disabled()),
        call("/signed", &CONTEXT, "{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["title"], "Invalid JSON body");
}

#[test]
fn ops_know_their_mode_and_what_they_undo() {
    assert_eq!(BranchOp::Cancel.undoes(), Some(BranchOp::Try));
    assert_eq!(BranchOp::Compensate.undoes(), Some(BranchOp::Action));
    assert_eq!(BranchOp::Confirm.undoes(), None);
    assert_eq!(BranchOp::Try.mode(), Mode::Tcc);
    assert_eq!(BranchOp::Rollback.undoes(), Some(BranchOp::Prepare));
    assert_eq!(BranchOp::Abort.undoes(), Some(BranchOp::PreCommit));
    assert_eq!(BranchOp::CanCommit.undoes(), None);
    assert_eq!(BranchOp::Prepare.mode(), Mode::TwoPhase);
    assert_eq!(BranchOp::DoCommit.mode(), Mode::ThreePhase);
    assert_eq!("compensate".parse::<BranchOp>(), Ok(BranchOp::Compensate));
    assert_eq!("pre_commit".parse::<BranchOp>(), Ok(BranchOp::PreCommit));
    assert!("precommit".parse::<BranchOp>().is_err());
}

#[test]
fn a_secret_never_shows_in_debug() {
    let k1 = key("k1", SECRET);
    let shown = format!("{:?} {k1:?}", keys(std::slice::from_ref(&k1)));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("k1"), "{shown}");
}
