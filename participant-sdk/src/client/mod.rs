//! The initiator client: starts sagas, runs TCC transactions as a scope, and
//! reads or waits for outcomes, over the coordinator's `/v1` API.
//!
//! Every request is idempotent by gid, and the client chooses the gid (a
//! UUIDv7 unless you give one) before it sends anything, so a request whose
//! answer was lost can simply be sent again.

mod decision;
mod error;
mod phased;
mod saga;
mod tcc;
mod tcc_outcome;
mod view;

pub use decision::{Decision, DecisionAnswer, DecisionSource};
pub use error::ClientError;
pub use phased::{PhasedBranch, PhasedBuilder};
pub use saga::{Branch, Registered, SagaBuilder};
pub use tcc::{TccBranch, TccBuilder, TccScope};
pub use view::{AbortCause, BranchView, EventView, Transaction};

use crate::signature::CallbackSecret;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The longest single wait asked of the coordinator; longer waits are made
/// of several requests. The coordinator cuts waits to its `--max-wait-ms`
/// (60 s by default) anyway.
const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(60);

/// A handle on one coordinator; cheap to clone (one shared connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    secret: CallbackSecret,
}

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    base: String,
    timeout: Duration,
    secret: CallbackSecret,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// How long one request may take, on top of any wait for an outcome
    /// (default 10 s). Past it the request fails with
    /// [`ClientError::Unreachable`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The secret the coordinator signs participant calls with: the Try
    /// calls the client makes are signed with it too, so participants can
    /// check every call the same way.
    pub fn callback_secret(mut self, secret: CallbackSecret) -> Self {
        self.secret = secret;
        self
    }

    /// Uses this reqwest client (e.g. with custom TLS roots) instead of a
    /// new one. Its own timeout, if any, still applies.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, ClientError> {
        let mut base = Url::parse(&self.base)
            .map_err(|e| ClientError::Config(format!("coordinator URL `{}`: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "coordinator URL `{}` must use http or https",
                self.base
            )));
        }
        // `Url::join` replaces the last path segment unless the base ends
        // with a slash: keep a coordinator mounted under a path reachable.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .user_agent(concat!("dtx-sdk/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                timeout: self.timeout,
                secret: self.secret,
            }),
        })
    }
}

impl Client {
    /// A client of the coordinator at `coordinator_url` (e.g.
    /// `http://127.0.0.1:7707`) with default settings.
    pub fn new(coordinator_url: &str) -> Result<Client, ClientError> {
        Client::builder(coordinator_url).build()
    }

    /// A builder for a client with other settings.
    pub fn builder(coordinator_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: coordinator_url.to_owned(),
            timeout: Duration::from_secs(10),
            secret: CallbackSecret::disabled(),
            http: None,
        }
    }

    /// Starts describing a saga; send it with [`SagaBuilder::submit`].
    pub fn saga(&self) -> SagaBuilder {
        SagaBuilder::new(self.clone())
    }

    /// Starts describing a TCC transaction; run it with [`TccBuilder::run`].
    pub fn tcc(&self) -> TccBuilder {
        TccBuilder::new(self.clone())
    }

    /// The transaction as it is now, with its history.
    pub async fn get(&self, gid: &str) -> Result<Transaction, ClientError> {
        let path = format!("v1/transactions/{}", encode(gid));
        self.call(Method::GET, &path, None::<&()>, Duration::ZERO)
            .await
            .map(|(_, tx)| tx)
    }

    /// Waits until the transaction is final, at most `timeout`; fails with
    /// [`ClientError::TimedOut`] if it is not final by then.
    pub async fn wait(&self, gid: &str, timeout: Duration) -> Result<Transaction, ClientError> {
        let started = tokio::time::Instant::now();
        let path = format!("v1/transactions/{}", encode(gid));
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let wait = left.min(MAX_WAIT_PER_REQUEST);
            let asked = tokio::time::Instant::now();
            let (_, tx): (_, Transaction) =
                self.call(Method::GET, &path, None::<&()>, wait).await?;
            if tx.is_final() {
                return Ok(tx);
            }
            // A zero wait was the last look (the time was up before it).
            if started.elapsed() >= timeout || wait.is_zero() {
                return Err(ClientError::TimedOut {
                    gid: gid.to_owned(),
                    waited: started.elapsed(),
                    status: tx.status,
                });
            }
            // A coordinator that answers long before the wait asked for (its
            // `--max-wait-ms` is short, or it is shutting down) would make
            // this loop spin; pace it instead.
            if asked.elapsed() < wait / 2 {
                let left = timeout.saturating_sub(started.elapsed());
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
            }
        }
    }

    /// Asks the coordinator to abort an open TCC transaction. The
    /// [TCC scope](TccBuilder::run) does this itself; this is for a
    /// transaction you opened and decided on elsewhere.
    pub async fn abort(&self, gid: &str) -> Result<Transaction, ClientError> {
        let path = format!("v1/transactions/{}/abort", encode(gid));
        self.call(Method::POST, &path, None::<&()>, Duration::ZERO)
            .await
            .map(|(_, tx)| tx)
    }

    /// Sends one request to the coordinator and reads a transaction back.
    /// `wait` becomes `?wait_ms=` and lengthens the request timeout.
    async fn call<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        wait: Duration,
    ) -> Result<(StatusCode, R), ClientError> {
        let mut url =
            self.inner.base.join(path).map_err(|e| {
                ClientError::Config(format!("cannot build a URL for `{path}`: {e}"))
            })?;
        if !wait.is_zero() {
            url.query_pairs_mut()
                .append_pair("wait_ms", &wait.as_millis().to_string());
        }
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .timeout(self.inner.timeout + wait);
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(ClientError::from_answer(status.as_u16(), &bytes));
        }
        let answer = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            status: status.as_u16(),
            detail: format!("the answer is not what the API documents: {e}"),
        })?;
        Ok((status, answer))
    }

    fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn secret(&self) -> &CallbackSecret {
        &self.inner.secret
    }
}

/// A gid in a URL path: gids are `A-Z a-z 0-9 - _ . :`, all safe in a path
/// segment, but a caller's typo must not turn into another path.
fn encode(gid: &str) -> String {
    gid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c.to_string()
            } else {
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

/// A fresh gid: UUIDv7, so gids sort by creation time in the coordinator.
fn new_gid() -> String {
    uuid::Uuid::now_v7().to_string()
}
