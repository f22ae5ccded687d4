//! The 3PC state machine: which step is allowed from which state (a pure
//! table, [`plan`]), and [`ThreePhase::handle`], which applies a step in one
//! local transaction with the state row and the business hook.

use super::store::Change;
use super::{
    BranchState, DecidedBy, ThreePhase, ThreePhaseDatabase, ThreePhaseError, ThreePhaseHooks,
};
use crate::answer::BranchAnswer;
use crate::context::BranchContext;
use crate::op::BranchOp;
use crate::refusal::WorkError;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

const SAVEPOINT: &str = "SAVEPOINT dtx_three_phase_hook";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT dtx_three_phase_hook";

/// What is asked of a branch: the four calls, and the watchdog's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    CanCommit,
    PreCommit,
    DoCommit,
    Abort,
    /// The watchdog learnt (or the timeout rule says) commit: from
    /// `voted_yes` this runs the pre-commit hook first, since no
    /// `pre_commit` call ever arrived.
    ResolveCommit,
}

/// A business hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    CanCommit,
    PreCommit,
    DoCommit,
    Abort,
}

impl Hook {
    fn op(self) -> BranchOp {
        match self {
            Hook::CanCommit => BranchOp::CanCommit,
            Hook::PreCommit => BranchOp::PreCommit,
            Hook::DoCommit => BranchOp::DoCommit,
            Hook::Abort => BranchOp::Abort,
        }
    }
}

/// What a step does from a state.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Nothing changes; answer this (a repeat, a suspension).
    Answer(BranchAnswer),
    /// Nothing changes; the coordinator broke the protocol. Answered 409.
    Violation(&'static str),
    /// Run the hooks, then move to `to`; `decided` says whether `to` is a
    /// decision (whose author is recorded).
    Move {
        to: BranchState,
        hooks: &'static [Hook],
        decided: bool,
    },
}

fn plan(step: Step, current: Option<BranchState>, detail: Option<&str>) -> Plan {
    use BranchState::{Aborted, Committed, PreCommitted, VotedYes};
    let ok = || Plan::Answer(BranchAnswer::success());
    let refused = |why: &str| Plan::Answer(BranchAnswer::refused(why));
    match (step, current) {
        (Step::CanCommit, None) => Plan::Move {
            to: VotedYes,
            hooks: &[Hook::CanCommit],
            decided: false,
        },
        (Step::CanCommit, Some(VotedYes | PreCommitted | Committed)) => ok(),
        (Step::CanCommit, Some(Aborted)) => {
            refused(detail.unwrap_or("this branch was aborted here; it cannot commit"))
        }
        (Step::PreCommit, None) => {
            refused("pre_commit of a branch that did not vote yes here; it cannot commit")
        }
        (Step::PreCommit, Some(VotedYes)) => Plan::Move {
            to: PreCommitted,
            hooks: &[Hook::PreCommit],
            decided: false,
        },
        (Step::PreCommit, Some(PreCommitted | Committed)) => ok(),
        (Step::PreCommit, Some(Aborted)) => refused(
            "this branch was aborted here before its pre_commit arrived, so it must not \
             pre-commit now (suspension)",
        ),
        (Step::DoCommit, None | Some(VotedYes)) => {
            Plan::Violation("do_commit of a branch that did not pre-commit here")
        }
        (Step::DoCommit | Step::ResolveCommit, Some(PreCommitted)) => Plan::Move {
            to: Committed,
            hooks: &[Hook::DoCommit],
            decided: true,
        },
        (Step::DoCommit | Step::ResolveCommit, Some(Committed)) => ok(),
        (Step::DoCommit | Step::ResolveCommit, Some(Aborted)) => {
            Plan::Violation("commit of a branch that was aborted here")
        }
        (Step::ResolveCommit, Some(VotedYes)) => Plan::Move {
            to: Committed,
            hooks: &[Hook::PreCommit, Hook::DoCommit],
            decided: true,
        },
        (Step::ResolveCommit, None) => Plan::Violation("commit of a branch unknown here"),
        // can_commit holds nothing, so aborting before pre_commit runs no
        // hook; a null abort records `aborted` so a late call is refused.
        (Step::Abort, None | Some(VotedYes)) => Plan::Move {
            to: Aborted,
            hooks: &[],
            decided: true,
        },
        (Step::Abort, Some(PreCommitted)) => Plan::Move {
            to: Aborted,
            hooks: &[Hook::Abort],
            decided: true,
        },
        (Step::Abort, Some(Aborted)) => ok(),
        (Step::Abort, Some(Committed)) => Plan::Violation("abort of a branch that committed here"),
    }
}

