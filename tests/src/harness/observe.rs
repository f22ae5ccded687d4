//! Reading the truth back from a cluster for the checker, passively: the
//! inventory's products and ledger and the order service's orders through
//! their read-only `GET` views, every transaction in the coordinators' log
//! through its API, and what only the inventory's database shows (prepared
//! transactions, 3PC branch records) through SELECTs. Nothing here changes
//! anything, so the harness cannot repair what it observes; the final state
//! is read twice, apart, and the checker compares the reads. Every read
//! waits, bounded, for its service to answer; a service that never does is
//! named in the error ([`Unanswered`]), which the scenario turns into a
//! finding. Also: waiting until nothing is left to settle.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dtx_protocol::{BranchStatus, Mode, Status};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use sqlx::{Connection, PgConnection};

use super::checker::{
    LedgerRow, Observed, OrderRow, PreparedBranch, Product, ThreePhaseRecord, TransactionRow,
};
use super::cluster::{Cluster, Node};
use super::workload::Attempt;
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
        .map_err(|e| failed(with_causes(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| failed(with_causes(&e)))?;
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| failed(format!("{e}: {text}")))
}

/// An error with its causes (a timeout, a refused or reset connection),
/// which reqwest's own message leaves out.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// A page of `GET /v1/transactions`.
#[derive(Deserialize)]
struct Page {
    transactions: Vec<Summary>,
    next_cursor: Option<String>,
}

/// A transaction of a listing (its `branches` are left empty there).
#[derive(Deserialize)]
struct Summary {
    gid: String,
    mode: Mode,
    status: Status,
    attention: Option<String>,
}

/// The branches of `GET /v1/transactions/{gid}`.
#[derive(Deserialize)]
struct OneTransaction {
    branches: Vec<BranchRow>,
}

#[derive(Deserialize)]
struct BranchRow {
    spec: BranchId,
    status: BranchStatus,
}

#[derive(Deserialize)]
struct BranchId {
    id: String,
}

/// Every order, through the order service's read-only view.
pub async fn orders(cluster: &Cluster) -> Result<Vec<OrderRow>, TestSupportError> {
    get(cluster, Node::Orders, "/orders").await
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
        let page: Page = get(cluster, coordinator, &path).await?;
        rows.extend(page.transactions.into_iter().map(|t| TransactionRow {
            gid: t.gid,
            mode: t.mode,
            status: t.status,
            attention: t.attention,
            branches: BTreeMap::new(),
        }));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let phased = |r: &TransactionRow| matches!(r.mode, Mode::TwoPhase | Mode::ThreePhase);
    for row in rows.iter_mut().filter(|r| branches && phased(r)) {
        let one: OneTransaction = get(
            cluster,
            coordinator,
            &format!("/v1/transactions/{}", row.gid),
        )
        .await?;
        row.branches = one
            .branches
            .into_iter()
            .map(|b| (b.spec.id, b.status))
            .collect();
    }
    Ok(rows)
}

/// What only the inventory's database shows: the transactions PostgreSQL
/// holds prepared (mapped to their branches through the XA helper's table)
/// and the 3PC helper's branch records. Read with SELECTs on a connection
/// of the harness's own.
async fn inventory_records(
    cluster: &Cluster,
) -> Result<(Vec<PreparedBranch>, Vec<ThreePhaseRecord>), TestSupportError> {
    let failed = |what: &str, e: sqlx::Error| {
        TestSupportError::database(format!("read {what} from the inventory's database"), e)
    };
    let mut db = PgConnection::connect(&cluster.postgres_url("inventory"))
        .await
        .map_err(|e| failed("a connection", e))?;
    let prepared: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT p.gid, b.gid, b.branch_id FROM pg_prepared_xacts p \
         LEFT JOIN dtx_xa_branch b ON b.xid = p.gid \
         WHERE p.database = current_database() ORDER BY p.gid",
    )
    .fetch_all(&mut db)
    .await
    .map_err(|e| failed("prepared transactions", e))?;
    let three_phase: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT gid, branch_id, state, decided_by FROM dtx_three_phase ORDER BY gid, branch_id",
    )
    .fetch_all(&mut db)
    .await
    .map_err(|e| failed("3PC records", e))?;
    let _ = db.close().await;
    Ok((
        prepared
            .into_iter()
            .map(|(xid, gid, branch)| PreparedBranch { xid, gid, branch })
            .collect(),
        three_phase
            .into_iter()
            .map(|(gid, branch, state, decided_by)| ThreePhaseRecord {
                gid,
                branch,
                state,
                decided_by,
            })
            .collect(),
    ))
}

