//! `inventory-service`: the sample inventory participant as a process.
//! At start it resolves 2PC branches left prepared by a previous run (on
//! PostgreSQL, asking the coordinator) and starts the 3PC watchdog; then it
//! prints `inventory: listening on http://ADDR` once it accepts calls, and
//! stops cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_sdk::three_phase::ThreePhaseConfig;
use dtx_sdk::{CallbackSecret, Client};
use inventory_service::{AppState, Settings, run};
use std::time::Duration;

/// The sample inventory service for dtx.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// `sqlite:<file>` or `postgres://user:pass@host/db`.
    #[arg(long, env = "INVENTORY_DB", default_value = "sqlite:inventory.db")]
    db: String,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "INVENTORY_LISTEN", default_value = "127.0.0.1:7710")]
    listen: String,
    /// The coordinator, asked about 2PC branches in doubt at start and by
    /// the 3PC watchdog.
    #[arg(
        long,
        env = "INVENTORY_COORDINATOR",
        default_value = "http://127.0.0.1:7707"
    )]
    coordinator: String,
    /// 3PC: how long a branch that voted yes, or pre-committed, waits for
    /// the next call before the watchdog asks the coordinator (and, if it
    /// gives no answer at all, aborts or commits by the timeout rule).
    /// Default: the SDK's (90 s), which outlasts the coordinator's default
    /// deadline and takeover time; keep any other value longer than those.
    #[arg(long, env = "INVENTORY_THREE_PHASE_TIMEOUT_MS")]
    three_phase_timeout_ms: Option<u64>,
    /// 3PC: how often the watchdog looks for branches past that timeout.
    #[arg(long, env = "INVENTORY_THREE_PHASE_CHECK_MS", default_value_t = 1000)]
    three_phase_check_ms: u64,
    /// A deliberately broken participant for the fault-injection harness:
    /// saga and TCC calls skip the barrier, so a retried call moves stock
    /// twice. Never set it in anything real.
    #[arg(long, env = "INVENTORY_UNSAFE_SKIP_BARRIER", hide = true)]
    unsafe_skip_barrier: bool,
    /// Check the coordinator's signature on branch calls with this secret.
    #[arg(long, env = "INVENTORY_CALLBACK_SECRET")]
    callback_secret: Option<String>,
    /// Log filter.
    #[arg(long, env = "INVENTORY_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings {
        db: args.db.clone(),
        secret: args
            .callback_secret
            .as_deref()
            .map_or_else(CallbackSecret::disabled, CallbackSecret::new),
        three_phase: three_phase_config(&args),
        unsafe_skip_barrier: args.unsafe_skip_barrier,
    };
    let state = AppState::open(settings).await?;
    let coordinator = Client::new(&args.coordinator)?;
    // Before listening: branches prepared by the previous run hold locks
    // until resolved. A coordinator that cannot be asked now is not fatal;
    // it sends the decision itself (phase two is retried until acknowledged).
    state.recover(&coordinator).await?;
    let _watchdog = state.spawn_watchdog(coordinator);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The one line on stdout: scripts and the demo read the address from it.
    println!("inventory: listening on http://{}", listener.local_addr()?);
    run(listener, state, shutdown_signal()).await?;
    tracing::info!("inventory: stopped");
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

/// The SDK's 3PC settings, with the timeouts given on the command line.
fn three_phase_config(args: &Args) -> ThreePhaseConfig {
    let config = ThreePhaseConfig::default()
        .check_interval(Duration::from_millis(args.three_phase_check_ms));
    match args.three_phase_timeout_ms.map(Duration::from_millis) {
        Some(timeout) => config.uncertain_timeout(timeout).precommit_timeout(timeout),
        None => config,
    }
}
