//! `order-service`: the sample order service as a process. Prints
//! `orders: listening on http://ADDR` once it accepts requests, runs the
//! background reconciler (which settles unsettled orders) while it serves,
//! and stops cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_protocol::signature::KeyParser;
use dtx_sdk::signature::Keyring;
use dtx_sdk::{Client, RetryPolicy, SignatureKeys, SigningKey, TxOptions};
use order_service::plants::Plant;
use order_service::{AppState, reconcile, run, store::Store};
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
    /// The coordinators (sharing one store): repeat the flag, or separate
    /// the URLs with commas. Registrations are spread over the healthy
    /// ones, and a request goes to another when one does not answer or
    /// answers 503; a host name resolving to several addresses counts as
    /// one coordinator per address.
    #[arg(
        long,
        env = "ORDERS_COORDINATOR",
        value_name = "URL",
        value_delimiter = ',',
        num_args = 1,
        default_value = "http://127.0.0.1:7707"
    )]
    coordinator: Vec<String>,
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
    /// This service's own key as an initiator, `ID:SECRET`: it signs the TCC
    /// Try calls the service makes (to the inventory and to itself). Give it
    /// to the inventory's `--accept-key` too.
    #[arg(
        long,
        env = "ORDERS_SIGNING_KEY",
        value_name = "ID:SECRET",
        value_parser = KeyParser::id_and_secret(),
        hide_env_values = true
    )]
    signing_key: Option<SigningKey>,
    /// Accept branch calls signed with this key, `ID:SECRET`: give the
    /// coordinator's (`dtx serve --signing-key`); this service's own
    /// `--signing-key` is accepted too. Repeat the flag, or separate the keys
    /// with commas in the variable. The client takes answers to the
    /// termination query only when signed with one of these (this service's
    /// own key does not count). Unset: calls are not checked (a warning says
    /// so).
    #[arg(
        long = "accept-key",
        env = "ORDERS_ACCEPT_KEYS",
        value_name = "ID:SECRET",
        value_delimiter = ',',
        value_parser = KeyParser::id_and_secret(),
        hide_env_values = true
    )]
    accept_keys: Vec<SigningKey>,
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
    /// The API token this service registers transactions with (`dtx token
    /// new --role initiator`).
    #[arg(long, env = "ORDERS_COORDINATOR_TOKEN", hide_env_values = true)]
    coordinator_token: Option<String>,
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
    let signature_keys = signature_keys(&args)?;
    let mut client = Client::builder_for(&args.coordinator);
    if let Some(key) = args.signing_key.clone() {
        client = client.signing_key(key);
    }
    if let Some(token) = &args.coordinator_token {
        client = client.bearer_token(token.clone());
    }
    if !args.accept_keys.is_empty() {
        client = client.coordinator_keys(Keyring::new(args.accept_keys.clone())?);
    }
    let client = client.build()?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        db: Store::connect(&args.db).await?,
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
        signature_keys,
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
    run(listener, state, dtx_sdk::shutdown_signal()).await?;
    tracing::info!("orders: stopped");
    Ok(())
}

/// The keys branch calls to this service must be signed with: the
/// `--accept-key`s and this service's own `--signing-key` (its Try of its own
/// branch), unless a key of that id is listed already. None without
/// `--accept-key`.
fn signature_keys(args: &Args) -> anyhow::Result<SignatureKeys> {
    if args.accept_keys.is_empty() {
        return Ok(SignatureKeys::disabled());
    }
    let own = args
        .signing_key
        .clone()
        .filter(|own| !args.accept_keys.iter().any(|k| k.id() == own.id()));
    Ok(SignatureKeys::new(
        args.accept_keys.iter().cloned().chain(own),
    )?)
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
    fn the_keys_accepted_are_the_accept_keys_and_the_services_own() {
        let coordinator = "dtx:coordinator-secret-0123456789abcdef-0123";
        let own = "orders:orders-secret-0123456789abcdef-0123456";
        let args = parse(&["--accept-key", coordinator, "--signing-key", own]).unwrap();
        assert_eq!(
            format!("{:?}", signature_keys(&args).unwrap()),
            r#"SignatureKeys(["dtx", "orders"])"#
        );
        let listed_twice = parse(&[
            "--accept-key",
            coordinator,
            "--accept-key",
            own,
            "--signing-key",
            own,
        ]);
        assert!(signature_keys(&listed_twice.unwrap()).is_ok());
        let unchecked = parse(&["--signing-key", own]).unwrap();
        assert!(!signature_keys(&unchecked).unwrap().is_enabled());
        let short = parse(&["--accept-key", "dtx:short"])
            .unwrap_err()
            .to_string();
        assert!(short.contains("at least 32"), "{short}");
    }

    #[test]
    fn coordinators_are_repeated_or_comma_separated() {
        let one = parse(&[]).unwrap();
        assert_eq!(one.coordinator, ["http://127.0.0.1:7707"]);
        let several = parse(&[
            "--coordinator",
            "http://10.0.0.1:7707,http://10.0.0.2:7707",
            "--coordinator",
            "http://dtx.internal:7707",
        ])
        .unwrap();
        assert_eq!(
            several.coordinator,
            [
                "http://10.0.0.1:7707",
                "http://10.0.0.2:7707",
                "http://dtx.internal:7707"
            ]
        );
        let client = Client::builder_for(&several.coordinator).build().unwrap();
        assert_eq!(
            client.endpoints().len(),
            2,
            "the name is resolved at first use"
        );
    }

    #[test]
    fn a_zero_reconcile_interval_is_refused() {
        assert!(parse(&["--reconcile-interval-ms", "0"]).is_err());
    }
}