/// The first coordinator that answers: a run may end with either one down
/// (a targeted run that killed it, say); both read the same log.
async fn any_coordinator(cluster: &Cluster) -> Node {
    for node in [Node::Coordinator1, Node::Coordinator2] {
        if get::<Value>(cluster, node, "/readyz").await.is_ok() {
            return node;
        }
    }
    Node::Coordinator1
}

/// How long the reads of the final state wait for a service that does not
/// answer before it becomes a `service_unanswered` finding. A service may be
/// just back from a fault (restarted, reconnected), and a connection pooled
/// before the fault may be dead: a run once ended with no verdict because
/// `GET /products` failed once ("error sending request") right after heal.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Past the shared deadline, each further read still gets this long, so one
/// silent service does not make the others look silent too.
const LAST_CHANCE: Duration = Duration::from_secs(2);

/// A read of the final state that a service never answered usably.
#[derive(Debug, Clone)]
pub struct UnansweredRead {
    /// The service.
    pub node: Node,
    /// The read, e.g. `GET /products`.
    pub request: String,
    /// The last error, with its causes.
    pub last_error: String,
    /// How many times it was tried.
    pub tries: u32,
    /// How long it was tried for.
    pub waited: Duration,
}

/// The final state could not be read: the services that never answered,
/// one entry each.
#[derive(Debug, Clone)]
pub struct Unanswered(pub Vec<UnansweredRead>);

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, u) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} did not answer {} ({} tries in {:.0} s): {}",
                u.node,
                u.request,
                u.tries,
                u.waited.as_secs_f64(),
                u.last_error
            )?;
        }
        Ok(())
    }
}

impl From<Unanswered> for TestSupportError {
    fn from(unanswered: Unanswered) -> Self {
        TestSupportError::Service {
            what: "reading the final state".into(),
            why: unanswered.to_string(),
        }
    }
}

/// Reads that retry with backoff until a shared deadline, and remember each
/// service that never answered (later reads of it are not tried again).
struct PatientReader<'c> {
    cluster: &'c Cluster,
    deadline: Instant,
    unanswered: Vec<UnansweredRead>,
}

impl<'c> PatientReader<'c> {
    fn new(cluster: &'c Cluster, patience: Duration) -> Self {
        PatientReader {
            cluster,
            deadline: Instant::now() + patience,
            unanswered: Vec::new(),
        }
    }

