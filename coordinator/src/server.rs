//! Wires store, transport, engine and API together and runs them until the
//! shutdown future resolves.

use crate::api::{AppState, app, metrics_app};
use crate::auth::{Access, Tokens};
use crate::config::{ServeSettings, redact_url};
use crate::engine::{Engine, EngineSettings};
use crate::http_server;
use crate::limits::CallLimit;
use crate::metrics::Metrics;
use crate::outbound::OutboundPolicy;
use crate::store::{self, Store};
use crate::transport::HttpTransport;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Opens the store, retrying while the database is unreachable: a
/// coordinator started before its database waits for it instead of dying.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match store::open(url).await {
            Ok(store) => return Ok(store),
            Err(store::StoreError::Unavailable(e)) => {
                tracing::warn!(
                    db = redact_url(url),
                    error = %e,
                    "database unavailable; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => anyhow::bail!("cannot open {}: {e}", redact_url(url)),
        }
    }
}

/// The CA certificates of `--participant-ca`, if given.
fn participant_roots(bundle: Option<&Path>) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let Some(path) = bundle else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("--participant-ca {}: {e}", path.display()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("--participant-ca {}: {e}", path.display()))?;
    if roots.is_empty() {
        anyhow::bail!(
            "--participant-ca {}: no PEM certificate in it",
            path.display()
        );
    }
    Ok(roots)
}

/// How the API recognises callers: by the tokens of `--tokens`, or open,
/// which is refused on an address other than loopback unless
/// `--insecure-open` says so.
fn access_of(settings: &ServeSettings, address: SocketAddr) -> anyhow::Result<Access> {
    if let Some(path) = &settings.tokens {
        let tokens = Tokens::load(path)?;
        return Ok(Access::Tokens(Arc::new(tokens)));
    }
    if !address.ip().is_loopback() && !settings.insecure_open {
        anyhow::bail!(
            "refusing to serve an API without tokens on {address}, which is not loopback: \
             anyone who reaches it could read, register and decide every transaction. \
             Give a token file with --tokens (see `dtx token new`), listen on 127.0.0.1, \
             or pass --insecure-open if nobody else can reach this network"
        );
    }
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "serving an API without tokens (--insecure-open)");
    }
    Ok(Access::Open)
}

/// Runs the coordinator on `listener` until `shutdown` resolves: stop
/// accepting, let requests in progress finish, stop the drivers and release
/// the leases.
pub async fn run(
    settings: ServeSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let access = access_of(&settings, listener.local_addr()?)?;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let store = open_store(&settings.db).await?;
    let outbound = Arc::new(OutboundPolicy::new(&settings.allow_participants));
    tracing::info!(policy = %outbound, "participants dtx may call");
    let signing_key = settings.signing_key();
    let transport = Arc::new(HttpTransport::configured(
        signing_key.clone(),
        outbound.clone(),
        participant_roots(settings.participant_ca.as_deref())?,
    )?);
    let transport = Arc::new(CallLimit::new(
        transport,
        settings.limits.max_outbound_calls,
    ));
    let node_id = settings
        .node_id
        .clone()
        .unwrap_or_else(|| format!("dtx-{}", uuid::Uuid::new_v4().simple()));
    tracing::info!(node_id, db = redact_url(&settings.db), "starting");
    let engine = Engine::new(
        store,
        transport,
        Arc::new(Metrics::default()),
        EngineSettings {
            node_id,
            lease: Duration::from_millis(settings.lease_ms),
            claim_interval: Duration::from_millis(settings.claim_interval_ms),
            shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
            seed: None,
            max_history_events: settings.limits.max_history_events as usize,
        },
    );
    engine.start();
    let state = AppState {
        engine: engine.clone(),
        max_wait: Duration::from_millis(settings.max_wait_ms),
        outbound,
        access,
        limits: Arc::new(settings.limits.clone()),
        waiters: Arc::new(Semaphore::new(settings.limits.max_waiters)),
        signing_key,
    };
    if let Some(address) = settings.metrics_listen {
        let metrics_listener = TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {address} for metrics: {e}"))?;
        tracing::info!(%address, "serving /metrics without a token");
        let metrics = metrics_app(engine.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, metrics).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    // Stop the engine as soon as the signal comes, not after the last HTTP
    // connection closes: requests waiting for an outcome return at once.
    let stopping = engine.clone();
    let signal = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    let app = app(state, settings.max_body_bytes);
    http_server::serve(listener, tls, app, &settings.limits, signal).await;
    tracing::info!("stopped accepting requests; stopping drivers");
    engine.shutdown().await;
    Ok(())
}
