//! Placing an order through the coordinator with the SDK client: one order
//! is one global transaction whose gid is the order id, in the order's mode
//! (saga, TCC, 2PC or 3PC), with two branches, the inventory's stock and the
//! order service's own order row. (Only the `place-under-new-gid` planted
//! defect, [`crate::plants`], registers it under another gid.)

use crate::AppState;
use crate::plants::transaction_gid;
use crate::store::Order;
use dtx_sdk::client::mode::Upfront;
use dtx_sdk::client::{
    Branch, SagaBranch, TccBranch, ThreePhaseBranch, TransactionBuilder, TransactionView,
    TwoPhaseBranch,
};
use dtx_sdk::{ClientError, Status};
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The orders this process is placing right now, each with how many
/// placements of it are running. The reconciler places an order again only
/// when none is: an order whose transaction the coordinator does not know
/// yet is usually one whose `POST /orders` has not registered it yet, and
/// placing it again then would only wait for an outcome the first placement
/// is already waiting for.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<String, usize>>>);

impl InFlight {
    /// Marks `id` as being placed until the answer is dropped.
    pub fn begin(&self, id: &str) -> Placing {
        *self.lock().entry(id.to_owned()).or_default() += 1;
        Placing {
            in_flight: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Whether a placement of `id` is running in this process.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One running placement; see [`InFlight`].
#[derive(Debug)]
#[must_use = "the order is in flight only while this is held"]
pub struct Placing {
    in_flight: InFlight,
    id: String,
}

impl Drop for Placing {
    fn drop(&mut self) {
        let mut placing = self.in_flight.lock();
        if let Some(count) = placing.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                placing.remove(&self.id);
            }
        }
    }
}

/// Where placing an order ended.
#[derive(Debug)]
pub enum Placed {
    /// The transaction is final (committed or aborted); the order is settled.
    Settled(Order),
    /// The transaction is not final yet (slow participants) or its outcome
    /// could not be read; the order settles later (the
    /// [reconciler](crate::reconcile)).
    Unsettled(Order, String),
}

/// Runs the order's transaction in `order.mode` and waits for its outcome
/// (at most the configured wait), then records it on the order.
pub async fn place(state: &AppState, order: &Order) -> anyhow::Result<Placed> {
    let _placing = state.placing.begin(&order.id);
    let gid = transaction_gid(state.plant, order);
    let result = match order.mode.as_str() {
        "saga" => saga(state, order, &gid).await,
        "2pc" => two_phase(state, order, &gid).await,
        "3pc" => three_phase(state, order, &gid).await,
        _ => tcc(state, order, &gid).await,
    };
    match result {
        Ok(tx) => settle(state, &order.id, &tx, None).await,
        Err(e) => {
            tracing::warn!(order = order.id, error = %e, "the order's transaction did not settle");
            // Record why, then wait for the outcome: after a refused Try
            // the scope has asked for the abort, and the Cancels are on
            // their way; after a timeout there is nothing more to wait for.
            let reason = e.to_string();
            let outcome = match e {
                ClientError::TimedOut { .. } => state.client.get(&gid).await,
                _ => state.client.wait(&gid, state.wait).await,
            };
            match outcome {
                Ok(tx) if tx.is_final() => settle(state, &order.id, &tx, Some(&reason)).await,
                _ => {
                    state.db.settle(&order.id, false, Some(&reason)).await?;
                    Ok(Placed::Unsettled(load(state, &order.id).await?, reason))
                }
            }
        }
    }
}

/// A placement of `order` to run in the background (spawn it): the order
/// counts as in flight from this call on, before the task first runs, so
/// nothing places it a second time meanwhile. Logs where it ended.
pub fn in_background(state: &AppState, order: Order) -> impl Future<Output = ()> + Send + 'static {
    let placing = state.placing.begin(&order.id);
    let state = state.clone();
    async move {
        let _placing = placing;
        match place(&state, &order).await {
            Ok(Placed::Settled(order)) => {
                tracing::info!(order = order.id, status = order.status, "order settled");
            }
            Ok(Placed::Unsettled(order, why)) => {
                tracing::warn!(order = order.id, why, "order not settled yet");
            }
            Err(e) => tracing::warn!(order = order.id, error = %e, "placing the order failed"),
        }
    }
}

/// The saga: confirm the order, then sell the stock; if the inventory
/// refuses, the coordinator compensates both (the order is cancelled by its
/// own compensation). The order's branch comes first so that a refusal has
/// something real to compensate.
async fn saga(state: &AppState, order: &Order, gid: &str) -> Result<TransactionView, ClientError> {
    let (inventory, me) = (&state.inventory_url, &state.public_url);
    let order_branch = SagaBranch::new("order")
        .action(format!("{me}/saga/confirm-order"))
        .compensate(format!("{me}/saga/cancel-order"));
    let inventory_branch = SagaBranch::new("inventory")
        .action(format!("{inventory}/saga/reserve"))
        .compensate(format!("{inventory}/saga/release"));
    let saga = state.client.saga();
    register(state, order, gid, saga, order_branch, inventory_branch).await
}

