//! `cargo run -p dtx-demo`: the whole dtx story in one command.
//!
//! It builds the coordinator and the two sample services, starts them on
//! SQLite files in a temporary directory, secured as in production (API
//! tokens, signed calls; see `credentials`), seeds stock, and places orders in
//! every mode (saga, TCC, 2PC, 3PC): some succeed, some are refused (out of
//! stock), and some meet an inventory that fails once, answers slowly, or
//! loses its answer after doing the work. It prints what happened to each order (a refused
//! one with the participant's reason, as the coordinator keeps it) and the final
//! stock, and exits non-zero unless, once every order is settled (the order
//! service's reads are passive: the demo polls `GET /orders` while the
//! service's reconciler settles any order left unsettled), the stock adds
//! up: for every product, available + reserved + sold = initial, nothing is
//! left reserved, and sold = the units of its confirmed orders.

mod credentials;
mod procs;

use anyhow::{Context, bail};
use credentials::Credentials;
use procs::Proc;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the demo waits for every order to be settled at the end.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Initial stock.
const STOCK: [(&str, i64); 3] = [("apple", 10), ("pear", 5), ("plum", 10)];

/// One order of the demo: what it shows, and the fault armed before it.
struct Scenario {
    what: &'static str,
    mode: &'static str,
    sku: &'static str,
    qty: i64,
    /// (path, kind, count, delay_ms) for the inventory's fault knob.
    fault: Option<(&'static str, &'static str, u32, u64)>,
}

const fn order(what: &'static str, mode: &'static str, sku: &'static str, qty: i64) -> Scenario {
    Scenario {
        what,
        mode,
        sku,
        qty,
        fault: None,
    }
}

fn scenarios() -> Vec<Scenario> {
    let with = |s: Scenario, fault| Scenario {
        fault: Some(fault),
        ..s
    };
    vec![
        order("succeeds", "saga", "apple", 3),
        order("succeeds", "tcc", "apple", 2),
        order("out of stock: refused", "saga", "pear", 9),
        order("out of stock: refused", "tcc", "pear", 9),
        with(
            order("inventory fails once", "saga", "apple", 1),
            ("/saga/reserve", "fail", 1, 0),
        ),
        with(
            order("inventory Try fails once", "tcc", "apple", 1),
            ("/tcc/try", "fail", 1, 0),
        ),
        with(
            order("inventory Confirm fails once", "tcc", "pear", 1),
            ("/tcc/confirm", "fail", 1, 0),
        ),
        with(
            order("inventory slower than the 1 s timeout", "saga", "pear", 2),
            ("/saga/reserve", "slow", 1, 1500),
        ),
        with(
            order("inventory slow (0.5 s)", "tcc", "pear", 1),
            ("/tcc/try", "slow", 1, 500),
        ),
        with(
            order("answer lost after the work", "saga", "apple", 2),
            ("/saga/reserve", "fail_after", 1, 0),
        ),
        order("succeeds", "2pc", "plum", 2),
        order("succeeds", "3pc", "plum", 2),
        order("out of stock: voted no", "2pc", "plum", 20),
        order("out of stock: voted no", "3pc", "plum", 20),
        with(
            order("inventory Prepare fails once", "2pc", "plum", 1),
            ("/2pc/prepare", "fail", 1, 0),
        ),
        with(
            order("Commit answer lost after the work", "2pc", "plum", 1),
            ("/2pc/commit", "fail_after", 1, 0),
        ),
        with(
            order("inventory PreCommit fails once", "3pc", "plum", 1),
            ("/3pc/pre_commit", "fail", 1, 0),
        ),
        with(
            order("inventory DoCommit fails once", "3pc", "plum", 1),
            ("/3pc/do_commit", "fail", 1, 0),
        ),
        order("out of stock after the others", "tcc", "apple", 5),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = procs::profile_dir()?;
    procs::build(&bin)?;
    let dir = tempfile::Builder::new().prefix("dtx-demo-").tempdir()?;
    let db = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
    let path = dir.path();

    let (dtx_db, inv_db, ord_db) = (db("dtx.db"), db("inventory.db"), db("orders.db"));
    let keys = Credentials::create(&bin.join("dtx"), path)?;
    let tokens_file = keys.tokens_file.display().to_string();
    let dtx_args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &dtx_db,
        "--tokens",
        &tokens_file,
        "--signing-key",
        &keys.coordinator_key,
    ];
    let coordinator =
        Proc::start("coordinator", &bin.join("dtx"), &dtx_args, "dtx: ", path).await?;
    let inv_args = [
        "--listen",
        "127.0.0.1:0",
        "--db",
        &inv_db,
        "--coordinator",
        &coordinator.url,
        "--coordinator-token",
        &keys.inventory_token,
        "--coordinator-key",
        &keys.coordinator_key,
        "--accept-key",
        &keys.orders_key,
        // The demo arms faults (`POST /faults`) and reads calls (`GET /calls`).
        "--fault-injection",
    ];
    let inventory = Proc::start(
        "inventory",
        &bin.join("inventory-service"),
        &inv_args,
        "inventory: ",
        path,
    )
    .await?;
    let ord_args = [
        "--listen",
        "127.0.0.1:0",
        "--db",
        &ord_db,
        "--coordinator",
        &coordinator.url,
        "--inventory",
        &inventory.url,
        "--request-timeout-ms",
        "1000",
        "--coordinator-token",
        &keys.orders_token,
        "--signing-key",
        &keys.orders_key,
        "--accept-key",
        &keys.coordinator_key,
    ];
    let orders = Proc::start(
        "orders",
        &bin.join("order-service"),
        &ord_args,
        "orders: ",
        path,
    )
    .await?;
    for p in [&coordinator, &inventory, &orders] {
        println!("{:<12} {}  (log: {})", p.name, p.url, p.log.display());
    }

    let outcome = run(
        &coordinator.url,
        &keys.demo_token,
        &inventory.url,
        &orders.url,
    )
    .await;
    let mut clean = true;
    for p in [orders, inventory, coordinator] {
        let name = p.name;
        if !p.stop().await {
            eprintln!("{name} did not stop cleanly");
            clean = false;
        }
    }
    if clean {
        println!("all three processes stopped cleanly on SIGTERM");
    }
    if let Err(e) = outcome {
        // Keep the logs for a look.
        let kept = dir.keep();
        eprintln!("\nDEMO FAILED: {e:#}\nlogs kept in {}", kept.display());
        std::process::exit(1);
    }
    Ok(())
}

