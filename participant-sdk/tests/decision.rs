//! `Client::decision` (the termination query) over real HTTP, against a
//! stand-in for the coordinator's `GET /v1/transactions/{gid}/decision`
//! that answers as `docs/two-and-three-phase.md` documents.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use dtx_sdk::client::{ClientError, Decision};
use dtx_sdk::{Client, Mode, Status};
use serde_json::{Value, json};

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