/// TCC: hold the order, hold the stock, commit; the coordinator confirms
/// both, or cancels whatever was tried.
async fn tcc(state: &AppState, order: &Order, gid: &str) -> Result<TransactionView, ClientError> {
    let inventory = state.inventory_url.clone();
    let me = state.public_url.clone();
    let (sku, qty, id) = (order.sku.clone(), order.qty, order.id.clone());
    state
        .client
        .tcc()
        .with_gid(gid)
        .options(state.options.clone())
        .wait_for_outcome(state.wait)
        .run(|scope| async move {
            scope
                .try_branch(
                    TccBranch::new("order")
                        .try_url(format!("{me}/tcc/try-order"))
                        .confirm(format!("{me}/tcc/confirm-order"))
                        .cancel(format!("{me}/tcc/cancel-order"))
                        .payload(json!({"order_id": id})),
                )
                .await?;
            scope
                .try_branch(
                    TccBranch::new("inventory")
                        .try_url(format!("{inventory}/tcc/try"))
                        .confirm(format!("{inventory}/tcc/confirm"))
                        .cancel(format!("{inventory}/tcc/cancel"))
                        .payload(json!({"sku": sku, "qty": qty})),
                )
                .await?;
            Ok::<_, ClientError>(())
        })
        .await?;
    // The scope committed; the Confirms are delivered (or being delivered).
    state.client.wait(gid, state.wait).await
}

/// 2PC: the coordinator asks both branches to prepare (hold the order, hold
/// the stock) at once, then commits both, or rolls back both on a no.
async fn two_phase(
    state: &AppState,
    order: &Order,
    gid: &str,
) -> Result<TransactionView, ClientError> {
    let (inventory, me) = (&state.inventory_url, &state.public_url);
    let order_branch = TwoPhaseBranch::new("order")
        .prepare(format!("{me}/2pc/prepare-order"))
        .commit(format!("{me}/2pc/commit-order"))
        .rollback(format!("{me}/2pc/rollback-order"));
    let inventory_branch = TwoPhaseBranch::new("inventory")
        .prepare(format!("{inventory}/2pc/prepare"))
        .commit(format!("{inventory}/2pc/commit"))
        .rollback(format!("{inventory}/2pc/rollback"));
    let two_phase = state.client.two_phase();
    register(state, order, gid, two_phase, order_branch, inventory_branch).await
}

/// 3PC: both branches vote (nothing held), then pre-commit (hold), then
/// commit; a no or a missing ack aborts both.
async fn three_phase(
    state: &AppState,
    order: &Order,
    gid: &str,
) -> Result<TransactionView, ClientError> {
    let (inventory, me) = (&state.inventory_url, &state.public_url);
    let order_branch = ThreePhaseBranch::new("order")
        .can_commit(format!("{me}/3pc/can-commit-order"))
        .pre_commit(format!("{me}/3pc/pre-commit-order"))
        .do_commit(format!("{me}/3pc/do-commit-order"))
        .abort(format!("{me}/3pc/abort-order"));
    let inventory_branch = ThreePhaseBranch::new("inventory")
        .can_commit(format!("{inventory}/3pc/can_commit"))
        .pre_commit(format!("{inventory}/3pc/pre_commit"))
        .do_commit(format!("{inventory}/3pc/do_commit"))
        .abort(format!("{inventory}/3pc/abort"));
    let three_phase = state.client.three_phase();
    register(
        state,
        order,
        gid,
        three_phase,
        order_branch,
        inventory_branch,
    )
    .await
}

/// Registers a transaction whose branches are all known at once (saga, 2PC,
/// 3PC) under `gid`, the order's branch first, each with its payload, and
/// waits for its outcome.
async fn register<M: Upfront>(
    state: &AppState,
    order: &Order,
    gid: &str,
    builder: TransactionBuilder<M>,
    order_branch: Branch<M>,
    inventory_branch: Branch<M>,
) -> Result<TransactionView, ClientError> {
    builder
        .with_gid(gid)
        .options(state.options.clone())
        .branch(order_branch.payload(json!({"order_id": order.id})))
        .branch(inventory_branch.payload(json!({"sku": order.sku, "qty": order.qty})))
        .submit_and_wait(state.wait)
        .await
}

/// Records a transaction's outcome on its order.
pub(crate) async fn settle(
    state: &AppState,
    id: &str,
    tx: &TransactionView,
    reason: Option<&str>,
) -> anyhow::Result<Placed> {
    let aborted = tx.status == Status::Aborted;
    let why = match (reason, aborted) {
        (Some(reason), _) => Some(reason.to_owned()),
        (None, true) => Some(abort_reason(tx)),
        (None, false) => None,
    };
    state.db.settle(id, aborted, why.as_deref()).await?;
    let order = load(state, id).await?;
    Ok(if tx.is_final() {
        Placed::Settled(order)
    } else {
        Placed::Unsettled(order, format!("the transaction is still {}", tx.status))
    })
}

/// Why an aborted transaction was aborted, in one line: the coordinator's
/// reason and the refusing branch with its participant's own reason (e.g.
/// "a branch refused its action (inventory: not enough pear available for
/// 9 unit(s))"), falling back to that branch's last error when the
/// coordinator keeps no refusal.
fn abort_reason(tx: &TransactionView) -> String {
    let Some(cause) = tx.abort_cause() else {
        return "aborted".to_owned();
    };
    let last_error = || {
        cause
            .branch_id
            .and_then(|id| tx.branch(id))
            .and_then(|branch| branch.last_error.as_deref())
    };
    match (cause.branch_id, cause.refusal.or_else(last_error)) {
        (Some(branch), Some(why)) => format!("{} ({branch}: {why})", cause.reason),
        _ => cause.to_string(),
    }
}

async fn load(state: &AppState, id: &str) -> anyhow::Result<Order> {
    state
        .db
        .get(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("order {id} vanished"))
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn an_order_is_in_flight_until_its_last_placement_ends() {
        let in_flight = InFlight::default();
        assert!(!in_flight.contains("o1"));
        let first = in_flight.begin("o1");
        let second = in_flight.begin("o1");
        let other = in_flight.begin("o2");
        drop(first);
        assert!(in_flight.contains("o1"), "the second placement still runs");
        drop(second);
        assert!(!in_flight.contains("o1"));
        assert!(in_flight.contains("o2"));
        drop(other);
        assert!(!in_flight.contains("o2"));
    }
}