impl<DB: ThreePhaseDatabase, B: ThreePhaseHooks> ThreePhase<DB, B> {
    /// Carries out the call described by `ctx` (its `dtx-op`: `can_commit`,
    /// `pre_commit`, `do_commit` or `abort`) with the branch payload the
    /// coordinator sent, in one local transaction with the state row, and
    /// returns the answer to give (see the table in the [module
    /// documentation](super)). Use it from your own axum handler, or serve
    /// [`router`](Self::router).
    pub async fn handle(
        &self,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<BranchAnswer, ThreePhaseError> {
        let step = match ctx.op() {
            BranchOp::CanCommit => Step::CanCommit,
            BranchOp::PreCommit => Step::PreCommit,
            BranchOp::DoCommit => Step::DoCommit,
            BranchOp::Abort => Step::Abort,
            other => {
                // A routing mistake: 500 keeps the coordinator retrying and
                // shows the reason, while someone fixes the URL.
                return Ok(BranchAnswer::unknown(format!(
                    "`{other}` is not a 3PC operation; check the branch URLs"
                )));
            }
        };
        let answer = self
            .apply(step, ctx, Some(payload), DecidedBy::Coordinator, None)
            .await?;
        Ok(answer.unwrap_or_else(|| BranchAnswer::unknown("the branch changed meanwhile")))
    }

    /// Applies `step`. With `expect`, only if the branch is still in that
    /// state (the watchdog's guard against a call that arrived since it
    /// looked); `None` when it was not.
    pub(super) async fn apply(
        &self,
        step: Step,
        ctx: &BranchContext,
        call_payload: Option<&Value>,
        by: DecidedBy,
        expect: Option<BranchState>,
    ) -> Result<Option<BranchAnswer>, ThreePhaseError> {
        let (gid, branch_id) = (ctx.gid(), ctx.branch_id());
        let call_payload_text = call_payload.map(Value::to_string);
        // Two rounds at most: a first step that loses the race to insert the
        // row runs again and then answers as the winner's row says.
        for _ in 0..2 {
            let mut tx = DB::begin_step(&self.inner.pool).await?;
            // A hook waiting on a row a prepared 2PC branch holds would keep
            // this connection until that branch's decision: give up instead
            // (see `crate::db`, "Lock waits on PostgreSQL").
            DB::hook_conn(&mut tx).bound_lock_waits().await?;
            let row = DB::load(&mut *tx, gid, branch_id).await?;
            let current = match &row {
                None => None,
                Some(row) => Some(BranchState::parse(&row.state).ok_or_else(|| {
                    ThreePhaseError::Corrupt(format!(
                        "branch {gid}/{branch_id} has state `{}`",
                        row.state
                    ))
                })?),
            };
            if expect.is_some() && current != expect {
                return Ok(None);
            }
            let detail = row.as_ref().and_then(|r| r.detail.as_deref());
            let (to, hooks, decided) = match plan(step, current, detail) {
                Plan::Answer(answer) => return Ok(Some(answer)),
                Plan::Violation(what) => {
                    tracing::error!(gid, branch = branch_id, "3PC protocol violation: {what}");
                    return Ok(Some(BranchAnswer::refused(format!(
                        "{what} (protocol violation; nothing was changed)"
                    ))));
                }
                Plan::Move { to, hooks, decided } => (to, hooks, decided),
            };
            let payload: Value = row
                .as_ref()
                .and_then(|r| r.payload.as_deref())
                .and_then(|p| serde_json::from_str(p).ok())
                .or_else(|| call_payload.cloned())
                .unwrap_or(Value::Null);
            let mut change = Change {
                gid,
                branch_id,
                state: to.as_str(),
                decided_by: decided.then_some(by.as_str()),
                payload: call_payload_text.as_deref(),
                detail: (step == Step::Abort && current.is_none())
                    .then_some("aborted before can_commit arrived (null abort)"),
                now_ms: now_ms(),
            };
            DB::run_sql(&mut *tx, SAVEPOINT).await?;
            let mut refusal = None;
            for &hook in hooks {
                match self.run_hook(hook, &mut *tx, ctx, &payload).await {
                    Ok(()) => {}
                    Err(WorkError::Database(e)) => return Err(e.into()),
                    Err(WorkError::Failed(e)) => return Err(ThreePhaseError::Failed(e)),
                    Err(WorkError::Refused(refused)) => {
                        refusal = Some(refused.into_reason());
                        break;
                    }
                }
            }
            if let Some(reason) = &refusal {
                if !matches!(step, Step::CanCommit | Step::PreCommit) {
                    // Phase two must succeed: change nothing, let the
                    // coordinator retry and flag it.
                    tracing::error!(gid, branch = branch_id, %reason, "3PC phase-two hook refused");
                    return Ok(Some(BranchAnswer::Refused(reason.clone())));
                }
                // A no in phase one: undo the hook, abort the branch here.
                DB::run_sql(&mut *tx, ROLLBACK_TO_SAVEPOINT).await?;
                change.state = BranchState::Aborted.as_str();
                change.decided_by = Some(DecidedBy::Participant.as_str());
                change.detail = Some(reason);
            }
            let written = if current.is_none() {
                DB::insert_row(&mut *tx, change).await?
            } else {
                DB::update_row(&mut *tx, change).await?;
                true
            };
            if !written {
                continue;
            }
            tx.commit().await?;
            return Ok(Some(match refusal {
                Some(reason) => BranchAnswer::Refused(reason),
                None => BranchAnswer::success(),
            }));
        }
        Err(ThreePhaseError::Corrupt(format!(
            "branch {gid}/{branch_id}: its row conflicts but cannot be read"
        )))
    }

    async fn run_hook(
        &self,
        hook: Hook,
        conn: &mut DB::Connection,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        // The watchdog runs hooks without a call: give each hook a context
        // naming its own operation.
        let own;
        let ctx = if ctx.op() == hook.op() {
            ctx
        } else {
            own = BranchContext::new(ctx.gid(), ctx.branch_id(), hook.op());
            &own
        };
        let (hooks, conn) = (&self.inner.branch, DB::hook_conn(conn));
        match hook {
            Hook::CanCommit => hooks.can_commit(conn, ctx, payload).await,
            Hook::PreCommit => hooks.pre_commit(conn, ctx, payload).await,
            Hook::DoCommit => hooks.do_commit(conn, ctx, payload).await,
            Hook::Abort => hooks.abort(conn, ctx, payload).await,
        }
    }
}

pub(super) fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

pub(super) fn ms_of(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use BranchState::*;

    #[test]
    fn repeats_answer_as_the_first_and_violations_change_nothing() {
        assert_eq!(
            plan(Step::CanCommit, Some(PreCommitted), None),
            Plan::Answer(BranchAnswer::success())
        );
        assert!(matches!(
            plan(Step::DoCommit, Some(VotedYes), None),
            Plan::Violation(_)
        ));
        assert!(matches!(
            plan(Step::Abort, Some(Committed), None),
            Plan::Violation(_)
        ));
        assert!(matches!(
            plan(Step::PreCommit, Some(Aborted), None),
            Plan::Answer(BranchAnswer::Refused(_))
        ));
        assert_eq!(
            plan(Step::ResolveCommit, Some(VotedYes), None),
            Plan::Move {
                to: Committed,
                hooks: &[Hook::PreCommit, Hook::DoCommit],
                decided: true
            }
        );
        assert_eq!(
            plan(Step::Abort, None, None),
            Plan::Move {
                to: Aborted,
                hooks: &[],
                decided: true
            }
        );
    }
}
