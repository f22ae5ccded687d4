//! [`shutdown_signal`]: the future a service hands to axum's graceful
//! shutdown, so that it stops cleanly when its supervisor asks.

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what `docker stop`, systemd and
/// Kubernetes send), and logs that the service is shutting down. Give it to
/// `axum::serve(..).with_graceful_shutdown(..)`: calls in flight then finish
/// before the process exits, so a participant does not leave a call half
/// answered on every deployment.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a Ctrl-C handler, wait for SIGTERM alone.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
