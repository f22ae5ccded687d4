//! `order-service`: the sample order service as a process. Prints
//! `orders: listening on http://ADDR` once it accepts requests, and stops
//! cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_sdk::{CallbackSecret, Client, RetryPolicy, TxOptions};
use order_service::{AppState, run, store::Db};
use std::time::Duration;

/// The sample order service for dtx.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `sqlite:<file>` or `postgres://user:pass@host/db`.
    #[arg(long, env = "ORDERS_DB", default_value = "sqlite:orders.db")]
    db: String,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:7711")]
    listen: String,
    /// The coordinator.
    #[arg(
        long,
        env = "ORDERS_COORDINATOR",
        default_value = "http://127.0.0.1:7707"
    )]
    coordinator: String,
    /// The inventory service.
    #[arg(
        long,
        env = "ORDERS_INVENTORY",
        default_value = "http://127.0.0.1:7710"
    )]
    inventory: String,
    /// The URL the coordinator calls this service at (default: the address
    /// it listens on).
    #[arg(long, env = "ORDERS_PUBLIC_URL")]
    public_url: Option<String>,
    /// One participant call's timeout; past it the answer is unknown and the
    /// call is retried.
    #[arg(long, env = "ORDERS_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    request_timeout_ms: u64,
    /// An order's transaction deadline: phase one (saga actions, TCC commit
    /// request, 2PC/3PC votes and 3PC pre-commit acks) must end by then.
    #[arg(long, env = "ORDERS_DEADLINE_MS", default_value_t = 60000)]
    deadline_ms: u64,
    /// How long `POST /orders` waits for the outcome.
    #[arg(long, env = "ORDERS_WAIT_MS", default_value_t = 30000)]
    wait_ms: u64,
    /// Sign Try calls, and check the coordinator's signature, with this secret.
    #[arg(long, env = "ORDERS_CALLBACK_SECRET")]
    callback_secret: Option<String>,
    /// Log filter.
    #[arg(long, env = "ORDERS_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let secret = args
        .callback_secret
        .as_deref()
        .map_or_else(CallbackSecret::disabled, CallbackSecret::new);
    let client = Client::builder(&args.coordinator)
        .callback_secret(secret.clone())
        .build()?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        db: Db::connect(&args.db).await?,
        client,
        inventory_url: args.inventory.trim_end_matches('/').to_owned(),
        public_url: args
            .public_url
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_owned(),
        options: TxOptions {
            request_timeout_ms: args.request_timeout_ms,
            deadline_ms: args.deadline_ms,
            // Short backoff: a sample should show a retry within a second.
            retry: RetryPolicy {
                initial_ms: 100,
                max_ms: 2000,
                multiplier: 2.0,
            },
            ..TxOptions::default()
        },
        wait: Duration::from_millis(args.wait_ms),
        secret,
        placing: Default::default(),
    };
    // The one line on stdout: scripts and the demo read the address from it.
    println!("orders: listening on http://{addr}");
    run(listener, state, shutdown_signal()).await?;
    tracing::info!("orders: stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