    /// Tries `read` on each of `nodes` in turn, again and again, until one
    /// answers or the deadline passes; then every node tried is unanswered.
    async fn read<T, F, Fut>(&mut self, nodes: &[Node], request: &str, read: F) -> Option<T>
    where
        F: Fn(Node) -> Fut,
        Fut: std::future::Future<Output = Result<T, TestSupportError>>,
    {
        let nodes: Vec<Node> = nodes
            .iter()
            .copied()
            .filter(|n| self.unanswered.iter().all(|u| u.node != *n))
            .collect();
        let started = Instant::now();
        let deadline = self.deadline.max(started + LAST_CHANCE);
        let mut last_errors = vec![String::new(); nodes.len()];
        let mut tries = 0;
        let mut backoff = Duration::from_millis(200);
        while !nodes.is_empty() {
            tries += 1;
            for (node, last_error) in nodes.iter().zip(&mut last_errors) {
                match read(*node).await {
                    Ok(value) => return Some(value),
                    // Debug: the message with every cause.
                    Err(e) => *last_error = format!("{e:?}"),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // The last try comes at the deadline itself.
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_secs(3));
        }
        for (node, last_error) in nodes.into_iter().zip(last_errors) {
            self.unanswered.push(UnansweredRead {
                node,
                request: request.to_owned(),
                last_error,
                tries,
                waited: started.elapsed(),
            });
        }
        None
    }

    async fn get<T: DeserializeOwned>(&mut self, node: Node, path: &str) -> Option<T> {
        let cluster = self.cluster;
        self.read(&[node], &format!("GET {path}"), |node| {
            get(cluster, node, path)
        })
        .await
    }
}

/// Reads everything the checker needs once, each read waiting at most
/// [`PATIENCE`] in all for a service to answer. `seeded` is what the
/// scenario put into the inventory before it began; `attempts` what its
/// clients were told; `quiescent` whether the run reached quiescence.
pub async fn observe_once(
    cluster: &Cluster,
    seeded: &BTreeMap<String, i64>,
    attempts: &[Attempt],
    quiescent: bool,
) -> Result<Observed, Unanswered> {
    observe_once_within(cluster, seeded, attempts, quiescent, PATIENCE).await
}

/// [`observe_once`] with a patience of `patience`. Every read is tried even
/// after one service was found silent, so the error names each silent one.
pub async fn observe_once_within(
    cluster: &Cluster,
    seeded: &BTreeMap<String, i64>,
    attempts: &[Attempt],
    quiescent: bool,
    patience: Duration,
) -> Result<Observed, Unanswered> {
    let mut reader = PatientReader::new(cluster, patience);
    // Orders and transactions first, the inventory after: whatever the
    // order service settled is then already visible on the inventory.
    let orders = reader.get::<Vec<OrderRow>>(Node::Orders, "/orders").await;
    let transactions = reader
        .read(
            &[Node::Coordinator1, Node::Coordinator2],
            "GET /v1/transactions (every page, and each 2PC/3PC transaction)",
            |node| transactions(cluster, node, true),
        )
        .await;
    let records = reader
        .read(
            &[Node::Postgres],
            "SELECT from the inventory's database",
            |_| inventory_records(cluster),
        )
        .await;
    let products = reader
        .get::<Vec<Product>>(Node::Inventory, "/products")
        .await;
    let ledger = reader
        .get::<Vec<LedgerRow>>(Node::Inventory, "/ledger")
        .await;
    match (orders, transactions, records, products, ledger) {
        (
            Some(orders),
            Some(transactions),
            Some((prepared, three_phase)),
            Some(products),
            Some(ledger),
        ) => Ok(Observed {
            seeded: seeded.clone(),
            quiescent,
            attempts: attempts.to_vec(),
            products,
            ledger,
            orders,
            transactions,
            prepared,
            three_phase,
        }),
        _ => Err(Unanswered(reader.unanswered)),
    }
}

/// How far apart the two final reads are.
pub const READ_GAP: Duration = Duration::from_secs(2);

/// Reads the final state twice, [`READ_GAP`] apart; answers both reads.
/// The checker judges the second and compares it with the first: only a
/// state that holds still is a verdict about the system rather than about
/// the moment it was read.
pub async fn observe(
    cluster: &Cluster,
    seeded: &BTreeMap<String, i64>,
    attempts: &[Attempt],
    quiescent: bool,
) -> Result<(Observed, Observed), Unanswered> {
    observe_within(cluster, seeded, attempts, quiescent, PATIENCE).await
}

/// [`observe`] with each read waiting at most `patience` for the services.
pub async fn observe_within(
    cluster: &Cluster,
    seeded: &BTreeMap<String, i64>,
    attempts: &[Attempt],
    quiescent: bool,
    patience: Duration,
) -> Result<(Observed, Observed), Unanswered> {
    let first = observe_once_within(cluster, seeded, attempts, quiescent, patience).await?;
    tokio::time::sleep(READ_GAP).await;
    let second = observe_once_within(cluster, seeded, attempts, quiescent, patience).await?;
    Ok((first, second))
}

/// Waits until every transaction is final and every order settled, or
/// `bound` passes; answers how long it took (`None`: not within the bound).
/// Services that do not answer yet (just restarted) count as not settled.
pub async fn wait_for_quiescence(cluster: &Cluster, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < bound {
        let settled = async {
            let txs = transactions(cluster, any_coordinator(cluster).await, false)
                .await
                .ok()?;
            let orders = orders(cluster).await.ok()?;
            let txs_final = txs.iter().all(|t| t.status.is_final());
            let orders_final = orders.iter().all(|o| o.status.is_settled());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_parses_as_the_coordinator_writes_it() {
        // The shape `GET /v1/transactions` answers: branches as an empty
        // list, options and times the checker does not read.
        let page = r#"{"transactions":[{"gid":"o1","mode":"2pc","status":"committing",
            "options":{"deadline_ms":1},"created_at_ms":1,"owner":"c1","epoch":1,
            "attention":"refused","branches":[]}],"next_cursor":"abc"}"#;
        let page: Page = serde_json::from_str(page).expect("parses");
        assert_eq!(page.next_cursor.as_deref(), Some("abc"));
        let tx = &page.transactions[0];
        assert_eq!((tx.mode, tx.status), (Mode::TwoPhase, Status::Committing));
        assert_eq!(tx.attention.as_deref(), Some("refused"));
    }

    #[test]
    fn a_transaction_parses_with_its_branch_statuses() {
        let one = r#"{"gid":"o1","branches":[{"index":0,"spec":{"id":"stock","urls":{}},
            "status":"rolled_back","attempts":2}]}"#;
        let one: OneTransaction = serde_json::from_str(one).expect("parses");
        assert_eq!(one.branches[0].spec.id, "stock");
        assert_eq!(one.branches[0].status, BranchStatus::RolledBack);
    }
}
