//! The inventory's 2PC branch (`/2pc/prepare`, `/2pc/commit`,
//! `/2pc/rollback`), prepared in one of two ways:
//!
//! - **PostgreSQL with prepared transactions** ([`TwoPhase::Xa`], the SDK's
//!   [`XaParticipant`]): prepare sells the units (available → sold) inside
//!   a transaction that ends with `PREPARE TRANSACTION`, so the sale and its
//!   `prepare` ledger row are durable but invisible, and the product row is
//!   locked, until `COMMIT PREPARED` (commit) or `ROLLBACK PREPARED`
//!   (rollback, which leaves no trace). Nothing moves after the decision, so
//!   a branch left prepared by a crash is finished by
//!   [`XaParticipant::recover`] alone, which the service runs at start.
//! - **SQLite** (or PostgreSQL with `max_prepared_transactions = 0`, with a
//!   warning) ([`TwoPhase::Reservation`]): the reservation-based prepare the
//!   SDK documents (`dtx_sdk::xa::sqlite`), behind the barrier: prepare
//!   holds (available → reserved), commit sells the hold (reserved → sold),
//!   rollback releases it (reserved → available); each writes its ledger
//!   row (`prepare`, `commit`, `rollback`).
//!
//! Either way a prepare that finds too few units available votes no (409).
//!
//! A prepared sale keeps the product row locked until its decision, so
//! every other call moving that product waits for it. The SDK bounds those
//! waits ([`dtx_sdk::db::POSTGRES_LOCK_TIMEOUT`]: past it the call answers
//! 503 or 500 and the coordinator asks again) and gives the decisions
//! connections of their own, so the calls waiting on a prepared row can
//! never take the connection its commit needs (the lock-up of issue 16,
//! `tests/lock_waits_postgres.rs`).

use crate::AppState;
use crate::store::{CallRef, Movement, Store, move_stock, not_enough};
use axum::response::{IntoResponse, Response};
use dtx_sdk::db::{Conn, Db};
use dtx_sdk::xa::{RecoverySummary, XaError, XaParticipant};
use dtx_sdk::{BranchContext, BranchOp, Client, WorkError};

/// How this inventory prepares 2PC branches; see the module documentation.
#[derive(Debug, Clone)]
pub enum TwoPhase {
    /// PostgreSQL prepared transactions: prepare = available → sold, held
    /// prepared until the decision.
    Xa(XaParticipant),
    /// Reservation behind the barrier: prepare = available → reserved.
    Reservation,
}

impl TwoPhase {
    /// The way `db` supports: XA on a PostgreSQL server that allows prepared
    /// transactions (its tables migrated), the reservation otherwise.
    pub async fn for_db(store: &Store) -> anyhow::Result<TwoPhase> {
        let Db::Postgres(pool) = store.db() else {
            return Ok(TwoPhase::Reservation);
        };
        match XaParticipant::new(pool.clone()).await {
            Ok(xa) => {
                xa.migrate().await?;
                Ok(TwoPhase::Xa(xa))
            }
            // The sample should still serve 2PC on a default server, so
            // fall back, but loudly: holds are then visible as `reserved`.
            Err(XaError::PreparedTransactionsDisabled(why)) => {
                tracing::warn!(%why, "2PC falls back to the reservation-based prepare");
                Ok(TwoPhase::Reservation)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves the branches a previous run left prepared, by asking the
    /// coordinator for each decision. `None` for the reservation, whose holds
    /// are ordinary committed rows that the coordinator's retried commit or
    /// rollback settles.
    pub async fn recover(&self, coordinator: &Client) -> Result<Option<RecoverySummary>, XaError> {
        match self {
            TwoPhase::Xa(xa) => xa.recover(coordinator).await.map(Some),
            TwoPhase::Reservation => Ok(None),
        }
    }
}

/// Carries out a 2PC call (its operation already checked against the route).
pub(crate) async fn call(state: &AppState, ctx: &BranchContext, sku: &str, qty: i64) -> Response {
    let TwoPhase::Xa(xa) = &state.two_phase else {
        return state.db.apply(ctx, sku, qty).await.into_response();
    };
    let answer = match ctx.op() {
        BranchOp::Prepare => {
            let (call, sku) = (CallRef::of(ctx), sku.to_owned());
            xa.prepare(ctx, move |conn| {
                Box::pin(async move {
                    // Sold at once: the prepared transaction is the hold.
                    if move_stock(Conn::from(conn), &call, Movement::Sell, &sku, qty).await? {
                        Ok(())
                    } else {
                        Err(WorkError::refused(not_enough(&sku, Movement::Sell, qty)))
                    }
                })
            })
            .await
        }
        BranchOp::Commit => xa.commit(ctx).await,
        _ => xa.rollback(ctx).await,
    };
    answer.into_response()
}
