//! Planted defects: deliberate, named ways for the service to go wrong, so
//! that the fault-injection harness can prove its checker catches each one.
//! Test-only: chosen with the hidden flag `--unsafe-plant <NAME>` (env
//! `ORDERS_UNSAFE_PLANT`), at most one, none by default; the service warns
//! loudly at start when one is active. Without a plant nothing here changes
//! any behaviour.
//!
//! | name | what the service then does wrong | checker rule it must trip |
//! |---|---|---|
//! | `answer-before-outcome` | `POST /orders` answers 201 with the order shown `confirmed` as soon as its row is inserted, and places it in the background: an order then refused (out of stock) ends `cancelled` though its client was told `confirmed` | `client_told_otherwise` |
//! | `place-under-new-gid` | the order's transaction is registered under `{id}-again`, not the order id; its branches' payloads still name the order (its own branch still moves it) and the order is settled from that transaction | `orphan_gid` (a transaction and ledger rows whose gid is no order); the order disagrees with the coordinator and the ledger (nothing under its own gid) |
//! | `double-insert` | `POST /orders` inserts two order rows for one request (the second under a new id) and places both; it answers about the first only | more orders than the clients asked for |
//! | `compensation-keeps-order` | the order branch's saga compensation (`/saga/cancel-order`) succeeds through the barrier without cancelling the order, and settling an aborted saga leaves a `confirmed` order as it is: a saga refused by the inventory ends aborted with the order `confirmed` | `order_disagrees_with_coordinator` (and with the ledger, which moved nothing) |

use crate::store::Order;

/// One planted defect; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum Plant {
    /// Answer `confirmed` before the outcome is known.
    AnswerBeforeOutcome,
    /// Register the order's transaction under a gid that is not the order id.
    PlaceUnderNewGid,
    /// Insert (and place) two orders for one request.
    DoubleInsert,
    /// The saga compensation of the order branch leaves the order confirmed.
    CompensationKeepsOrder,
}

impl Plant {
    /// The name the flag takes, e.g. `answer-before-outcome`.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// The gid of `order`'s global transaction: the order id, except under
/// [`Plant::PlaceUnderNewGid`].
pub fn transaction_gid(plant: Option<Plant>, order: &Order) -> String {
    match plant {
        Some(Plant::PlaceUnderNewGid) => format!("{}-again", order.id),
        _ => order.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_plant_parses_from_its_exact_name() {
        let names = [
            ("answer-before-outcome", Plant::AnswerBeforeOutcome),
            ("place-under-new-gid", Plant::PlaceUnderNewGid),
            ("double-insert", Plant::DoubleInsert),
            ("compensation-keeps-order", Plant::CompensationKeepsOrder),
        ];
        for (name, plant) in names {
            assert_eq!(Plant::from_str(name, false), Ok(plant), "{name}");
            assert_eq!(plant.name(), name);
        }
        assert_eq!(Plant::value_variants().len(), names.len());
    }

    #[test]
    fn other_spellings_are_refused() {
        for name in ["", "AnswerBeforeOutcome", "answer_before_outcome", "none"] {
            assert!(Plant::from_str(name, false).is_err(), "{name:?}");
        }
    }

    #[test]
    fn only_the_new_gid_plant_moves_the_transaction_off_the_order_id() {
        let order = Order {
            id: "order-1".into(),
            sku: "apple".into(),
            qty: 1,
            mode: "saga".into(),
            status: "new".into(),
            reason: None,
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(transaction_gid(None, &order), "order-1");
        for plant in Plant::value_variants() {
            let expected = if *plant == Plant::PlaceUnderNewGid {
                "order-1-again"
            } else {
                "order-1"
            };
            assert_eq!(transaction_gid(Some(*plant), &order), expected);
        }
    }
}
