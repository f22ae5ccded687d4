//! TLS end to end: dtx's own listener with `--tls-cert`/`--tls-key`, and
//! participants called over https with a private CA (`--participant-ca`).
//! Certificates are made for each run with rcgen.

mod common;

use axum::Router;
use axum::routing::post;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, written
/// as PEM files in `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `dtx serve` with `extra` flags; its base URL (scheme from its line).
async fn start_dtx(dir: &Path, name: &str, extra: &[&str]) -> (tokio::process::Child, String) {
    let db = format!("sqlite:{}", dir.join(format!("{name}.db")).display());
    let mut child = tokio::process::Command::new(common::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("dtx: listening on ") {
            return (child, url.replace("127.0.0.1", "localhost"));
        }
    }
    panic!("dtx never said where it listens");
}

fn client_trusting(ca: &Path) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_api_is_served_over_tls_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (_dtx, url) = start_dtx(
        dir.path(),
        "api",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert!(url.starts_with("https://"), "{url}");
    let client = client_trusting(&ca);
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
            ready = r.status().as_u16() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    let page: Value = client
        .get(format!("{url}/v1/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["transactions"], json!([]));
    // Plain HTTP is not answered as HTTP, and a client that does not trust
    // the CA refuses the certificate.
    let plain = reqwest::get(url.replace("https://", "http://") + "/readyz").await;
    assert!(plain.is_err() || plain.unwrap().status().as_u16() != 200);
    assert!(reqwest::get(format!("{url}/readyz")).await.is_err());
}

/// A participant over https whose every call answers 200; the number of
/// calls it received.
async fn https_participant(cert: &Path, key: &Path) -> (String, Arc<AtomicUsize>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Router::new().route(
        "/{*path}",
        post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "{}" }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (format!("https://localhost:{port}"), calls)
}

/// Registers a saga calling `participant` and waits up to `wait_ms` for
/// its outcome.
async fn run_saga(url: &str, participant: &str, wait_ms: u64) -> Value {
    let body = json!({"gid": "tls", "mode": "saga", "branches": [{
        "id": "a", "action": format!("{participant}/a/action"),
        "compensate": format!("{participant}/a/compensate")}],
        "options": {"request_timeout_ms": 1000, "deadline_ms": 30000,
            "retry": {"initial_ms": 50, "max_ms": 200, "multiplier": 2.0}}});
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{url}/readyz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = client
        .post(format!("{url}/v1/transactions?wait_ms={wait_ms}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

#[tokio::test]
async fn participants_over_https_are_trusted_through_the_given_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (participant, calls) = https_participant(&cert, &key).await;
    let (_trusting, url) = start_dtx(
        dir.path(),
        "trusting",
        &["--participant-ca", ca.to_str().unwrap()],
    )
    .await;
    let t = run_saga(&url, &participant, 20_000).await;
    assert_eq!(t["status"], "committed", "{t}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (_other, url) = start_dtx(dir.path(), "other", &[]).await;
    // Every call fails at the handshake: it never commits.
    let t = run_saga(&url, &participant, 2000).await;
    assert_ne!(t["status"], "committed", "{t}");
    let error = t["branches"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("certificate") || error.contains("TLS") || error.contains("tls"),
        "{t}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the untrusted certificate was refused"
    );
}
