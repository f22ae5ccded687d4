//! Settings of the `dtx` binary: one struct per command, read from flags with
//! `DTX_*` environment variables as fallbacks, each with a default.

use crate::outbound::AllowEntry;
use clap::{Args, Parser, Subcommand};
use dtx_protocol::signature::{KeyParser, SigningKey};
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
    Serve(Box<ServeSettings>),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
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

/// `dtx token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token, and the line that grants it, for the `--tokens`
    /// file. The file keeps only the token's hash: the token is shown once.
    New {
        /// The token's name, written into the history of what it does.
        #[arg(long)]
        name: String,
        /// `initiator` (register, decide and read in its namespace),
        /// `reader` (read in its namespace) or `operator` (everything).
        #[arg(long, value_parser = crate::auth::parse_role)]
        role: crate::auth::Role,
        /// The namespace its transactions belong to.
        #[arg(long, default_value = crate::auth::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Append the line to this token file (created if missing) and
        /// print only the token, for scripts.
        #[arg(long, value_name = "FILE")]
        append_to: Option<std::path::PathBuf>,
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

    /// Address to listen on; port 0 picks a free port. Without `--tokens`
    /// only a loopback address is accepted (see `--insecure-open`).
    #[arg(long, env = "DTX_LISTEN", default_value = "127.0.0.1:7707")]
    pub listen: SocketAddr,

    /// API token file (`name role namespace sha256:HEX` per line; `dtx token
    /// new` prints lines). Without it the API is open to anyone who reaches
    /// the port.
    #[arg(long, env = "DTX_TOKENS")]
    pub tokens: Option<std::path::PathBuf>,

    /// Serve an open API (no token file) on an address that is not
    /// loopback. Anyone who reaches the port may then read and decide every
    /// transaction: only for networks nobody else reaches.
    #[arg(long, env = "DTX_INSECURE_OPEN")]
    pub insecure_open: bool,

    /// Serve the API over TLS with this certificate chain (PEM); needs
    /// `--tls-key`.
    #[arg(long, env = "DTX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "DTX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Trust these CA certificates (a PEM bundle) too, besides the system's,
    /// when calling participants over https.
    #[arg(long, env = "DTX_PARTICIPANT_CA")]
    pub participant_ca: Option<std::path::PathBuf>,

    /// Serve `/metrics` without a token on this address too (a scraper's
    /// network); on the API's address `/metrics` needs a token when
    /// `--tokens` is set.
    #[arg(long, env = "DTX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

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

    /// Whom dtx may call: host names (`api.internal`, or `*.internal` for
    /// every name under it) and CIDR ranges (`10.0.0.0/8`, `fd00::/8`),
    /// comma separated or the flag repeated. Unset: any address except
    /// link-local ones, cloud metadata services and 0.0.0.0/`::`. Checked
    /// at registration and on the resolved address of every call.
    #[arg(
        long,
        env = "DTX_ALLOW_PARTICIPANTS",
        value_delimiter = ',',
        value_name = "NAME|CIDR"
    )]
    pub allow_participants: Vec<AllowEntry>,

    /// The key dtx signs participant calls with, `ID:SECRET` (a secret of at
    /// least 32 bytes, e.g. `k1:$(openssl rand -hex 32)`). Participants
    /// verify the `dtx-signature` header with a keyring holding this key;
    /// to rotate, add the new key to every participant's ring first. Unset:
    /// calls are not signed.
    #[arg(
        long,
        env = "DTX_SIGNING_KEY",
        value_name = "ID:SECRET",
        value_parser = KeyParser::id_and_secret(),
        hide_env_values = true
    )]
    pub signing_key: Option<SigningKey>,

    /// Deprecated: `--signing-key default:SECRET`.
    #[arg(
        long,
        env = "DTX_CALLBACK_SECRET",
        value_name = "SECRET",
        value_parser = KeyParser::secret_as(LEGACY_KEY_ID),
        hide = true,
        hide_env_values = true,
        conflicts_with = "signing_key"
    )]
    pub callback_secret: Option<SigningKey>,

    /// Bounds on what callers can make dtx hold or do.
    #[command(flatten)]
    pub limits: crate::limits::Limits,

    /// Log filter, in `tracing` syntax (`info`, `dtx_coordinator=debug`).
    #[arg(long, env = "DTX_LOG", default_value = "info")]
    pub log: String,
}

