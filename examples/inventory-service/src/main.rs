//! `inventory-service`: the sample inventory participant as a process.
//! At start it resolves 2PC branches left prepared by a previous run (on
//! PostgreSQL, asking the coordinator) and starts the 3PC watchdog; then it
//! prints `inventory: listening on http://ADDR` once it accepts calls, and
//! stops cleanly on SIGTERM or Ctrl-C.

use clap::Parser;
use dtx_protocol::signature::KeyParser;
use dtx_sdk::signature::Keyring;
use dtx_sdk::three_phase::ThreePhaseConfig;
use dtx_sdk::{Client, SignatureKeys, SigningKey};
use inventory_service::plants::Plant;
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
    /// The coordinators (sharing one store), asked about 2PC branches in
    /// doubt at start and by the 3PC watchdog: repeat the flag, or separate
    /// the URLs with commas. A question goes to another coordinator when
    /// one does not answer or answers 503.
    #[arg(
        long,
        env = "INVENTORY_COORDINATOR",
        value_name = "URL",
        value_delimiter = ',',
        num_args = 1,
        default_value = "http://127.0.0.1:7707"
    )]
    coordinator: Vec<String>,
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
    /// one planted defect by name (see the library's `plants` module). Never
    /// set it in anything real.
    #[arg(long, env = "INVENTORY_UNSAFE_PLANT", value_name = "NAME", hide = true)]
    unsafe_plant: Option<Plant>,
    /// The coordinator's key, `ID:SECRET` (`dtx serve --signing-key`):
    /// branch calls signed with it are accepted, and the coordinator's
    /// answers to the termination query (2PC recovery, 3PC watchdog) must
    /// be signed with it. Repeat the flag, or separate the keys with commas
    /// in the variable; during a rotation give the old and the new key.
    #[arg(
        long = "coordinator-key",
        env = "INVENTORY_COORDINATOR_KEYS",
        value_name = "ID:SECRET",
        value_delimiter = ',',
        value_parser = KeyParser::id_and_secret(),
        hide_env_values = true
    )]
    coordinator_keys: Vec<SigningKey>,
    /// Accept branch calls signed with this key too, `ID:SECRET`: the order
    /// service's (`--signing-key`, for its TCC Trys). It does not count for
    /// the termination query's answers: only the coordinator may say commit
    /// or roll back. With neither flag, calls and answers are not checked
    /// (a warning says so).
    #[arg(
        long = "accept-key",
        env = "INVENTORY_ACCEPT_KEYS",
        value_name = "ID:SECRET",
        value_delimiter = ',',
        value_parser = KeyParser::id_and_secret(),
        hide_env_values = true
    )]
    accept_keys: Vec<SigningKey>,
    /// The API token the coordinator knows this service by (`dtx token new
    /// --role reader`, in the namespace of the order service): sent with the
    /// decision queries of 2PC recovery and the 3PC watchdog.
    #[arg(long, env = "INVENTORY_COORDINATOR_TOKEN", hide_env_values = true)]
    coordinator_token: Option<String>,
    /// Serve `POST /faults` and `GET /calls`, the fault-injection aids of the
    /// demo and the harness. Never in anything real: anyone who reaches the
    /// port could make the service fail.
    #[arg(long, env = "INVENTORY_FAULT_INJECTION")]
    fault_injection: bool,
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
        signature_keys: {
            let callers: Vec<SigningKey> = args
                .coordinator_keys
                .iter()
                .chain(&args.accept_keys)
                .cloned()
                .collect();
            if callers.is_empty() {
                SignatureKeys::disabled()
            } else {
                SignatureKeys::new(callers)?
            }
        },
        three_phase: three_phase_config(&args),
        plant: args.unsafe_plant,
        fault_injection: args.fault_injection,
    };
    let state = AppState::open(settings).await?;
    let mut coordinator = Client::builder_for(&args.coordinator);
    if let Some(token) = &args.coordinator_token {
        coordinator = coordinator.bearer_token(token.clone());
    }
    // Recovery and the watchdog act only on answers signed with it.
    if !args.coordinator_keys.is_empty() {
        coordinator = coordinator.coordinator_keys(Keyring::new(args.coordinator_keys.clone())?);
    }
    let coordinator = coordinator.build()?;
    // Before listening: branches prepared by the previous run hold locks
    // until resolved. A coordinator that cannot be asked now is not fatal;
    // it sends the decision itself (phase two is retried until acknowledged).
    state.recover(&coordinator).await?;
    let _watchdog = state.spawn_watchdog(coordinator);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // The one line on stdout: scripts and the demo read the address from it.
    println!("inventory: listening on http://{}", listener.local_addr()?);
    run(listener, state, dtx_sdk::shutdown_signal()).await?;
    tracing::info!("inventory: stopped");
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    #[test]
    fn a_plant_is_chosen_by_its_kebab_case_name() {
        let args = Args::try_parse_from(["inventory-service", "--unsafe-plant", "abort-sells-3pc"])
            .expect("a known plant");
        assert_eq!(args.unsafe_plant, Some(Plant::AbortSells3pc));
    }

    #[test]
    fn an_unknown_plant_or_a_second_one_is_rejected() {
        let unknown = Args::try_parse_from(["inventory-service", "--unsafe-plant", "skip_barrier"]);
        let unknown = unknown.expect_err("snake_case is not a plant name");
        assert_eq!(unknown.kind(), ErrorKind::InvalidValue);
        let twice = Args::try_parse_from([
            "inventory-service",
            "--unsafe-plant",
            "skip-barrier",
            "--unsafe-plant",
            "refuse-confirm",
        ]);
        let twice = twice.expect_err("at most one plant");
        assert_eq!(twice.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn coordinators_are_repeated_or_comma_separated() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("inventory-service").chain(args.iter().copied()))
        };
        assert_eq!(parse(&[]).unwrap().coordinator, ["http://127.0.0.1:7707"]);
        let several = parse(&[
            "--coordinator",
            "http://127.0.0.1:7707,http://127.0.0.1:7708",
            "--coordinator",
            "http://127.0.0.1:7709",
        ])
        .unwrap();
        assert_eq!(
            several.coordinator,
            [
                "http://127.0.0.1:7707",
                "http://127.0.0.1:7708",
                "http://127.0.0.1:7709"
            ]
        );
        let client = Client::builder_for(&several.coordinator).build().unwrap();
        assert_eq!(client.endpoints().len(), 3);
    }

    #[test]
    fn the_plant_flag_is_hidden_from_help() {
        let help = Args::command().render_long_help().to_string();
        assert!(
            help.contains("--coordinator"),
            "the help lists the other flags"
        );
        assert!(!help.contains("unsafe"), "{help}");
    }
}
