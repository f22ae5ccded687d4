//! The inventory started in-process on a database of a test's own, with an
//! optional planted defect, called through its real router with the `dtx-*`
//! headers the coordinator sends; and what the checker reads back.

// Shared by several test binaries, each using part of it.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use inventory_service::plants::Plant;
use inventory_service::store::Product;
use inventory_service::{AppState, Settings, app};
use serde_json::json;

/// The product every test moves, and its initial stock.
pub const SKU: &str = "apple";
pub const INITIAL: i64 = 10;

/// A ledger row as the checker reads it: (op, moved_from, moved_to, qty).
pub type Row = (String, String, String, i64);

/// One inventory on a fresh database, seeded with [`INITIAL`] apples.
pub struct Inventory {
    router: Router,
    /// The service's state (its database, its 2PC helper).
    pub state: AppState,
    /// The SQLite file's directory, removed at the end.
    _dir: Option<tempfile::TempDir>,
}

impl Inventory {
    /// On a fresh SQLite file (2PC by reservation).
    pub async fn start(plant: Option<Plant>) -> Inventory {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite:{}", dir.path().join("inventory.db").display());
        Inventory::open(db, Some(dir), plant).await
    }

    /// On a fresh PostgreSQL database of the shared test server, which
    /// allows prepared transactions (2PC by XA).
    pub async fn start_on_postgres(plant: Option<Plant>) -> Inventory {
        let db = dtx_tests::postgres::fresh_database()
            .await
            .expect("a PostgreSQL database (see tests/images/build-images.sh)");
        Inventory::open(db, None, plant).await
    }

    async fn open(db: String, dir: Option<tempfile::TempDir>, plant: Option<Plant>) -> Inventory {
        let mut settings = Settings::new(db);
        settings.plant = plant;
        let state = AppState::open(settings).await.expect("the inventory opens");
        state.db.seed(SKU, INITIAL).await.expect("seed");
        Inventory {
            router: app(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// Calls a branch route as the coordinator would; the mode is the
    /// route's first segment (`/tcc/try` → `tcc`). Returns the status.
    pub async fn call(&self, path: &str, gid: &str, op: &str, qty: i64) -> u16 {
        self.answer(path, gid, op, qty).await.0
    }

    /// Like [`call`](Self::call); the status, the content type and the
    /// body (JSON, `Null` if it is not).
    pub async fn answer(
        &self,
        path: &str,
        gid: &str,
        op: &str,
        qty: i64,
    ) -> (u16, String, serde_json::Value) {
        dtx_tests::in_process::send(self.router.clone(), branch_call(path, gid, op, qty)).await
    }

    /// The router, for calls made from tasks of their own.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// (available, reserved, sold) of the apples.
    pub async fn stock(&self) -> (i64, i64, i64) {
        let Product {
            available,
            reserved,
            sold,
            ..
        } = self
            .state
            .db
            .product(SKU)
            .await
            .expect("read")
            .expect("seeded");
        (available, reserved, sold)
    }

    /// The ledger rows of `gid`, oldest first.
    pub async fn rows(&self, gid: &str) -> Vec<Row> {
        let ledger = self.state.db.ledger().await.expect("read the ledger");
        ledger
            .into_iter()
            .filter(|entry| entry.gid == gid)
            .map(|e| (e.op, e.moved_from, e.moved_to, e.qty))
            .collect()
    }
}

/// A branch call as the coordinator sends it ([`Inventory::call`]); the
/// mode is the route's first segment (`/tcc/try` → `tcc`).
pub fn branch_call(path: &str, gid: &str, op: &str, qty: i64) -> Request<Body> {
    let mode = path.split('/').nth(1).expect("a branch route");
    Request::post(path)
        .header("content-type", "application/json")
        .header("dtx-gid", gid)
        .header("dtx-branch", "inventory")
        .header("dtx-op", op)
        .header("dtx-mode", mode)
        .body(Body::from(json!({"sku": SKU, "qty": qty}).to_string()))
        .expect("a request")
}

pub fn row(op: &str, from: &str, to: &str, qty: i64) -> Row {
    (op.to_owned(), from.to_owned(), to.to_owned(), qty)
}
