//! The inventory's 3PC branch (`/3pc/can_commit`, `/3pc/pre_commit`,
//! `/3pc/do_commit`, `/3pc/abort`) on the SDK's [`ThreePhase`] helper, on
//! whichever database the service uses. The helper keeps the branch state
//! (in `dtx_three_phase`, in the same local transaction as each hook) and
//! its watchdog applies the 3PC timeout rules; the hooks here only move
//! stock:
//!
//! | hook | stock | ledger |
//! |---|---|---|
//! | `can_commit` | none; votes no (409) unless `qty` units are available | none |
//! | `pre_commit` | available → reserved; refuses if they are gone meanwhile | `pre_commit` |
//! | `do_commit` | reserved → sold | `do_commit` |
//! | `abort` | reserved → available (the helper calls it only for a pre-committed branch: a branch that only voted holds nothing) | `abort` |
//!
//! With the planted defect `abort-sells-3pc` ([`crate::plants`]) the abort
//! hook sells reserved → sold instead.

use crate::plants::Plant;
use crate::store::{CallRef, Movement, StockRequest, Store, has_available, move_stock, not_enough};
use dtx_sdk::db::{Conn, Db};
use dtx_sdk::three_phase::{
    ThreePhase, ThreePhaseConfig, ThreePhaseError, ThreePhaseHooks, Watchdog,
};
use dtx_sdk::{BranchAnswer, BranchContext, Client, SignatureKeys, WorkError};
use serde_json::Value;
use sqlx::{Postgres, Sqlite};

/// The stock hooks of the 3PC branch, written once for both backends; the
/// payload is `{"sku", "qty"}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StockHooks {
    /// The planted defect, if any (only `abort-sells-3pc` concerns 3PC).
    plant: Option<Plant>,
}

impl StockHooks {
    /// What the abort hook moves: it releases the hold, unless the planted
    /// defect `abort-sells-3pc` makes it sell.
    fn abort_movement(self) -> Movement {
        match self.plant {
            Some(Plant::AbortSells3pc) => Movement::Apply,
            _ => Movement::Release,
        }
    }
}

/// The payload, or a refusal (a malformed payload can never commit).
fn request(payload: &Value) -> Result<StockRequest, WorkError> {
    match serde_json::from_value::<StockRequest>(payload.clone()) {
        Ok(req) if req.qty > 0 => Ok(req),
        Ok(_) => Err(WorkError::refused("qty must be positive")),
        Err(e) => Err(WorkError::refused(format!(
            "the payload is not {{sku, qty}}: {e}"
        ))),
    }
}

/// Moves the payload's units and writes the ledger row named after the
/// hook's operation; refuses when the source column is short.
async fn step(
    conn: Conn<'_>,
    ctx: &BranchContext,
    movement: Movement,
    payload: &Value,
) -> Result<(), WorkError> {
    let req = request(payload)?;
    if move_stock(conn, &CallRef::of(ctx), movement, &req.sku, req.qty).await? {
        Ok(())
    } else {
        Err(WorkError::refused(not_enough(&req.sku, movement, req.qty)))
    }
}

impl ThreePhaseHooks for StockHooks {
    async fn can_commit(
        &self,
        conn: Conn<'_>,
        _ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        let req = request(payload)?;
        if has_available(conn, &req.sku, req.qty).await? {
            Ok(())
        } else {
            Err(WorkError::refused(not_enough(
                &req.sku,
                Movement::Hold,
                req.qty,
            )))
        }
    }

    async fn pre_commit(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        step(conn, ctx, Movement::Hold, payload).await
    }

    async fn do_commit(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        step(conn, ctx, Movement::Apply, payload).await
    }

    async fn abort(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        step(conn, ctx, self.abort_movement(), payload).await
    }
}

/// The 3PC participant on the service's backend.
#[derive(Debug, Clone)]
pub enum StockThreePhase {
    /// On the SQLite pool.
    Sqlite(ThreePhase<Sqlite, StockHooks>),
    /// On the PostgreSQL pool.
    Postgres(ThreePhase<Postgres, StockHooks>),
}

impl StockThreePhase {
    /// The participant on `db`'s pool, its state table migrated; calls are
    /// checked against `signature_keys`, the watchdog runs with `config`; `plant`
    /// is the planted defect, if any ([`crate::plants`]).
    pub async fn new(
        store: &Store,
        config: ThreePhaseConfig,
        signature_keys: SignatureKeys,
        plant: Option<Plant>,
    ) -> Result<StockThreePhase, ThreePhaseError> {
        let hooks = StockHooks { plant };
        let participant = match store.db() {
            Db::Sqlite(pool) => StockThreePhase::Sqlite(ThreePhase::with_config(
                pool.clone(),
                hooks,
                config,
                signature_keys,
            )),
            Db::Postgres(pool) => StockThreePhase::Postgres(ThreePhase::with_config(
                pool.clone(),
                hooks,
                config,
                signature_keys,
            )),
        };
        match &participant {
            StockThreePhase::Sqlite(p) => p.migrate().await?,
            StockThreePhase::Postgres(p) => p.migrate().await?,
        }
        Ok(participant)
    }

    /// Carries out a call (`dtx-op` checked against the route by the caller).
    pub async fn handle(
        &self,
        ctx: &BranchContext,
        payload: &Value,
    ) -> Result<BranchAnswer, ThreePhaseError> {
        match self {
            StockThreePhase::Sqlite(p) => p.handle(ctx, payload).await,
            StockThreePhase::Postgres(p) => p.handle(ctx, payload).await,
        }
    }

    /// Starts the watchdog, asking `coordinator` about branches in doubt;
    /// it stops when the returned handle is dropped.
    pub fn spawn_watchdog(&self, coordinator: Client) -> Watchdog {
        match self {
            StockThreePhase::Sqlite(p) => p.spawn_watchdog(coordinator),
            StockThreePhase::Postgres(p) => p.spawn_watchdog(coordinator),
        }
    }
}
