//! A ready axum [`Router`] for a [`ThreePhase`] participant: the four
//! operations at `/can_commit`, `/pre_commit`, `/do_commit` and `/abort`,
//! with the branch context and signature checked before any hook runs.

use super::{ThreePhase, ThreePhaseBranch, ThreePhaseDatabase};
use crate::answer::BranchAnswer;
use crate::context::{BranchContext, BranchOp};
use crate::signature::{CallbackSecret, SignedJson};
use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use serde_json::Value;

impl<DB: ThreePhaseDatabase, B> FromRef<ThreePhase<DB, B>> for CallbackSecret {
    fn from_ref(participant: &ThreePhase<DB, B>) -> Self {
        participant.inner.secret.clone()
    }
}

impl<DB: ThreePhaseDatabase, B: ThreePhaseBranch<DB>> ThreePhase<DB, B> {
    /// The four operations as POST routes, `/can_commit`, `/pre_commit`,
    /// `/do_commit` and `/abort`; nest it under a prefix of your service
    /// and register `{prefix}/can_commit` etc. as the branch URLs. Each
    /// route reads the branch context (400 without it), checks the
    /// signature with the secret given to
    /// [`with_config`](Self::with_config), and refuses (500, so the call is
    /// retried while someone fixes the URL) a call whose `dtx-op` is not the
    /// route's.
    pub fn router(&self) -> Router {
        let route = |op: BranchOp| {
            post(
                move |State(participant): State<Self>,
                      ctx: BranchContext,
                      SignedJson(payload): SignedJson<Value>| async move {
                    if ctx.op() != op {
                        return Ok(BranchAnswer::unknown(format!(
                            "this URL serves `{op}` but the call is `{}`; check the branch URLs",
                            ctx.op()
                        )));
                    }
                    participant.handle(&ctx, &payload).await
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