/// Seeds, places every order, prints the tables and checks the stock.
async fn run(coordinator: &str, token: &str, inventory: &str, orders: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    // The coordinator answers only callers with a token.
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    let coordinator_http = reqwest::Client::builder().default_headers(auth).build()?;
    for (sku, qty) in STOCK {
        post(
            &http,
            &format!("{inventory}/products"),
            &json!({"sku": sku, "qty": qty}),
        )
        .await?;
    }
    println!("\nseeded: {STOCK:?}\n");
    println!(
        "{:<3} {:<40} {:<5} {:<9} {:<10} {:<22} inventory calls (op: statuses)",
        "#", "scenario", "mode", "order", "outcome", "coordinator attempts"
    );
    for (n, s) in scenarios().iter().enumerate() {
        if let Some((path, kind, count, delay_ms)) = s.fault {
            let fault = json!({"path": path, "kind": kind, "count": count, "delay_ms": delay_ms});
            post(&http, &format!("{inventory}/faults"), &fault).await?;
        }
        let body = json!({"sku": s.sku, "qty": s.qty, "mode": s.mode});
        let order = post(&http, &format!("{orders}/orders"), &body).await?;
        let id = order["id"].as_str().context("order id")?.to_owned();
        let status = order["status"].as_str().unwrap_or("?").to_owned();
        let tx = get(
            &coordinator_http,
            &format!("{coordinator}/v1/transactions/{id}"),
        )
        .await?;
        let attempts: Vec<String> = tx["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}:{}",
                    b["spec"]["id"].as_str().unwrap_or("?"),
                    b["attempts"]
                )
            })
            .collect();
        println!(
            "{:<3} {:<40} {:<5} {:<9} {:<10} {:<22} {}",
            n + 1,
            s.what,
            s.mode,
            format!("{}×{}", s.sku, s.qty),
            status,
            attempts.join(" "),
            inventory_calls(&http, inventory, &id).await?
        );
        if let Some(reason) = order["reason"].as_str().filter(|_| status != "confirmed") {
            println!("    why: {reason}");
        }
        // What the coordinator itself keeps of a refusal: the participant's
        // reason on the refusing branch (`GET /v1/transactions/{gid}`).
        for (branch, refusal) in refusals(&tx) {
            println!("    coordinator: branch {branch} refused: {refusal}");
        }
    }
    println!("\n(coordinator attempts: calls it made per branch, every phase counted; TCC Trys");
    println!(" are made by the order service itself. A call cut off by the timeout never");
    println!(" reaches the inventory's log. 2PC/3PC votes go to both branches at once.)\n");
    check(&http, inventory, orders).await
}

