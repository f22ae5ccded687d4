//! The workload: concurrent clients placing orders at the order service, in
//! every mode, while the nemesis works, each recording what it was told.
//!
//! What a client is told is not the truth (an answer can be lost, a service
//! can be down); the checker reads the truth from the services afterwards.
//! The outcomes here feed the report's counts and timeline.

use std::time::{Duration, Instant};

use dtx_protocol::Mode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::checker::OrderStatus;

/// What the workload does.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadConfig {
    /// Concurrent clients, each placing one order after another.
    pub clients: usize,
    /// The modes orders are placed in, taken in turn.
    pub modes: Vec<Mode>,
    /// The product orders buy: seeded plentifully, so that orders keep
    /// succeeding for the whole run (progress after every fault is checked).
    pub sku: String,
    /// Every `scarce_every`-th order of a client buys this product instead:
    /// seeded scarcely, so that it runs out and later orders for it are
    /// refused, which exercises compensation, cancel and rollback. 0: never.
    pub scarce_every: usize,
    /// See `scarce_every`.
    pub scarce_sku: String,
    /// Each order buys 1 to this many units.
    pub max_qty: i64,
    /// How long one `POST /orders` may take before the client gives up on it.
    pub request_timeout: Duration,
}

/// What a client was told about one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Told {
    /// The order settled with this status (confirmed or cancelled).
    Settled(OrderStatus),
    /// 202: accepted, not settled yet.
    Unsettled,
    /// Another HTTP status (the service is up but could not place it).
    Refused(u16),
    /// No answer (down, cut off, timed out): the order may or may not exist.
    NoAnswer,
}

/// One order attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Milliseconds from the start of the scenario when the answer came.
    pub at_ms: u64,
    /// The mode asked for.
    pub mode: Mode,
    /// The order id, when the answer carried one.
    pub order: Option<String>,
    /// What the client was told.
    pub told: Told,
}

/// Runs the clients until `stop` turns true; returns every attempt, in
/// order of answer. Clients draw quantities from `seed`, so a replay places
/// the same orders (their timing still depends on the system).
pub async fn run(
    http: reqwest::Client,
    orders_url: String,
    config: WorkloadConfig,
    seed: u64,
    started: Instant,
    stop: watch::Receiver<bool>,
) -> Vec<Attempt> {
    let mut clients = JoinSet::new();
    for client in 0..config.clients {
        let (http, url, config, mut stop) = (
            http.clone(),
            orders_url.clone(),
            config.clone(),
            stop.clone(),
        );
        clients.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
            let mut attempts = Vec::new();
            let mut turn = client;
            while !*stop.borrow() {
                let mode = config.modes[turn % config.modes.len()];
                turn += 1;
                let qty = rng.random_range(1..=config.max_qty);
                let sku = if config.scarce_every > 0 && turn % config.scarce_every == 0 {
                    &config.scarce_sku
                } else {
                    &config.sku
                };
                let body = json!({"sku": sku, "qty": qty, "mode": mode});
                let request = http
                    .post(format!("{url}/orders"))
                    .timeout(config.request_timeout)
                    .json(&body)
                    .send();
                let (told, order, stopping) = tokio::select! {
                    answer = request => {
                        let (told, order) = read_answer(answer).await;
                        (told, order, false)
                    }
                    // Stopped mid-request: the order may exist all the
                    // same, so the attempt counts, unanswered.
                    _ = stop.changed() => (Told::NoAnswer, None, true),
                };
                let at_ms = started.elapsed().as_millis() as u64;
                if !stopping {
                    follow_up(&http, &url, &told, order.as_deref(), &config, &mut stop).await;
                }
                attempts.push(Attempt {
                    at_ms,
                    mode,
                    order,
                    told,
                });
                if stopping {
                    break;
                }
            }
            attempts
        });
    }
    let mut all = Vec::new();
    while let Some(done) = clients.join_next().await {
        all.extend(done.unwrap_or_default());
    }
    all.sort_by_key(|a| a.at_ms);
    all
}

/// How often a client asks about an order it was answered 202 for.
const UNSETTLED_POLL: Duration = Duration::from_millis(250);

/// What a client does after an answer before it places its next order, as
/// a real client would: it does not spin against a service that is away
/// (no answer: a short pause) or cannot place orders now (a 5xx: dtx's 503
/// asks for a second), and after a 202 ("accepted, still going") it follows
/// its order (`GET /orders/{id}`) until the order settles, at most
/// `request_timeout`, instead of placing another at once. Each order
/// accepted while the coordinators cannot take it (their database failing
/// over) waits for the service's reconciler; a client that placed a new
/// one every few milliseconds meanwhile (hundreds in one failover) left a
/// backlog that the reconciler drained beside the clients' new orders for
/// tens of seconds, which no real client's behaviour causes. Returns early
/// when `stop` turns.
async fn follow_up(
    http: &reqwest::Client,
    url: &str,
    told: &Told,
    order: Option<&str>,
    config: &WorkloadConfig,
    stop: &mut watch::Receiver<bool>,
) {
    let wait = async {
        match (told, order) {
            (Told::NoAnswer, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (Told::Refused(500..), _) => tokio::time::sleep(Duration::from_secs(1)).await,
            (Told::Unsettled, Some(order)) => {
                let _ = tokio::time::timeout(
                    config.request_timeout,
                    until_settled(http, url, order, config.request_timeout),
                )
                .await;
            }
            _ => {}
        }
    };
    tokio::select! {
        () = wait => {}
        _ = stop.changed() => {}
    }
}

/// Asks about `order` every [`UNSETTLED_POLL`] until it reads settled.
async fn until_settled(http: &reqwest::Client, url: &str, order: &str, request_timeout: Duration) {
    loop {
        tokio::time::sleep(UNSETTLED_POLL).await;
        let answer = http
            .get(format!("{url}/orders/{order}"))
            .timeout(request_timeout)
            .send()
            .await;
        let Ok(response) = answer else { continue };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let status: OrderStatus =
            serde_json::from_value(body["status"].clone()).unwrap_or(OrderStatus::Other);
        if status.is_settled() {
            return;
        }
    }
}

/// What a client makes of the order service's answer to `POST /orders`.
pub async fn read_answer(
    answer: Result<reqwest::Response, reqwest::Error>,
) -> (Told, Option<String>) {
    let Ok(response) = answer else {
        return (Told::NoAnswer, None);
    };
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let order = body["id"].as_str().map(str::to_owned);
    let told = match status {
        201 => Told::Settled(
            serde_json::from_value(body["status"].clone()).unwrap_or(OrderStatus::Other),
        ),
        202 => Told::Unsettled,
        other => Told::Refused(other),
    };
    (told, order)
}
