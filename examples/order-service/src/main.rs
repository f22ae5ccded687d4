//! `order-service`: the sample order service as a process. Prints
//! `orders: listening on http://ADDR` once it accepts requests, runs the
//! background reconciler (which settles unsettled orders) while it serves,
//! and stops cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_sdk::{CallbackSecret, Client, RetryPolicy, TxOptions};
use order_service::plants::Plant;
use order_service::{AppState, reconcile, run, store::Db};
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
    /// How often the background reconciler looks for unsettled orders
    /// (asks the coordinator how their transactions ended, places again an
    /// order the coordinator never heard of).
    #[arg(long, env = "ORDERS_RECONCILE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    reconcile_interval_ms: u64,
    /// Test-only: run with this planted defect (see `order_service::plants`),
    /// so a checker can prove it catches it. Never in production.
    #[arg(long, env = "ORDERS_UNSAFE_PLANT", value_enum, hide = true)]
    unsafe_plant: Option<Plant>,
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
    if let Some(plant) = args.unsafe_plant {
        tracing::warn!(
            plant = plant.name(),
            "UNSAFE: planted defect active; this service is deliberately wrong (test-only)"
        );
    }
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
        plant: args.unsafe_plant,
    };
    // Runs until main returns (dropping it stops it).
    let _reconciler = reconcile::spawn(
        state.clone(),
        reconcile::Settings {
            interval: Duration::from_millis(args.reconcile_interval_ms),
            ..reconcile::Settings::default()
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("order-service").chain(args.iter().copied()))
    }

    #[test]
    fn no_plant_and_a_one_second_reconciler_by_default() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(args.unsafe_plant, None);
        assert_eq!(args.reconcile_interval_ms, 1000);
    }

    #[test]
    fn the_plant_flag_takes_one_kebab_case_name() {
        let args = parse(&["--unsafe-plant", "compensation-keeps-order"]).expect("parses");
        assert_eq!(args.unsafe_plant, Some(Plant::CompensationKeepsOrder));
        assert!(parse(&["--unsafe-plant", "no-such-plant"]).is_err());
        let twice = [
            "--unsafe-plant",
            "double-insert",
            "--unsafe-plant",
            "answer-before-outcome",
        ];
        assert!(parse(&twice).is_err(), "at most one plant");
    }

    #[test]
    fn the_plant_flag_is_hidden_from_help() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(!help.contains("unsafe"), "{help}");
        assert!(help.contains("--reconcile-interval-ms"), "{help}");
    }

    #[test]
    fn a_zero_reconcile_interval_is_refused() {
        assert!(parse(&["--reconcile-interval-ms", "0"]).is_err());
    }
}
