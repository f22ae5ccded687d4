//! The end-to-end world: a real `dtx serve` process, and the inventory and
//! order services started in-process (from their libraries) on SQLite files
//! in a temporary directory (or PostgreSQL), all talking over HTTP, the
//! order service with its background reconciler as its binary runs it
//! (unless a test asks for none); the inventory can be stopped and started
//! again on the same address; plus the invariant check every test ends
//! with. Reads of the order service (`GET /orders`) are passive: whatever
//! waits for an order to settle polls them.

// Shared by several test binaries, each using part of it.
#![allow(dead_code)]

use dtx_sdk::three_phase::Watchdog;
use dtx_sdk::xa::RecoverySummary;
use dtx_sdk::{Client, RetryPolicy, TxOptions};
use dtx_tests::process::DtxProcess;
use inventory_service::store::{LedgerEntry, Product};
use inventory_service::two_phase::TwoPhase;
use order_service::plants::Plant;
use order_service::reconcile::{self, Reconciler};
use order_service::store::{Order, Store};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The product every test orders, and its initial stock.
pub const SKU: &str = "apple";
pub const INITIAL: i64 = 10;

/// How the world's order service runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Whether its reconciler runs from the start.
    pub reconciler: bool,
    /// Its planted defect, if any.
    pub plant: Option<Plant>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reconciler: true,
            plant: None,
        }
    }
}

/// How long whatever waits on the services polls before giving up: up to a
/// minute, since a loaded CI machine stretches retries and restarts.
const POLLS: u32 = 1200;
const POLL_EVERY: Duration = Duration::from_millis(50);

/// One test's world; everything stops when it is dropped.
pub struct World {
    pub coordinator: String,
    pub inventory: String,
    pub orders: String,
    pub http: reqwest::Client,
    /// The inventory's database URL.
    pub inventory_db: String,
    /// Whether the inventory prepares 2PC with PostgreSQL prepared
    /// transactions: its `prepare` ledger rows then mean units sold.
    pub xa: bool,
    /// The order service's state (its database, its coordinator client).
    pub state: order_service::AppState,
    reconciler: Option<Reconciler>,
    inventory_server: Option<Server>,
    _coordinator: DtxProcess,
    _stop: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

/// The in-process inventory: its server task, how to stop it, its watchdog.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    _watchdog: Watchdog,
}

impl World {
    /// Starts everything on SQLite and seeds [`INITIAL`] units of [`SKU`].
    pub async fn start() -> World {
        World::start_on(None, Options::default()).await
    }

    /// Like [`World::start`], with these options.
    pub async fn start_with(options: Options) -> World {
        World::start_on(None, options).await
    }

    /// Like [`World::start`], with both services on fresh PostgreSQL
    /// databases (the coordinator stays on SQLite).
    pub async fn start_on_postgres() -> World {
        let inventory = dtx_tests::postgres::fresh_database()
            .await
            .expect("a PostgreSQL database (see tests/images/build-images.sh)");
        let orders = dtx_tests::postgres::fresh_database()
            .await
            .expect("a PostgreSQL database");
        World::start_on(Some((inventory, orders)), Options::default()).await
    }

    async fn start_on(postgres: Option<(String, String)>, options: Options) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
        let (inventory_db, orders_db) =
            postgres.unwrap_or_else(|| (sqlite("inventory.db"), sqlite("orders.db")));
        let db = sqlite;
        let args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--db", &db("dtx.db")]
            .map(String::from)
            .to_vec();
        let coordinator = DtxProcess::spawn(&dtx_binary(), &args, &[])
            .await
            .expect("dtx serve starts");
        coordinator
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("dtx becomes ready");

        let mut stop = Vec::new();
        let (listener, inventory) = bind().await;
        let client = Client::new(&coordinator.base_url()).expect("client");
        let (server, xa, _) = serve_inventory(listener, &inventory_db, &client).await;

