//! Reading the truth back from a cluster for the checker: the inventory's
//! products and ledger, the order service's orders, and every transaction in
//! the coordinators' log (through their HTTP APIs), and waiting until
//! nothing is left to settle.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::checker::{LedgerRow, Observed, OrderRow, Product, TransactionRow};
use super::cluster::{Cluster, Node};
use crate::error::TestSupportError;

/// GETs `path` of `node` and parses the JSON answer.
async fn get<T: DeserializeOwned>(
    cluster: &Cluster,
    node: Node,
    path: &str,
) -> Result<T, TestSupportError> {
    let url = format!("{}{path}", cluster.url(node));
    let failed = |why: String| TestSupportError::Service {
        what: format!("GET {path} of {node}"),
        why,
    };
    let response = cluster
        .http()
        .get(&url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| failed(format!("{e}: {text}")))
}

/// Every transaction in the log, through `coordinator`, following cursors.
/// With `branches`, also the branch statuses of 2PC and 3PC transactions,
/// which the checker needs: one more request per such transaction, so the
/// polling loops leave it out.
pub async fn transactions(
    cluster: &Cluster,
    coordinator: Node,
    branches: bool,
) -> Result<Vec<TransactionRow>, TestSupportError> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/transactions?limit=1000&cursor={c}"),
            None => "/v1/transactions?limit=1000".to_owned(),
        };
        let page: Value = get(cluster, coordinator, &path).await?;
        for t in page["transactions"].as_array().into_iter().flatten() {
            rows.push(TransactionRow {
                gid: t["gid"].as_str().unwrap_or_default().to_owned(),
                mode: t["mode"].as_str().unwrap_or_default().to_owned(),
                status: t["status"].as_str().unwrap_or_default().to_owned(),
                branches: BTreeMap::new(),
            });
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for row in rows
        .iter_mut()
        .filter(|r| branches && matches!(r.mode.as_str(), "2pc" | "3pc"))
    {
        let one: Value = get(
            cluster,
            coordinator,
            &format!("/v1/transactions/{}", row.gid),
        )
        .await?;
        for b in one["branches"].as_array().into_iter().flatten() {
            row.branches.insert(
                b["spec"]["id"].as_str().unwrap_or_default().to_owned(),
                b["status"].as_str().unwrap_or_default().to_owned(),
            );
        }
    }
    Ok(rows)
}

/// Reads everything the checker needs. `seeded` is what the scenario put
/// into the inventory before it began.
pub async fn observe(
    cluster: &Cluster,
    seeded: BTreeMap<String, i64>,
) -> Result<Observed, TestSupportError> {
    Ok(Observed {
        seeded,
        products: get::<Vec<Product>>(cluster, Node::Inventory, "/products").await?,
        ledger: get::<Vec<LedgerRow>>(cluster, Node::Inventory, "/ledger").await?,
        // GET /orders also asks the coordinator about unsettled orders.
        orders: get::<Vec<OrderRow>>(cluster, Node::Orders, "/orders").await?,
        transactions: transactions(cluster, Node::Coordinator1, true).await?,
    })
}

/// Waits until every transaction is final and every order settled, or
/// `bound` passes; answers how long it took (`None`: not within the bound).
/// Services that do not answer yet (just restarted) count as not settled.
pub async fn wait_for_quiescence(cluster: &Cluster, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < bound {
        let settled = async {
            let txs = transactions(cluster, Node::Coordinator1, false)
                .await
                .ok()?;
            let orders: Vec<OrderRow> = get(cluster, Node::Orders, "/orders").await.ok()?;
            let txs_final = txs
                .iter()
                .all(|t| matches!(t.status.as_str(), "committed" | "aborted"));
            let orders_final = orders
                .iter()
                .all(|o| matches!(o.status.as_str(), "confirmed" | "cancelled"));
            Some(txs_final && orders_final)
        };
        if settled.await == Some(true) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Seeds `qty` units of `sku` in the inventory.
pub async fn seed(cluster: &Cluster, sku: &str, qty: i64) -> Result<(), TestSupportError> {
    let url = format!("{}/products", cluster.url(Node::Inventory));
    let response = cluster
        .http()
        .post(&url)
        .json(&serde_json::json!({"sku": sku, "qty": qty}))
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(TestSupportError::Service {
            what: "POST /products of inventory".into(),
            why: format!("HTTP {}", r.status()),
        }),
        Err(e) => Err(TestSupportError::Service {
            what: "POST /products of inventory".into(),
            why: e.to_string(),
        }),
    }
}
