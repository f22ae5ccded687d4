//! A ready axum [`Router`] for a [`ThreePhase`] participant: the four
//! operations at `/can_commit`, `/pre_commit`, `/do_commit` and `/abort`,
//! with the branch context, the operation and the signature checked before
//! any hook runs.

use super::{ThreePhase, ThreePhaseDatabase, ThreePhaseHooks};
use crate::context::BranchContext;
use crate::op::BranchOp;
use crate::signature::{SignatureKeys, SignedJson};
use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::Value;

impl<DB: ThreePhaseDatabase, B> FromRef<ThreePhase<DB, B>> for SignatureKeys {
    fn from_ref(participant: &ThreePhase<DB, B>) -> Self {
        participant.inner.signature_keys.clone()
    }
}

impl<DB: ThreePhaseDatabase, B: ThreePhaseHooks> ThreePhase<DB, B> {
    /// The four operations as POST routes, `/can_commit`, `/pre_commit`,
    /// `/do_commit` and `/abort`; nest it under a prefix of your service
    /// and register `{prefix}/can_commit` etc. as the branch URLs. Each
    /// route reads the branch context (400 without it), is bound to its
    /// operation ([`BranchContext::expect`]: a call whose `dtx-op` is not the
    /// route's is answered 400 and runs no hook; the coordinator retries it
    /// while someone fixes the URL), and checks the signature with the
    /// keys given to [`with_config`](Self::with_config).
    pub fn router(&self) -> Router {
        let route = |op: BranchOp| {
            post(
                move |State(participant): State<Self>,
                      ctx: BranchContext,
                      SignedJson(payload): SignedJson<Value>| async move {
                    if let Err(wrong) = ctx.expect(op) {
                        return wrong.into_response();
                    }
                    participant.handle(&ctx, &payload).await.into_response()
                },
            )
        };
        Router::new()
            .route("/can_commit", route(BranchOp::CanCommit))
            .route("/pre_commit", route(BranchOp::PreCommit))
            .route("/do_commit", route(BranchOp::DoCommit))
            .route("/abort", route(BranchOp::Abort))
            .with_state(self.clone())
    }
}
