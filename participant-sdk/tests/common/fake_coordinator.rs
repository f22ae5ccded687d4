//! A stand-in for the coordinator's termination query on 127.0.0.1: an
//! axum server that answers `GET /v1/transactions/{gid}/decision` with the
//! decision of a table, honestly signed with the coordinator's key or
//! tampered with in one way (a [`Forgery`]), as whatever answers in the
//! coordinator's place (a spoofed address, a proxy, plain http) could.

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dtx_sdk::client::{Decision, DecisionAnswer};
use dtx_sdk::signature::{DecisionNonce, SigningKey};
use dtx_sdk::{Mode, Status};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The coordinator's key in these tests (`dtx serve --signing-key`).
pub const COORDINATOR_KEY: &str = "dtx-1:0123456789abcdef0123456789abcdef";
/// The same key id with another secret: an impostor's guess.
pub const SAME_ID_OTHER_SECRET: &str = "dtx-1:fedcba9876543210fedcba9876543210";
/// A key of another id, unknown to the participant.
pub const STRANGER_KEY: &str = "rogue:fedcba9876543210fedcba9876543210";

/// How the fake's answer differs from the coordinator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// None: signed with the coordinator's key, as `dtx serve` signs.
    Honest,
    /// No `dtx-signature` header (a coordinator without a key, or a forger
    /// without one).
    Unsigned,
    /// Signed with [`STRANGER_KEY`].
    StrangerKey,
    /// Signed with [`SAME_ID_OTHER_SECRET`].
    SameIdOtherSecret,
    /// Signed honestly for an earlier question: its nonce is not the one
    /// asked with (a replayed answer).
    OtherNonce,
    /// Signed honestly, then its decision changed (commit to abort, any
    /// other to commit).
    DecisionAltered,
    /// Signed honestly ten minutes ago (twice the window).
    Stale,
    /// An honest answer about another transaction, served for this one.
    OtherGid,
}

/// Starts a fake coordinator that answers each gid of `decisions` (any
/// other: presumed abort) tampered with as `forgery` says; its base URL.
pub async fn start(decisions: HashMap<&'static str, Decision>, forgery: Forgery) -> String {
    let decisions = Arc::new(decisions);
    let key: SigningKey = COORDINATOR_KEY.parse().unwrap();
    let handler = move |Path(gid): Path<String>, Query(query): Query<HashMap<String, String>>| {
        let (decisions, key) = (decisions.clone(), key.clone());
        async move { answer(&decisions, &key, forgery, gid, &query) }
    };
    let app = Router::new().route("/v1/transactions/{gid}/decision", get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn answer(
    decisions: &HashMap<&'static str, Decision>,
    key: &SigningKey,
    forgery: Forgery,
    gid: String,
    query: &HashMap<String, String>,
) -> Response {
    let asked: DecisionNonce = query
        .get("nonce")
        .expect("the client sends a nonce with every question")
        .parse()
        .expect("the nonce is 32 hex digits");
    let of = |gid: String| match decisions.get(gid.as_str()) {
        Some(Decision::Commit) => {
            DecisionAnswer::of(gid, Some(Mode::TwoPhase), Some(Status::Committing))
        }
        Some(Decision::Abort) => {
            DecisionAnswer::of(gid, Some(Mode::TwoPhase), Some(Status::Aborting))
        }
        Some(Decision::Pending) => {
            DecisionAnswer::of(gid, Some(Mode::TwoPhase), Some(Status::Preparing))
        }
        None => DecisionAnswer::of(gid, None, None),
    };
    let mut body = of(gid);
    let (mut signer, mut signed_at, mut nonce) = (key.clone(), unix_now(), asked);
    match forgery {
        Forgery::Honest | Forgery::Unsigned | Forgery::DecisionAltered => {}
        Forgery::StrangerKey => signer = STRANGER_KEY.parse().unwrap(),
        Forgery::SameIdOtherSecret => signer = SAME_ID_OTHER_SECRET.parse().unwrap(),
        Forgery::OtherNonce => nonce = DecisionNonce::from_bytes([0; 16]),
        Forgery::Stale => signed_at -= 600,
        Forgery::OtherGid => body = of("another-transaction".to_owned()),
    }
    let signature = signer.sign_decision(&body, signed_at, &nonce);
    if forgery == Forgery::DecisionAltered {
        body.decision = match body.decision {
            Decision::Commit => Decision::Abort,
            Decision::Abort | Decision::Pending => Decision::Commit,
        };
    }
    let header = (forgery != Forgery::Unsigned)
        .then(|| [(HeaderName::from_static("dtx-signature"), signature)]);
    (header, axum::Json(body)).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
