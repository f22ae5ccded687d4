//! The `dtx` binary: `dtx serve` runs the coordinator, `dtx migrate` prepares
//! a database, `dtx token new` makes an API token. `dtx --help` explains every flag and its `DTX_*` variable.

use anyhow::Context;
use clap::Parser;
use dtx_coordinator::auth;
use dtx_coordinator::config::{Cli, Command, TokenCommand};
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
            let scheme = if settings.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            println!("dtx: listening on {scheme}://{}", listener.local_addr()?);
            server::run(*settings, listener, shutdown_signal()).await
        }
        Command::Token(TokenCommand::New {
            name,
            role,
            namespace,
            append_to,
        }) => {
            let (token, line) =
                auth::new_token(&name, role, &namespace).map_err(anyhow::Error::msg)?;
            match append_to {
                Some(path) => {
                    use std::io::Write;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    writeln!(file, "{line}")
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    println!("{token}");
                }
                None => {
                    println!("token (give it to the client; it is not stored anywhere): {token}");
                    println!("line for the --tokens file:");
                    println!("{line}");
                }
            }
            Ok(())
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