/// (branch id, reason) of every branch of a transaction view whose
/// participant refused it, as the coordinator reports them.
fn refusals(tx: &Value) -> Vec<(String, String)> {
    tx["branches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let refusal = b["refusal"].as_str()?;
            let id = b["spec"]["id"].as_str().unwrap_or("?");
            Some((id.to_owned(), refusal.to_owned()))
        })
        .collect()
}

/// `try: 500,200 confirm: 200`: the inventory's call log for one order.
async fn inventory_calls(
    http: &reqwest::Client,
    inventory: &str,
    gid: &str,
) -> anyhow::Result<String> {
    let calls = get(http, &format!("{inventory}/calls")).await?;
    let mut by_path: Vec<(String, Vec<String>)> = Vec::new();
    for call in calls
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["gid"] == gid)
    {
        let path = call["path"].as_str().unwrap_or("?");
        let op = path.rsplit('/').next().unwrap_or(path).to_owned();
        let status = call["status"].to_string();
        match by_path.iter_mut().find(|(p, _)| *p == op) {
            Some((_, statuses)) => statuses.push(status),
            None => by_path.push((op, vec![status])),
        }
    }
    Ok(by_path
        .into_iter()
        .map(|(op, statuses)| format!("{op}: {}", statuses.join(",")))
        .collect::<Vec<_>>()
        .join("  "))
}

/// Whether an order (as `GET /orders` shows it) will not change any more.
fn is_settled(order: &Value) -> bool {
    matches!(order["status"].as_str(), Some("confirmed" | "cancelled"))
}

/// `GET /orders`, polled until every order is settled or [`SETTLE_WITHIN`]
/// passed (then as it stands).
async fn settled_orders(http: &reqwest::Client, orders: &str) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let all = get(http, &format!("{orders}/orders")).await?;
        let all = all.as_array().cloned().unwrap_or_default();
        if all.iter().all(is_settled) || tokio::time::Instant::now() >= deadline {
            return Ok(all);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the final stock and fails unless it adds up.
async fn check(http: &reqwest::Client, inventory: &str, orders: &str) -> anyhow::Result<()> {
    let all = settled_orders(http, orders).await?;
    let unsettled = all.iter().filter(|o| !is_settled(o)).count();
    // Units of the confirmed orders per product, as the order service
    // finally holds them.
    let mut confirmed: BTreeMap<&str, i64> = BTreeMap::new();
    for order in all.iter().filter(|o| o["status"] == "confirmed") {
        let sku = order["sku"].as_str().unwrap_or("?");
        *confirmed.entry(sku).or_default() += order["qty"].as_i64().unwrap_or(0);
    }
    println!(
        "{:<8} {:>7} {:>9} {:>8} {:>4}   {:>14}  check",
        "product", "initial", "available", "reserved", "sold", "confirmed qty"
    );
    let mut problems = Vec::new();
    for (sku, initial) in STOCK {
        let p = get(http, &format!("{inventory}/products/{sku}")).await?;
        let num = |k: &str| p[k].as_i64().unwrap_or(-1);
        let (available, reserved, sold) = (num("available"), num("reserved"), num("sold"));
        let ordered = confirmed.get(sku).copied().unwrap_or(0);
        let ok = available + reserved + sold == initial && reserved == 0 && sold == ordered;
        if !ok {
            problems.push(format!("{sku} does not add up"));
        }
        println!(
            "{sku:<8} {initial:>7} {available:>9} {reserved:>8} {sold:>4}   {ordered:>14}  {}",
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    if unsettled > 0 {
        problems.push(format!("{unsettled} order(s) not settled"));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    println!("\nthe stock adds up: available + reserved + sold = initial, sold = confirmed orders");
    Ok(())
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = http.post(url).json(body).send().await?;
    read(url, response).await
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = http.get(url).send().await?;
    read(url, response).await
}

async fn read(url: &str, response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {text}");
    }
    // `POST /faults` answers 204 with no body.
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}
