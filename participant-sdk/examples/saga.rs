//! A saga participant and its initiator in one program, on SQLite.
//!
//! ```sh
//! cargo run -p dtx-coordinator -- serve       # the coordinator, on 127.0.0.1:7707
//! cargo run -p dtx-sdk --example saga         # in another terminal
//! ```
//!
//! The participant keeps stock in `saga-example.db` (created in the working
//! directory, reset to 10 apples and 3 pears at each start) and serves one
//! saga branch: `POST /stock/take` (the action) and `POST /stock/put-back`
//! (its compensation), each bound to its operation and run behind the
//! barrier, so a repeated call changes nothing and the compensation of a
//! refused action touches nothing. The initiator then runs two sagas over
//! it, each taking apples and pears: the first commits; the second asks for
//! more pears than there are, the pear branch refuses, the coordinator
//! compensates the apples, and the program prints the refusal's reason as
//! the coordinator reports it.
//!
//! Environment: `DTX_COORDINATOR` (default `http://127.0.0.1:7707`),
//! `DTX_SIGNING_KEY` (the coordinator's key, `ID:SECRET`, when it runs with
//! `--signing-key`: its calls are then checked), `EXAMPLE_DB` (default `sqlite:saga-example.db`).

use axum::extract::{FromRef, State};
use axum::{Router, routing::post};
use dtx_sdk::barrier::{Barrier, BarrierError};
use dtx_sdk::client::SagaBranch;
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
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available BIGINT NOT NULL);
INSERT INTO stock (sku, available) VALUES ('apple', 10), ('pear', 3)
    ON CONFLICT (sku) DO UPDATE SET available = excluded.available;";

#[derive(Clone)]
struct Stock {
    pool: SqlitePool,
    keys: SignatureKeys,
}

/// Where `SignedJson` finds the keys to check the coordinator's signature.
impl FromRef<Stock> for SignatureKeys {
    fn from_ref(stock: &Stock) -> Self {
        stock.keys.clone()
    }
}

/// The body of both calls: which product and how many units.
#[derive(Deserialize)]
struct Units {
    sku: String,
    qty: i64,
}

/// The action: take `qty` units, or refuse when there are not enough.
async fn take(
    State(stock): State<Stock>,
    ctx: BranchContext,
    SignedJson(units): SignedJson<Units>,
) -> Result<BranchAnswer, BarrierError> {
    ctx.expect(BranchOp::Action)?;
    Barrier::sqlite()
        .run(&stock.pool, &ctx, move |conn| {
            Box::pin(async move {
                let taken = sqlx::query(
                    "UPDATE stock SET available = available - $1 WHERE sku = $2 AND available >= $1",
                )
                .bind(units.qty)
                .bind(&units.sku)
                .execute(&mut *conn)
                .await?;
                if taken.rows_affected() == 0 {
                    return Err(WorkError::refused(format!(
                        "not enough {} in stock for {}",
                        units.sku, units.qty
                    )));
                }
                Ok(())
            })
        })
        .await
}

/// The compensation: put the units back. The barrier skips it when the
/// action never ran here or was refused.
async fn put_back(
    State(stock): State<Stock>,
    ctx: BranchContext,
    SignedJson(units): SignedJson<Units>,
) -> Result<BranchAnswer, BarrierError> {
    ctx.expect(BranchOp::Compensate)?;
    Barrier::sqlite()
        .run(&stock.pool, &ctx, move |conn| {
            Box::pin(async move {
                sqlx::query("UPDATE stock SET available = available + $1 WHERE sku = $2")
                    .bind(units.qty)
                    .bind(&units.sku)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the saga example failed: {e}");
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
    // The coordinator's key (the `ID:SECRET` of `dtx serve --signing-key`),
    // to check the calls it makes; unset, they are not checked.
    let keys = match std::env::var("DTX_SIGNING_KEY") {
        Ok(key) => SignatureKeys::new([key.parse::<SigningKey>()?])?,
        Err(_) => SignatureKeys::disabled(),
    };

    // The participant's database: created if missing, WAL, busy timeout.
    let options = dtx_sdk::db::sqlite_options(&env("EXAMPLE_DB", "sqlite:saga-example.db"))?;
    let pool = SqlitePool::connect_with(options).await?;
    Barrier::sqlite().migrate(&pool).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;

    // The participant, on a free port of this machine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/stock", listener.local_addr()?);
    let app = Router::new()
        .route("/stock/take", post(take))
        .route("/stock/put-back", post(put_back))
        .with_state(Stock {
            pool: pool.clone(),
            keys,
        });
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The initiator: two sagas, each taking 3 apples and some pears.
    let client = Client::new(&coordinator)?;
    let branch = |id: &str, sku: &str, qty: i64| {
        SagaBranch::new(id)
            .action(format!("{base}/take"))
            .compensate(format!("{base}/put-back"))
            .payload(json!({"sku": sku, "qty": qty}))
    };
    for pears in [2, 5] {
        let saga = client
            .saga()
            .branch(branch("apples", "apple", 3))
            .branch(branch("pears", "pear", pears));
        let tx = saga.submit_and_wait(Duration::from_secs(30)).await?;
        match tx.abort_cause() {
            None => println!("saga for 3 apples and {pears} pears: {}", tx.status),
            Some(cause) => println!(
                "saga for 3 apples and {pears} pears: {}: {cause}",
                tx.status
            ),
        }
    }

    let stock: Vec<(String, i64)> = sqlx::query_as("SELECT sku, available FROM stock ORDER BY sku")
        .fetch_all(&pool)
        .await?;
    for (sku, available) in stock {
        println!("stock: {sku} {available}");
    }
    Ok(())
}
