//! A TCC participant and its initiator in one program, on SQLite.
//!
//! ```sh
//! cargo run -p dtx-coordinator -- serve       # the coordinator, on 127.0.0.1:7707
//! cargo run -p dtx-sdk --example tcc          # in another terminal
//! ```
//!
//! The participant keeps stock in `tcc-example.db` (created in the working
//! directory, reset to 10 apples at each start), with the units a Try holds
//! apart: `POST /stock/try` holds units (or refuses when too few are
//! available), `POST /stock/confirm` sells what the Try held,
//! `POST /stock/cancel` releases it. Each handler is bound to its operation
//! and runs behind the barrier. The initiator then runs two TCC scopes over
//! it: one holds 4 apples and commits, so the coordinator confirms; the
//! other asks for 20, its Try is refused, the scope returns the refusal
//! with the participant's reason and aborts, and the coordinator's Cancel
//! finds nothing to release.
//!
//! Environment: `DTX_COORDINATOR` (default `http://127.0.0.1:7707`),
//! `DTX_SIGNING_KEY` (the coordinator's key, `ID:SECRET`, when it runs with
//! `--signing-key`: its calls are then checked), `EXAMPLE_DB` (default `sqlite:tcc-example.db`).

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::{MethodRouter, post};
use dtx_sdk::barrier::{Barrier, BarrierError};
use dtx_sdk::client::TccBranch;
use dtx_sdk::{
    BranchAnswer, BranchContext, BranchOp, Client, ClientError, SignatureKeys, SignedJson,
    SigningKey, WorkError,
};
use serde::Deserialize;
use serde_json::json;
use sqlx::SqlitePool;
use std::process::ExitCode;
use std::time::Duration;

/// The participant's table, and the stock every run starts from.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    held BIGINT NOT NULL,
    sold BIGINT NOT NULL);
INSERT INTO stock (sku, available, held, sold) VALUES ('apple', 10, 0, 0)
    ON CONFLICT (sku) DO UPDATE SET available = 10, held = 0, sold = 0;";

/// The statement of each operation; `$1` is the quantity, `$2` the sku.
/// Each refuses to move units that are not there.
const TRY: &str = "UPDATE stock SET available = available - $1, held = held + $1 \
                   WHERE sku = $2 AND available >= $1";
const CONFIRM: &str = "UPDATE stock SET held = held - $1, sold = sold + $1 \
                       WHERE sku = $2 AND held >= $1";
const CANCEL: &str = "UPDATE stock SET held = held - $1, available = available + $1 \
                      WHERE sku = $2 AND held >= $1";

#[derive(Clone)]
struct Stock {
    pool: SqlitePool,
    keys: SignatureKeys,
}

/// Where `SignedJson` finds the keys to check the caller's signature.
impl FromRef<Stock> for SignatureKeys {
    fn from_ref(stock: &Stock) -> Self {
        stock.keys.clone()
    }
}

/// The body of every call: which product and how many units.
#[derive(Deserialize)]
struct Units {
    sku: String,
    qty: i64,
}

/// Runs `op`'s statement behind the barrier, after checking that the call
/// is that operation; refuses when the units are not there.
async fn step(
    stock: Stock,
    ctx: BranchContext,
    units: Units,
    op: BranchOp,
    sql: &'static str,
) -> Result<BranchAnswer, BarrierError> {
    ctx.expect(op)?;
    Barrier::sqlite()
        .run(&stock.pool, &ctx, move |conn| {
            Box::pin(async move {
                let moved = sqlx::query(sql)
                    .bind(units.qty)
                    .bind(&units.sku)
                    .execute(&mut *conn)
                    .await?;
                if moved.rows_affected() == 0 {
                    return Err(WorkError::refused(format!(
                        "not enough {} for {} unit(s)",
                        units.sku, units.qty
                    )));
                }
                Ok(())
            })
        })
        .await
}

/// The route of one operation: each is bound to its own, so a call meant
/// for another URL is answered 400 and moves nothing.
fn route(op: BranchOp, sql: &'static str) -> MethodRouter<Stock> {
    post(
        move |State(stock): State<Stock>,
              ctx: BranchContext,
              SignedJson(units): SignedJson<Units>| { step(stock, ctx, units, op, sql) },
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the TCC example failed: {e}");
            if matches!(e.downcast_ref(), Some(ClientError::Unreachable { .. })) {
                eprintln!("is the coordinator running? `cargo run -p dtx-coordinator -- serve`");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let coordinator = env("DTX_COORDINATOR", "http://127.0.0.1:7707");
    // The initiator's own key, for the Try calls it makes (the coordinator
    // signs the Confirm and Cancel calls with its key): made up at each
    // start, since the participant that checks it is this program too.
    let initiator_key = SigningKey::new("tcc-example", hex::encode(rand::random::<[u8; 32]>()))?;
    // The coordinator's key (the `ID:SECRET` of `dtx serve --signing-key`);
    // unset, calls are not checked.
    let keys = match std::env::var("DTX_SIGNING_KEY") {
        Ok(key) => SignatureKeys::new([key.parse()?, initiator_key.clone()])?,
        Err(_) => SignatureKeys::disabled(),
    };

    // The participant's database: created if missing, WAL, busy timeout.
    let options = dtx_sdk::db::sqlite_options(&env("EXAMPLE_DB", "sqlite:tcc-example.db"))?;
    let pool = SqlitePool::connect_with(options).await?;
    Barrier::sqlite().migrate(&pool).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;

    // The participant, on a free port of this machine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/stock", listener.local_addr()?);
    let app = Router::new()
        .route("/stock/try", route(BranchOp::Try, TRY))
        .route("/stock/confirm", route(BranchOp::Confirm, CONFIRM))
        .route("/stock/cancel", route(BranchOp::Cancel, CANCEL))
        .with_state(Stock {
            pool: pool.clone(),
            keys,
        });
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The initiator: the client signs its Try calls with its own key.
    let client = Client::builder(&coordinator)
        .signing_key(initiator_key)
        .build()?;
    for apples in [4, 20] {
        let base = base.clone();
        let scope = client
            .tcc()
            // Once committed, wait for the Confirm, so the stock below shows it.
            .wait_for_outcome(Duration::from_secs(30));
        let gid = scope.gid().to_owned();
        let outcome = scope
            .run(|scope| async move {
                let apples = TccBranch::new("apples")
                    .try_url(format!("{base}/try"))
                    .confirm(format!("{base}/confirm"))
                    .cancel(format!("{base}/cancel"))
                    .payload(json!({"sku": "apple", "qty": apples}));
                scope.try_branch(apples).await?;
                Ok::<_, ClientError>(())
            })
            .await;
        match outcome {
            Ok(()) => println!("TCC for {apples} apples: committed"),
            Err(ClientError::Refused { branch, detail, .. }) => {
                println!("TCC for {apples} apples: refused by {branch}: {detail}");
                // The scope asked for the abort; wait for the Cancel.
                let tx = client.wait(&gid, Duration::from_secs(30)).await?;
                println!("TCC for {apples} apples: {}", tx.status);
            }
            Err(other) => return Err(other.into()),
        }
    }

    let (available, held, sold): (i64, i64, i64) =
        sqlx::query_as("SELECT available, held, sold FROM stock WHERE sku = 'apple'")
            .fetch_one(&pool)
            .await?;
    println!("stock: apple available {available}, held {held}, sold {sold}");
    Ok(())
}