impl ServeSettings {
    /// The key participant calls are signed with: `--signing-key`, else the
    /// deprecated `--callback-secret` as key `default` (said in the log).
    pub fn signing_key(&self) -> Option<SigningKey> {
        if self.signing_key.is_none() && self.callback_secret.is_some() {
            tracing::warn!(
                "--callback-secret (DTX_CALLBACK_SECRET) is deprecated: it signs as key `default`; \
                 use --signing-key default:SECRET (DTX_SIGNING_KEY)"
            );
        }
        self.signing_key
            .clone()
            .or_else(|| self.callback_secret.clone())
    }
}

/// The key id of a secret given with the deprecated `--callback-secret`.
pub const LEGACY_KEY_ID: &str = "default";

/// Shows the settings without the secret or the database password.
impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("db", &redact_url(&self.db))
            .field("listen", &self.listen)
            .field("tokens", &self.tokens)
            .field("insecure_open", &self.insecure_open)
            .field("metrics_listen", &self.metrics_listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("participant_ca", &self.participant_ca)
            .field("node_id", &self.node_id)
            .field("lease_ms", &self.lease_ms)
            .field("claim_interval_ms", &self.claim_interval_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_wait_ms", &self.max_wait_ms)
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("allow_participants", &self.allow_participants)
            // `SigningKey`'s `Debug` shows its id, never its secret.
            .field("signing_key", &self.signing_key)
            .field("callback_secret", &self.callback_secret)
            .field("limits", &self.limits)
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

    const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";

    fn serve(args: &[&str]) -> Result<ServeSettings, clap::Error> {
        let cli = Cli::try_parse_from(["dtx", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(settings) => Ok(*settings),
            _ => panic!("serve expected"),
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let key = format!("k1:{SECRET}");
        let settings =
            serve(&["--db", "postgres://u:hunter2@h/db", "--signing-key", &key]).unwrap();
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains(SECRET),
            "{shown}"
        );
        assert!(shown.contains("k1"), "the key id shows: {shown}");
    }

    #[test]
    fn a_signing_key_is_id_colon_secret_and_a_short_or_empty_secret_is_refused() {
        let key = format!("k1:{SECRET}");
        let settings = serve(&["--signing-key", &key]).unwrap();
        assert_eq!(
            settings.signing_key().map(|k| k.id().to_owned()),
            Some("k1".into())
        );
        for (bad, says) in [
            ("k1:short", "at least 32"),
            ("k1:", "is empty"),
            ("no-colon", "ID:SECRET"),
        ] {
            let message = serve(&["--signing-key", bad]).unwrap_err().to_string();
            assert!(message.contains(says), "{bad}: {message}");
        }
        assert!(serve(&[]).unwrap().signing_key().is_none());
    }

    #[test]
    fn the_deprecated_callback_secret_is_key_default() {
        let settings = serve(&["--callback-secret", SECRET]).unwrap();
        assert_eq!(
            settings.signing_key().map(|k| k.id().to_owned()),
            Some(LEGACY_KEY_ID.into())
        );
        let short = serve(&["--callback-secret", "s3cr3t"])
            .unwrap_err()
            .to_string();
        assert!(short.contains("at least 32"), "{short}");
        let key = format!("k1:{SECRET}");
        assert!(serve(&["--callback-secret", SECRET, "--signing-key", &key]).is_err());
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--signing-key") && !help.contains("--callback-secret"),
            "{help}"
        );
    }
}
