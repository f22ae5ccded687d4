//! `Client::decision` (the termination query) over real HTTP, against a
//! stand-in for the coordinator's `GET /v1/transactions/{gid}/decision`
//! that answers as `docs/two-and-three-phase.md` documents; and the
//! verification of signed answers, against a real `dtx serve
//! --signing-key` and against a fake coordinator that forges them.

mod common;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use common::Coordinator;
use common::fake_coordinator::{self, COORDINATOR_KEY, Forgery, STRANGER_KEY};
use dtx_sdk::client::{ClientError, Decision, TwoPhaseBranch};
use dtx_sdk::signature::{DecisionSignatureError, Keyring};
use dtx_sdk::{Client, Mode, Status};
use dtx_tests::participant::FakeParticipant;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

async fn decision(Path(gid): Path<String>) -> Json<Value> {
    Json(match gid.as_str() {
        "g-commit" => {
            json!({"gid": gid, "mode": "2pc", "status": "committing", "decision": "commit"})
        }
        "g-pending" => {
            json!({"gid": gid, "mode": "3pc", "status": "pre_committing", "decision": "pending"})
        }
        // Presumed abort: the coordinator has no record of the gid.
        _ => json!({"gid": gid, "mode": null, "status": null, "decision": "abort"}),
    })
}

#[tokio::test]
async fn decision_reads_commit_pending_and_presumed_abort() {
    let app = Router::new().route("/v1/transactions/{gid}/decision", get(decision));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(&url).unwrap();

    let commit = client.decision("g-commit").await.unwrap();
    assert_eq!(commit.decision, Decision::Commit);
    assert_eq!(commit.status, Some(Status::Committing));
    assert_eq!(commit.mode, Some(Mode::TwoPhase));

    let pending = client.decision("g-pending").await.unwrap();
    assert_eq!(pending.decision, Decision::Pending);
    assert_eq!(pending.status, Some(Status::PreCommitting));

    let unknown = client.decision("never-seen").await.unwrap();
    assert_eq!(unknown.decision, Decision::Abort);
    assert_eq!(unknown.status, None);
}

#[tokio::test]
async fn decision_from_an_unreachable_coordinator_is_unreachable() {
    let client = Client::new("http://127.0.0.1:1").unwrap();
    let error = client.decision("g1").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_unreachable());
}

/// The keyring of `keys` (`ID:SECRET` each).
fn ring(keys: &[&str]) -> Keyring {
    Keyring::new(keys.iter().map(|k| k.parse().unwrap())).unwrap()
}

/// A client of `url` that verifies answers with the coordinator's key.
fn verifying_client(url: &str) -> Client {
    Client::builder(url)
        .coordinator_keys(ring(&[COORDINATOR_KEY]))
        .build()
        .unwrap()
}

/// Why `result` was refused as unverified; panics on anything else.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> DecisionSignatureError {
    match result {
        Err(error @ ClientError::UnverifiedDecision { .. }) => {
            assert!(!error.is_unreachable(), "{error:?}");
            let ClientError::UnverifiedDecision { source, .. } = error else {
                unreachable!()
            };
            source
        }
        other => panic!("expected UnverifiedDecision, got {other:?}"),
    }
}

#[tokio::test]
async fn a_real_coordinators_signed_answer_verifies() {
    let (coordinator, fake) = (
        Coordinator::start(&["--signing-key", COORDINATOR_KEY]).await,
        FakeParticipant::start().await,
    );
    let client = verifying_client(&coordinator.url());
    let tx = client
        .two_phase()
        .branch(
            TwoPhaseBranch::new("stock")
                .prepare(fake.url("/stock/prepare"))
                .commit(fake.url("/stock/commit"))
                .rollback(fake.url("/stock/rollback")),
        )
        .submit_and_wait(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(tx.status, Status::Committed);

    let commit = client.decision(&tx.gid).await.unwrap();
    assert_eq!(commit.decision, Decision::Commit);
    assert_eq!(commit.mode, Some(Mode::TwoPhase));
    assert_eq!(commit.status, Some(Status::Committed));
    let presumed_abort = client.decision("never-registered").await.unwrap();
    assert_eq!(presumed_abort.decision, Decision::Abort);
    assert_eq!(presumed_abort.status, None);
}

#[tokio::test]
async fn a_real_coordinator_with_another_key_or_none_is_not_trusted() {
    let with_another_key = Coordinator::start(&["--signing-key", STRANGER_KEY]).await;
    let error = verifying_client(&with_another_key.url())
        .decision("g1")
        .await;
    assert_eq!(
        refusal(error),
        DecisionSignatureError::UnknownKey {
            key: "rogue".into()
        }
    );
    let without_key = Coordinator::start(&[]).await;
    let error = verifying_client(&without_key.url()).decision("g1").await;
    assert_eq!(refusal(error), DecisionSignatureError::Unsigned);
    // A client without the coordinator's keys takes the answer as before.
    let unverified = Client::new(&without_key.url())
        .unwrap()
        .decision("g1")
        .await
        .unwrap();
    assert_eq!(unverified.decision, Decision::Abort);
}

#[tokio::test]
async fn a_forged_answer_from_a_fake_coordinator_is_refused() {
    let honest =
        fake_coordinator::start(HashMap::from([("g1", Decision::Abort)]), Forgery::Honest).await;
    let answer = verifying_client(&honest).decision("g1").await.unwrap();
    assert_eq!(
        answer.decision,
        Decision::Abort,
        "the fake signs as dtx does"
    );

    let refused_as = |forgery| async move {
        let url = fake_coordinator::start(HashMap::from([("g1", Decision::Abort)]), forgery).await;
        refusal(verifying_client(&url).decision("g1").await)
    };
    for (forgery, expected) in [
        (Forgery::Unsigned, DecisionSignatureError::Unsigned),
        (
            Forgery::StrangerKey,
            DecisionSignatureError::UnknownKey {
                key: "rogue".into(),
            },
        ),
        (Forgery::SameIdOtherSecret, DecisionSignatureError::Mismatch),
        (Forgery::OtherNonce, DecisionSignatureError::OtherNonce),
        (Forgery::DecisionAltered, DecisionSignatureError::Mismatch),
        (
            Forgery::OtherGid,
            DecisionSignatureError::OtherGid {
                asked: "g1".into(),
                answered: "another-transaction".into(),
            },
        ),
    ] {
        assert_eq!(refused_as(forgery).await, expected, "{forgery:?}");
    }
    let stale = refused_as(Forgery::Stale).await;
    assert!(
        matches!(
            stale,
            DecisionSignatureError::Stale {
                age: 600..,
                window: 300
            }
        ),
        "{stale:?}"
    );
}

#[tokio::test]
async fn without_the_coordinators_keys_a_forged_answer_is_taken_as_before() {
    let url = fake_coordinator::start(HashMap::new(), Forgery::DecisionAltered).await;
    let answer = Client::new(&url).unwrap().decision("g1").await.unwrap();
    assert_eq!(
        answer.decision,
        Decision::Commit,
        "unverified: the forger decides"
    );
}
