//! Settings of the `dtx` binary: one struct per command, read from flags with
//! `DTX_*` environment variables as fallbacks, each with a default.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;

/// dtx: a distributed transaction coordinator (saga, TCC).
#[derive(Debug, Parser)]
#[command(name = "dtx", version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator.
    Serve(ServeSettings),
    /// Apply the database migrations and exit (`serve` applies them too).
    Migrate {
        /// Database URL: `sqlite:<file>` or `postgres://user:pass@host/db`.
        #[arg(
            long,
            env = "DTX_DB",
            default_value = "sqlite:dtx.db",
            hide_env_values = true
        )]
        db: String,
    },
}

/// Settings of `dtx serve`.
#[derive(Clone, Args)]
pub struct ServeSettings {
    /// Database URL: `sqlite:<file>` (created on first start) or
    /// `postgres://user:pass@host/db` (several coordinators may share it).
    #[arg(
        long,
        env = "DTX_DB",
        default_value = "sqlite:dtx.db",
        hide_env_values = true
    )]
    pub db: String,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "DTX_LISTEN", default_value = "127.0.0.1:7707")]
    pub listen: SocketAddr,

    /// This coordinator's name in the transaction log's owner column; must be
    /// unique among coordinators sharing a database. Random when unset.
    #[arg(long, env = "DTX_NODE_ID")]
    pub node_id: Option<String>,

    /// Lease length in milliseconds: how long a transaction whose coordinator
    /// vanished waits before another coordinator takes it over.
    #[arg(long, env = "DTX_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ms: u64,

    /// How often, in milliseconds, to look for transactions to take over.
    #[arg(long, env = "DTX_CLAIM_INTERVAL_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(50..))]
    pub claim_interval_ms: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "DTX_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest `wait_ms` honoured, in milliseconds.
    #[arg(long, env = "DTX_MAX_WAIT_MS", default_value_t = 60_000)]
    pub max_wait_ms: u64,

    /// How long shutdown waits for transactions in flight, in milliseconds,
    /// before leaving them to recovery.
    #[arg(long, env = "DTX_SHUTDOWN_GRACE_MS", default_value_t = 5_000)]
    pub shutdown_grace_ms: u64,

    /// Secret for the HMAC-SHA256 `dtx-signature` header on participant
    /// calls; unset means calls are not signed.
    #[arg(long, env = "DTX_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,

    /// Log filter, in `tracing` syntax (`info`, `dtx_coordinator=debug`).
    #[arg(long, env = "DTX_LOG", default_value = "info")]
    pub log: String,
}

/// Shows the settings without the secret or the database password.
impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("db", &redact_url(&self.db))
            .field("listen", &self.listen)
            .field("node_id", &self.node_id)
            .field("lease_ms", &self.lease_ms)
            .field("claim_interval_ms", &self.claim_interval_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_wait_ms", &self.max_wait_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "<hidden>"),
            )
            .field("log", &self.log)
            .finish()
    }
}

/// The URL with its password replaced, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("<hidden>"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_hides_secrets() {
        let cli = Cli::parse_from([
            "dtx",
            "serve",
            "--db",
            "postgres://u:hunter2@h/db",
            "--callback-secret",
            "s3cr3t",
        ]);
        let Command::Serve(settings) = cli.command else {
            panic!("serve expected")
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
