//! The initiator client: registers sagas, 2PC and 3PC transactions, runs
//! TCC transactions as a scope, and reads or waits for outcomes, over the
//! coordinator's `/v1` API.
//!
//! One naming scheme for every mode: a [`Client`] method starts a builder
//! ([`Client::saga`] → [`SagaBuilder`], [`Client::tcc`] → [`TccBuilder`],
//! [`Client::two_phase`] → [`TwoPhaseBuilder`], [`Client::three_phase`] →
//! [`ThreePhaseBuilder`]), which takes branches of its own mode
//! ([`SagaBranch`], [`TccBranch`], [`TwoPhaseBranch`], [`ThreePhaseBranch`]),
//! each URL set by the method named after its operation. What comes back is
//! a [`TransactionView`].
//!
//! Every request is idempotent by gid, and the client chooses the gid (a
//! UUIDv7 unless you give one) before it sends anything, so a request whose
//! answer was lost can simply be sent again, to the same coordinator or to
//! another one sharing its store: that is what lets a [`Client`] know
//! several coordinators and fail over between them.
//!
//! # Layout
//! - `config`: [`ClientBuilder`] and the default timings.
//! - `endpoints`, `health`, `prober`, `failover`: the coordinators as
//!   endpoints (one per address of a host name), their health and backoff
//!   (pure), the background readiness probes, and the one request path
//!   that tries them in turn.
//! - `builder`, `branch`, [`mode`]: describing a transaction of each mode;
//!   `tcc`, `tcc_outcome`: the TCC scope; `decision`: the termination
//!   query and the verification of its signed answer; `view`: what the
//!   coordinator answers; `error`: [`ClientError`].

mod branch;
mod builder;
mod config;
mod decision;
mod endpoints;
mod error;
mod failover;
mod health;
pub mod mode;
mod prober;
mod tcc;
mod tcc_outcome;
mod view;

pub use branch::{Branch, SagaBranch, TccBranch, ThreePhaseBranch, TwoPhaseBranch};
pub use builder::{
    Registered, SagaBuilder, TccBuilder, ThreePhaseBuilder, TransactionBuilder, TwoPhaseBuilder,
};
pub use config::{
    ClientBuilder, DEFAULT_FAILOVER_TIME, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_TIMEOUT,
};
pub use decision::{Decision, DecisionAnswer, DecisionSource};
pub use endpoints::CoordinatorEndpoint;
pub use error::ClientError;
pub use tcc::TccScope;
pub use view::{AbortCause, BranchView, EventView, TransactionView};

use crate::signature::{DecisionVerifier, SigningKey};
use config::BearerToken;
use dtx_protocol::wire::AbortRequest;
use endpoints::{Directory, Endpoint};
use failover::Answered;
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;

/// The longest single wait asked of the coordinator; longer waits are made
/// of several requests. The coordinator cuts waits to its `--max-wait-ms`
/// (60 s by default) anyway.
const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(60);

/// A handle on the coordinators; cheap to clone (the clones share their
/// connections, the coordinators' health and the prober).
///
/// # Several coordinators
/// A client may know several coordinators that share one store
/// ([`ClientBuilder::add_coordinator`], [`Client::builder_for`]), and a host
/// name that resolves to several addresses counts as one coordinator per
/// address. Requests are spread over the healthy ones in turn; a request
/// moves on to the next coordinator when the one it asked gives no answer
/// (connection error, timeout) or answers 503, and never after any other
/// answer. Sending a request again elsewhere is safe because every request
/// is idempotent by gid: a registration repeated under the same gid with
/// the same body is the same transaction. A coordinator that failed is
/// skipped for a while and probed back (`GET /readyz`); a coordinator that
/// stops answering without closing its connections (paused, partitioned)
/// is noticed by the probes, and the requests waiting on it go to another
/// one within [`failover_time`](Client::failover_time). When every
/// coordinator fails, the error is a 503 if one answered so
/// ([`ClientError::Unavailable`]), and [`ClientError::Unreachable`] only if
/// none answered at all, which is what the 3PC watchdog and 2PC recovery
/// rely on (they ask through [`DecisionSource`], so they fail over too).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// For the TCC Try calls to participants (and names left unresolved).
    http: reqwest::Client,
    /// The coordinators, their endpoints and health.
    directory: Arc<Directory>,
    timeout: Duration,
    signing_key: Option<SigningKey>,
    /// Verifies the answers to the termination query; `None`: taken as
    /// they come.
    coordinator_keys: Option<DecisionVerifier>,
    bearer_token: Option<BearerToken>,
}

