//! Wires store, transport, engine and API together and runs them until the
//! shutdown future resolves.

use crate::api::{AppState, app};
use crate::config::{ServeSettings, redact_url};
use crate::engine::{Engine, EngineSettings};
use crate::metrics::Metrics;
use crate::store::{self, Store};
use crate::transport::HttpTransport;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

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

/// Runs the coordinator on `listener` until `shutdown` resolves: stop
/// accepting, let requests in progress finish, stop the drivers and release
/// the leases.
pub async fn run(
    settings: ServeSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&settings.db).await?;
    let transport = Arc::new(HttpTransport::new(settings.callback_secret.as_deref())?);
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
        },
    );
    engine.start();
    let state = AppState {
        engine: engine.clone(),
        max_wait: Duration::from_millis(settings.max_wait_ms),
    };
    // Stop the engine as soon as the signal comes, not after the last HTTP
    // connection closes: requests waiting for an outcome return at once.
    let stopping = engine.clone();
    let signal = async move {
        shutdown.await;
        stopping.begin_shutdown();
    };
    axum::serve(listener, app(state, settings.max_body_bytes))
        .with_graceful_shutdown(signal)
        .await?;
    tracing::info!("stopped accepting requests; stopping drivers");
    engine.shutdown().await;
    Ok(())
}
