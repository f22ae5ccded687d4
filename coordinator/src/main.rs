//! The `dtx` binary: `dtx serve` runs the coordinator, `dtx migrate` prepares
//! a database. `dtx --help` explains every flag and its `DTX_*` variable.

use anyhow::Context;
use clap::Parser;
use dtx_coordinator::config::{Cli, Command};
use dtx_coordinator::server;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(settings) => {
            init_logging(&settings.log);
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            // Tests and scripts read this line to learn the port.
            println!("dtx: listening on http://{}", listener.local_addr()?);
            server::run(settings, listener, shutdown_signal()).await
        }
        Command::Migrate { db } => {
            init_logging("info");
            server::open_store(&db).await?;
            println!("dtx: migrations applied");
            Ok(())
        }
    }
}

fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}