        let (listener, orders) = bind().await;
        let state = order_service::AppState {
            db: Store::connect(&orders_db).await.expect("orders database"),
            client,
            inventory_url: inventory.clone(),
            public_url: orders.clone(),
            // Short timeouts and backoff keep the retry tests quick.
            options: TxOptions {
                request_timeout_ms: 1000,
                retry: RetryPolicy {
                    initial_ms: 50,
                    max_ms: 500,
                    multiplier: 2.0,
                },
                ..TxOptions::default()
            },
            wait: Duration::from_secs(20),
            signature_keys: dtx_sdk::SignatureKeys::disabled(),
            placing: Default::default(),
            plant: options.plant,
        };
        let (tx, rx) = oneshot::channel();
        stop.push(tx);
        tokio::spawn(order_service::run(listener, state.clone(), async {
            let _ = rx.await;
        }));

        let mut world = World {
            coordinator: coordinator.base_url(),
            inventory,
            orders,
            http: reqwest::Client::new(),
            inventory_db,
            xa,
            state,
            reconciler: None,
            inventory_server: Some(server),
            _coordinator: coordinator,
            _stop: stop,
            _dir: dir,
        };
        let seeded = world
            .post(
                &world.inventory,
                "/products",
                &json!({"sku": SKU, "qty": INITIAL}),
            )
            .await;
        assert_eq!(seeded.0, 200, "{seeded:?}");
        if options.reconciler {
            world.start_reconciler();
        }
        world
    }

    /// Starts the order service's reconciler, as its binary does (a shorter
    /// interval than the binary's 1 s keeps the tests quick).
    pub fn start_reconciler(&mut self) {
        let settings = reconcile::Settings {
            interval: Duration::from_millis(200),
            ..reconcile::Settings::default()
        };
        self.reconciler = Some(reconcile::spawn(self.state.clone(), settings));
    }

    /// POSTs JSON; the status and the body (JSON, or a string).
    pub async fn post(&self, base: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{base}{path}"))
            .json(body)
            .send()
            .await
            .expect("POST");
        read(response).await
    }

    /// GETs JSON.
    pub async fn get(&self, base: &str, path: &str) -> Value {
        let (status, body) = self.get_any(base, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// GETs; the status and the body, whatever the status.
    pub async fn get_any(&self, base: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        read(response).await
    }

    /// The order as the order service shows it now.
    pub async fn shown(&self, id: &str) -> Order {
        let order = self.get(&self.orders, &format!("/orders/{id}")).await;
        serde_json::from_value(order).expect("an order")
    }

    /// Every order as the order service shows it now.
    pub async fn shown_orders(&self) -> Vec<Order> {
        serde_json::from_value(self.get(&self.orders, "/orders").await).expect("orders")
    }

    /// Polls `GET /orders/{id}` until the order has `status` (the
    /// reconciler, or a placement still running, settles it).
    pub async fn wait_for_order(&self, id: &str, status: &str) -> Order {
        let mut order = self.shown(id).await;
        for _ in 0..POLLS {
            if order.status == status {
                return order;
            }
            tokio::time::sleep(POLL_EVERY).await;
            order = self.shown(id).await;
        }
        panic!("order {id} never became {status}: {order:?}");
    }

    /// Polls `GET /orders` until every order is settled, and returns them.
    pub async fn settled_orders(&self) -> Vec<Order> {
        let mut orders = self.shown_orders().await;
        for _ in 0..POLLS {
            if orders.iter().all(Order::is_settled) {
                return orders;
            }
            tokio::time::sleep(POLL_EVERY).await;
            orders = self.shown_orders().await;
        }
        let unsettled: Vec<_> = orders.iter().filter(|o| !o.is_settled()).collect();
        panic!("orders never settled: {unsettled:?}");
    }

    /// Places an order and returns it once settled (201).
    pub async fn order(&self, qty: i64, mode: &str) -> Order {
        let body = json!({"sku": SKU, "qty": qty, "mode": mode});
        let (status, order) = self.post(&self.orders, "/orders", &body).await;
        assert_eq!(status, 201, "the order settles: {order}");
        serde_json::from_value(order).expect("an order")
    }

    /// Calls an inventory branch endpoint directly, as the coordinator (or
    /// the TCC initiator) would, with the branch context headers.
    pub async fn branch_call(&self, path: &str, gid: &str, op: &str, mode: &str, qty: i64) -> u16 {
        self.http
            .post(format!("{}{path}", self.inventory))
            .header("dtx-gid", gid)
            .header("dtx-branch", "inventory")
            .header("dtx-op", op)
            .header("dtx-mode", mode)
            .json(&json!({"sku": SKU, "qty": qty}))
            .send()
            .await
            .expect("branch call")
            .status()
            .as_u16()
    }

    /// Arms a fault on an inventory path (its demo/test aid).
    pub async fn fault(&self, path: &str, kind: &str, count: u32) {
        self.fault_with_delay(path, kind, count, 0).await;
    }

    /// Arms a fault with a delay (for `slow`).
    pub async fn fault_with_delay(&self, path: &str, kind: &str, count: u32, delay_ms: u64) {
        let body = json!({"path": path, "kind": kind, "count": count, "delay_ms": delay_ms});
        let (status, _) = self.post(&self.inventory, "/faults", &body).await;
        assert_eq!(status, 204);
    }

    /// The statuses the inventory answered for `gid` on `path`, in order.
    pub async fn calls(&self, gid: &str, path: &str) -> Vec<u64> {
        let calls = self.get(&self.inventory, "/calls").await;
        calls
            .as_array()
            .expect("a list")
            .iter()
            .filter(|c| c["gid"] == gid && c["path"] == path)
            .map(|c| c["status"].as_u64().expect("a status"))
            .collect()
    }

    /// How many calls the coordinator made on a branch of `gid`.
    pub async fn attempts(&self, gid: &str, branch: &str) -> u64 {
        let tx = self
            .get(&self.coordinator, &format!("/v1/transactions/{gid}"))
            .await;
        let branches = tx["branches"].as_array().expect("branches");
        let found = branches.iter().find(|b| b["spec"]["id"] == branch);
        found.expect("the branch")["attempts"]
            .as_u64()
            .expect("attempts")
    }

    pub async fn product(&self) -> Product {
        serde_json::from_value(self.get(&self.inventory, &format!("/products/{SKU}")).await)
            .expect("a product")
    }

    pub async fn ledger(&self) -> Vec<LedgerEntry> {
        serde_json::from_value(self.get(&self.inventory, "/ledger").await).expect("a ledger")
    }

    /// Stops the inventory (its in-flight calls finish), opens its database
    /// again, runs its start-up 2PC recovery (the summary is returned), and
    /// serves it again on the same address, with no faults armed.
    pub async fn restart_inventory(&mut self) -> Option<RecoverySummary> {
        self.stop_inventory().await;
        let addr = self.inventory.trim_start_matches("http://");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the inventory's address again");
        let client = Client::new(&self.coordinator).expect("client");
        let (server, _, summary) = serve_inventory(listener, &self.inventory_db, &client).await;
        self.inventory_server = Some(server);
        summary
    }

    /// Stops the inventory: the coordinator's calls to it fail until
    /// [`World::restart_inventory`].
    pub async fn stop_inventory(&mut self) {
        if let Some(server) = self.inventory_server.take() {
            let _ = server.stop.send(());
            server
                .task
                .await
                .expect("inventory task")
                .expect("inventory stops cleanly");
        }
    }

    /// Polls the coordinator until `gid` has `status` (at most a minute).
    pub async fn wait_for_status(&self, gid: &str, status: &str) -> Value {
        let url = format!("{}/v1/transactions/{gid}", self.coordinator);
        for _ in 0..POLLS {
            let response = self.http.get(&url).send().await.expect("GET");
            let (code, tx) = read(response).await;
            if code == 200 && tx["status"] == status {
                return tx;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!("{gid} never reached {status}");
    }

    /// How many prepared transactions the inventory's PostgreSQL database
    /// holds.
    pub async fn prepared_transactions(&self) -> i64 {
        let pool = sqlx::PgPool::connect(&self.inventory_db)
            .await
            .expect("the inventory's database");
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_prepared_xacts");
        pool.close().await;
        count
    }

    /// The invariants every test ends with, once every order is settled
    /// (polled; the reconciler settles what the placements left): no unit
    /// created or lost, nothing left reserved, and every order's status
    /// agrees with what the inventory's ledger applied under its gid.
    pub async fn check_invariants(&self) {
        let orders = self.settled_orders().await;
        let product = self.product().await;
        assert_eq!(
            product.available + product.reserved + product.sold,
            INITIAL,
            "units were created or lost: {product:?}"
        );
        assert_eq!(product.reserved, 0, "units left reserved: {product:?}");
        // Net effect per gid: units sold and units still held.
        let mut net: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for entry in self.ledger().await {
            let (sold, held) = net.entry(entry.gid).or_default();
            let (sell, hold) = match entry.op.as_str() {
                "action" => (1, 0),
                "compensate" => (-1, 0),
                // XA: the row is visible only once its prepared
                // transaction committed, and it sold the units.
                "prepare" if self.xa => (1, 0),
                "try" | "prepare" | "pre_commit" => (0, 1),
                "confirm" | "commit" | "do_commit" => (1, -1),
                "cancel" | "rollback" | "abort" => (0, -1),
                other => panic!("unknown ledger op {other}"),
            };
            *sold += sell * entry.qty;
            *held += hold * entry.qty;
        }
        for order in &orders {
            let (sold, held) = net.get(&order.id).copied().unwrap_or_default();
            let expected = if order.status == "confirmed" {
                order.qty
            } else {
                0
            };
            assert_eq!(
                (sold, held),
                (expected, 0),
                "order {order:?} disagrees with the ledger"
            );
        }
        let total: i64 = net.values().map(|(sold, _)| sold).sum();
        assert_eq!(total, product.sold, "the ledger disagrees with the stock");
    }
}

/// Opens the inventory on `db`, runs its start-up 2PC recovery and starts
/// its 3PC watchdog (as its binary does), and serves it on `listener`.
/// Returns the server, whether 2PC uses XA, and the recovery summary.
async fn serve_inventory(
    listener: tokio::net::TcpListener,
    db: &str,
    coordinator: &Client,
) -> (Server, bool, Option<RecoverySummary>) {
    // The tests arm faults on the inventory (`POST /faults`).
    let mut settings = inventory_service::Settings::new(db);
    settings.fault_injection = true;
    let state = inventory_service::AppState::open(settings)
        .await
        .expect("inventory database");
    let summary = state.recover(coordinator).await.expect("2PC recovery");
    let watchdog = state.spawn_watchdog(coordinator.clone());
    let xa = matches!(state.two_phase, TwoPhase::Xa(_));
    let (stop, rx) = oneshot::channel();
    let task = tokio::spawn(inventory_service::run(listener, state, async {
        let _ = rx.await;
    }));
    let server = Server {
        stop,
        task,
        _watchdog: watchdog,
    };
    (server, xa, summary)
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The coordinator binary, `target/<profile>/dtx`, next to this test's
/// `deps` directory. `CARGO_BIN_EXE_dtx` only exists in the coordinator's
/// own package, and the SDK's helper for this is private to its tests, so
/// this is the small equivalent. Under nextest (which builds before it runs)
/// it builds the binary with the same profile; under plain `cargo test`
/// cargo holds the build lock, so it asks you to build it first.
fn dtx_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(build_dtx).clone()
}

fn build_dtx() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("dtx");
    if std::env::var_os("NEXTEST").is_some() {
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("unexpected profile directory {}", profile_dir.display()),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "dtx-coordinator", "--bin", "dtx"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target directory"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build the coordinator");
        assert!(status.success(), "cargo build -p dtx-coordinator failed");
    }
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p dtx-coordinator` first (same profile as the tests)",
        binary.display()
    );
    binary
}