impl Client {
    /// A client of the coordinator at `coordinator_url` (e.g.
    /// `http://127.0.0.1:7707`) with default settings.
    pub fn new(coordinator_url: &str) -> Result<Client, ClientError> {
        Client::builder(coordinator_url).build()
    }

    /// A builder for a client with other settings; add more coordinators
    /// with [`ClientBuilder::add_coordinator`].
    pub fn builder(coordinator_url: &str) -> ClientBuilder {
        ClientBuilder::new([coordinator_url])
    }

    /// A builder for a client of every coordinator in `urls` (at least one,
    /// checked by [`ClientBuilder::build`]).
    pub fn builder_for<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder::new(urls)
    }

    /// The longest a request waits on a coordinator that stopped answering
    /// (paused, partitioned) before it is sent to another one: the probe
    /// interval plus the probe timeout ([`DEFAULT_FAILOVER_TIME`], 1.5 s,
    /// by default). A coordinator that refuses connections or answers 503
    /// is left at once. Meaningful when the client knows more than one
    /// coordinator.
    pub fn failover_time(&self) -> Duration {
        let settings = self.inner.directory.settings;
        settings.probe_interval + settings.probe_timeout
    }

    /// The coordinator endpoints the client knows now and whether each is
    /// taking requests, e.g. for a health page. Host names appear as their
    /// addresses once resolved, at the first request.
    pub fn endpoints(&self) -> Vec<CoordinatorEndpoint> {
        self.inner.directory.report()
    }

    /// The transaction as it is now, with its history.
    pub async fn get(&self, gid: &str) -> Result<TransactionView, ClientError> {
        self.get_at(gid, None).await.map(|a| a.body)
    }

    /// [`get`](Self::get), asking `prefer` first while it is healthy.
    async fn get_at(
        &self,
        gid: &str,
        prefer: Option<&Arc<Endpoint>>,
    ) -> Result<Answered<TransactionView>, ClientError> {
        let path = format!("v1/transactions/{}", encode(gid));
        self.call(Method::GET, &path, None::<&()>, Duration::ZERO, prefer)
            .await
    }

    /// Waits until the transaction is final, at most `timeout`; fails with
    /// [`ClientError::TimedOut`] if it is not final by then.
    pub async fn wait(&self, gid: &str, timeout: Duration) -> Result<TransactionView, ClientError> {
        self.wait_at(gid, timeout, None).await
    }

    /// [`wait`](Self::wait), asking `prefer` first while it is healthy, and
    /// then the coordinator that answered last.
    async fn wait_at(
        &self,
        gid: &str,
        timeout: Duration,
        prefer: Option<&Arc<Endpoint>>,
    ) -> Result<TransactionView, ClientError> {
        let started = tokio::time::Instant::now();
        let path = format!("v1/transactions/{}", encode(gid));
        let mut prefer = prefer.cloned();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            let wait = left.min(MAX_WAIT_PER_REQUEST);
            let asked = tokio::time::Instant::now();
            let answered: Answered<TransactionView> = self
                .call(Method::GET, &path, None::<&()>, wait, prefer.as_ref())
                .await?;
            let tx = answered.body;
            if tx.is_final() {
                return Ok(tx);
            }
            prefer = Some(answered.endpoint);
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
    pub async fn abort(&self, gid: &str) -> Result<TransactionView, ClientError> {
        self.abort_at(gid, None, &AbortRequest::default()).await
    }

    /// [`abort`](Self::abort), asking `prefer` first while it is healthy.
    /// Aborts `gid`, asking `prefer` first, saying `why` (sent only when
    /// it says something, so an abort without a reason stays bodiless).
    async fn abort_at(
        &self,
        gid: &str,
        prefer: Option<&Arc<Endpoint>>,
        why: &AbortRequest,
    ) -> Result<TransactionView, ClientError> {
        let path = format!("v1/transactions/{}/abort", encode(gid));
        let body = (why != &AbortRequest::default()).then_some(why);
        self.call(Method::POST, &path, body, Duration::ZERO, prefer)
            .await
            .map(|a| a.body)
    }

    fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn signing_key(&self) -> Option<&SigningKey> {
        self.inner.signing_key.as_ref()
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
