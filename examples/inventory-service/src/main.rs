//! `inventory-service`: the sample inventory participant as a process.
//! Prints `inventory: listening on http://ADDR` once it accepts calls, and
//! stops cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_sdk::CallbackSecret;
use inventory_service::{AppState, run};

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
    let mut state = AppState::connect(&args.db).await?;
    if let Some(secret) = &args.callback_secret {
        state.secret = CallbackSecret::new(secret);
    }
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
