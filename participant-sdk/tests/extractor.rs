//! The branch context extractor, the answers and the signature check, on a
//! tiny router driven with `oneshot` (no network).

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::FromRef;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use dtx_sdk::signature::sign;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, CallbackSecret, Mode, SignedJson};
use serde_json::{Value, json};
use tower::ServiceExt as _;

#[derive(Clone)]
struct State {
    secret: CallbackSecret,
}

impl FromRef<State> for CallbackSecret {
    fn from_ref(state: &State) -> Self {
        state.secret.clone()
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

/// Answers what the path says.
async fn answer(axum::extract::Path(kind): axum::extract::Path<String>) -> BranchAnswer {
    match kind.as_str() {
        "refused" => BranchAnswer::refused("out of stock"),
        "working" => BranchAnswer::StillWorking,
        "unknown" => BranchAnswer::unknown("downstream timed out"),
        _ => BranchAnswer::success(),
    }
}

fn app(secret: CallbackSecret) -> Router {
    Router::new()
        .route("/context", post(context_echo))
        .route("/signed", post(signed_echo))
        .route("/answer/{kind}", post(answer))
        .with_state(State { secret })
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
        app(CallbackSecret::disabled()),
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
        app(CallbackSecret::disabled()),
        call("/context", &headers, "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 400);
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
        app(CallbackSecret::disabled()),
        call("/context", &unknown, ""),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("`launch`"));

    let mismatch = [
        ("dtx-gid", "g"),
        ("dtx-branch", "b"),
        ("dtx-op", "try"),
        ("dtx-mode", "saga"),
    ];
    let (status, _, body) = send(
        app(CallbackSecret::disabled()),
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
async fn answers_map_to_the_coordinator_status_codes() {
    for (kind, expected) in [
        ("ok", StatusCode::OK),
        ("refused", StatusCode::CONFLICT),
        ("working", StatusCode::TOO_EARLY),
        ("unknown", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let (status, _, body) = send(
            app(CallbackSecret::disabled()),
            call(&format!("/answer/{kind}"), &[], ""),
        )
        .await;
        assert_eq!(status, expected, "{kind}");
        if kind == "refused" {
            assert_eq!(body["detail"], "out of stock");
        }
    }
}

#[tokio::test]
async fn a_correct_signature_is_accepted() {
    let body = r#"{"sku":"apple","qty":2}"#;
    let signature = sign(b"s3cret", "order-1", "stock", "try", body.as_bytes());
    let mut headers = CONTEXT.to_vec();
    headers.push(("dtx-signature", &signature));
    let (status, _, echoed) = send(
        app(CallbackSecret::new("s3cret")),
        call("/signed", &headers, body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, json!({"sku": "apple", "qty": 2}));
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_a_401() {
    let body = r#"{"sku":"apple","qty":2}"#;
    // Signed with another secret, signed for another body, or not at all.
    let wrong_secret = sign(b"other", "order-1", "stock", "try", body.as_bytes());
    let other_body = sign(b"s3cret", "order-1", "stock", "try", b"{}");
    let other_op = sign(b"s3cret", "order-1", "stock", "confirm", body.as_bytes());
    for signature in [
        Some(wrong_secret),
        Some(other_body),
        Some(other_op),
        Some("zz".into()),
        None,
    ] {
        let mut headers = CONTEXT.to_vec();
        if let Some(signature) = &signature {
            headers.push(("dtx-signature", signature));
        }
        let (status, content_type, problem) = send(
            app(CallbackSecret::new("s3cret")),
            call("/signed", &headers, body),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(content_type, "application/problem+json");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("dtx-signature")
        );
    }
}

#[tokio::test]
async fn without_a_secret_the_body_is_only_parsed() {
    let (status, _, echoed) = send(
        app(CallbackSecret::disabled()),
        call("/signed", &CONTEXT, r#"{"a":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, json!({"a": 1}));
    let (status, _, problem) = send(
        app(CallbackSecret::disabled()),
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
fn the_secret_never_shows_in_debug() {
    let shown = format!("{:?}", CallbackSecret::new("hunter2"));
    assert!(!shown.contains("hunter2"), "{shown}");
}
