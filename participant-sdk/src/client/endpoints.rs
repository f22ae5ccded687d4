//! The coordinators a client knows, as endpoints: one per configured URL,
//! or one per address when the URL names a host that resolves to several.
//! Each address gets a reqwest client pinned to it (`resolve(host, addr)`),
//! so the TLS name and the `Host` header stay the host name. This module
//! owns the resolution (lazy at first use, then every [`RESOLVE_EVERY`] or
//! sooner when every endpoint is down), each endpoint's [`Health`] and its
//! "marked down" signal, and the order a request tries them in
//! ([`Directory::plan`]).

use super::ClientError;
use super::health::{self, Backoff, Health};
use super::prober;
use futures_util::future::BoxFuture;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use url::Url;

/// How often a host name is resolved again, so that coordinators added to
/// or removed from its DNS records are noticed.
pub(super) const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// A name's addresses, from the system resolver or the caller's
/// ([`ClientBuilder::resolver`](super::ClientBuilder::resolver)).
pub(super) type ResolveFn =
    dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> + Send + Sync;

/// How a [`Directory`] turns a host name into endpoints. Absent when the
/// caller gave its own reqwest client, which cannot be copied with an
/// address pinned: then each URL is one endpoint and the client resolves
/// the name itself.
pub(super) struct Expansion {
    pub(super) resolve: Arc<ResolveFn>,
    pub(super) user_agent: &'static str,
}

/// The failover settings of a client.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) probe_interval: Duration,
    pub(super) probe_timeout: Duration,
    pub(super) backoff: Backoff,
}

/// One configured coordinator URL.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The URL, ending with `/`.
    pub(super) base: Url,
    /// The host name to resolve into addresses; `None` for an IP address,
    /// or when the name is left to the HTTP client (no [`Expansion`]).
    pub(super) name: Option<String>,
}

/// One coordinator address the client sends requests to.
pub(super) struct Endpoint {
    /// The coordinator's URL, with the host as configured.
    pub(super) base: Url,
    /// The address it is pinned to, if it is pinned.
    pub(super) addr: Option<IpAddr>,
    /// The client for it (pinned to `addr`, or the shared one).
    pub(super) http: reqwest::Client,
    health: Mutex<Health>,
    /// Bumped by every probe that gets no answer: a request in flight here
    /// is abandoned and sent to another coordinator (a paused coordinator accepts the
    /// connection and never answers, so only this ends such a request
    /// before its timeout).
    down: watch::Sender<u64>,
    /// Set while a probe is in flight, so that probes never pile up.
    pub(super) probing: AtomicBool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Endpoint {
    fn new(base: Url, addr: Option<IpAddr>, http: reqwest::Client) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            base,
            addr,
            http,
            health: Mutex::new(Health::Up),
            down: watch::channel(0).0,
            probing: AtomicBool::new(false),
        })
    }

    /// `URL` or `URL (address)`, for messages.
    pub(super) fn describe(&self) -> String {
        match self.addr {
            Some(addr) => format!("{} ({addr})", self.base),
            None => self.base.to_string(),
        }
    }

    /// `path` under the coordinator's URL.
    pub(super) fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path)
            .map_err(|e| ClientError::Config(format!("cannot build a URL for `{path}`: {e}")))
    }

    pub(super) fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(Health) -> Health) -> (Health, Health) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let before = *health;
        *health = change(before);
        (before, *health)
    }

    /// A request got no answer, or a 503.
    pub(super) fn request_failed(&self, backoff: Backoff) {
        let (before, _) = self.update(|h| h.request_failed(Instant::now(), backoff));
        if before.is_up() {
            tracing::warn!(coordinator = %self.describe(),
                "coordinator did not answer; other coordinators are asked until it is ready again");
        }
    }

    /// It answered (a request, or a probe that found it ready).
    pub(super) fn answered(&self) {
        let (before, _) = self.update(|_| Health::Up);
        if !before.is_up() {
            tracing::info!(coordinator = %self.describe(), "coordinator is ready again");
        }
    }

    /// A probe found it not ready: down; and when the probe got no answer
    /// at all (`silent`), the requests in flight to it are abandoned.
    pub(super) fn probe_failed(&self, backoff: Backoff, why: &str, silent: bool) {
        let (before, _) = self.update(|h| h.probe_failed(Instant::now(), backoff));
        if before.is_up() {
            tracing::warn!(coordinator = %self.describe(), why,
                "coordinator is not ready; other coordinators are asked until it is");
        }
        if silent {
            self.down.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Resolves when a probe gets no answer from this endpoint after this
    /// call.
    pub(super) fn marked_down(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut down = self.down.subscribe();
        async move {
            // The sender lives as long as the endpoint, which the caller
            // holds; if it were gone, no signal could ever come.
            if down.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One endpoint as [`Client::endpoints`](super::Client::endpoints) reports
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorEndpoint {
    /// The coordinator's URL, as configured.
    pub url: String,
    /// The address requests are pinned to, when its host name was resolved
    /// by the client; `None` for an IP address or a name left to the HTTP
    /// client.
    pub address: Option<IpAddr>,
    /// Whether requests go to it now (`false`: it failed and is skipped
    /// until a probe finds it ready).
    pub healthy: bool,
}

/// The endpoints of every configured coordinator, kept current.
pub(super) struct Directory {
    targets: Vec<Target>,
    /// The endpoints of each target, in the order of `targets`.
    groups: RwLock<Vec<Group>>,
    /// For IP addresses, and names not resolved by the client.
    shared_http: reqwest::Client,
    expansion: Option<Expansion>,
    pub(super) settings: Settings,
    /// The round-robin turn.
    cursor: AtomicUsize,
    first_resolution: OnceCell<()>,
    /// Set while the prober resolves names, so that lookups never pile up.
    pub(super) resolving: AtomicBool,
    prober: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Group {
    endpoints: Vec<Arc<Endpoint>>,
    resolved_at: Option<Instant>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field(
                "coordinators",
                &self
                    .targets
                    .iter()
                    .map(|t| t.base.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("endpoints", &self.endpoints())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Directory {
    pub(super) fn new(
        targets: Vec<Target>,
        shared_http: reqwest::Client,
        expansion: Option<Expansion>,
        settings: Settings,
    ) -> Directory {
        let groups = targets
            .iter()
            .map(|t| match &t.name {
                // Resolved at first use.
                Some(_) => Group::default(),
                None => Group {
                    endpoints: vec![Endpoint::new(t.base.clone(), None, shared_http.clone())],
                    resolved_at: None,
                },
            })
            .collect();
        Directory {
            targets,
            groups: RwLock::new(groups),
            shared_http,
            expansion,
            settings,
            cursor: AtomicUsize::new(0),
            first_resolution: OnceCell::new(),
            resolving: AtomicBool::new(false),
            prober: Mutex::new(None),
        }
    }

    /// Before a request: starts the prober if this client needs one and it
    /// is not running (it is spawned on the caller's runtime), and resolves
    /// the host names the first time.
    pub(super) async fn ready(self: &Arc<Self>) {
        self.ensure_prober();
        if self.has_names() {
            self.first_resolution
                .get_or_init(|| self.resolve(|_| true))
                .await;
        }
    }

    fn has_names(&self) -> bool {
        self.targets.iter().any(|t| t.name.is_some())
    }

    /// A prober is needed when there may be more than one endpoint to
    /// choose from, or names to resolve again.
    fn needs_prober(&self) -> bool {
        self.targets.len() > 1 || self.has_names()
    }

    fn ensure_prober(self: &Arc<Self>) {
        if !self.needs_prober() {
            return;
        }
        let mut prober = self.prober.lock().unwrap_or_else(|e| e.into_inner());
        // A prober whose runtime shut down (a client used from several
        // runtimes, one after the other) is started again on this one.
        if prober.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *prober = Some(runtime.spawn(prober::run(Arc::downgrade(self))));
        }
    }

    /// Every endpoint, in configuration order.
    pub(super) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        groups
            .iter()
            .flat_map(|g| g.endpoints.iter().cloned())
            .collect()
    }

    /// The endpoints one request tries, in order (see [`health::plan`]).
    pub(super) fn plan(&self, prefer: Option<&Arc<Endpoint>>) -> Vec<Arc<Endpoint>> {
        let endpoints = self.endpoints();
        let health: Vec<Health> = endpoints.iter().map(|e| e.health()).collect();
        let prefer = prefer.and_then(|p| endpoints.iter().position(|e| Arc::ptr_eq(e, p)));
        // Only a request that takes its turn moves the turn on: were the
        // follow-ups that go to their transaction's coordinator to move it
        // too, a registration followed by one read would always start from
        // the same coordinator.
        let cursor = if prefer.is_some_and(|p| health[p].is_up()) {
            self.cursor.load(Ordering::Relaxed)
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        };
        health::plan(&health, cursor, prefer)
            .into_iter()
            .map(|i| endpoints[i].clone())
            .collect()
    }

    /// The endpoints as reported to the caller.
    pub(super) fn report(&self) -> Vec<CoordinatorEndpoint> {
        self.endpoints()
            .iter()
            .map(|e| CoordinatorEndpoint {
                url: e.base.to_string(),
                address: e.addr,
                healthy: e.health().is_up(),
            })
            .collect()
    }

    /// Whether some name is due to be resolved again at `now`: every
    /// [`RESOLVE_EVERY`], or after the backoff's first pause when every
    /// endpoint is down (the coordinators may have moved).
    pub(super) fn resolution_due(&self, now: Instant) -> bool {
        let all_down = self.endpoints().iter().all(|e| !e.health().is_up());
        let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
        self.targets
            .iter()
            .zip(groups.iter())
            .any(|(t, g)| t.name.is_some() && self.stale(g, now, all_down))
    }

    fn stale(&self, group: &Group, now: Instant, all_down: bool) -> bool {
        match group.resolved_at {
            // The first resolution is the first request's.
            None => false,
            Some(at) => {
                let age = now.saturating_duration_since(at);
                age >= RESOLVE_EVERY || (all_down && age >= self.settings.backoff.initial)
            }
        }
    }

    /// Resolves again the names that are due (see
    /// [`resolution_due`](Self::resolution_due)).
    pub(super) async fn resolve_due(&self) {
        let now = Instant::now();
        let all_down = self.endpoints().iter().all(|e| !e.health().is_up());
        let due: Vec<bool> = {
            let groups = self.groups.read().unwrap_or_else(|e| e.into_inner());
            groups
                .iter()
                .map(|g| self.stale(g, now, all_down))
                .collect()
        };
        self.resolve(|i| due[i]).await;
    }

    /// Resolves the names of the targets `which` picks, all at once, and
    /// puts their endpoints in place: an address still there keeps its
    /// endpoint (and its health and connections), a new one gets a fresh
    /// endpoint, a vanished one is dropped (requests in flight to it end
    /// normally). A name that does not resolve keeps its endpoints; one
    /// that never resolved is left to the HTTP client, whose own error then
    /// says why.
    async fn resolve(&self, which: impl Fn(usize) -> bool) {
        let Some(expansion) = &self.expansion else {
            return;
        };
        let lookups = self.targets.iter().enumerate().filter_map(|(i, t)| {
            let name = t.name.clone().filter(|_| which(i))?;
            let resolve = expansion.resolve.clone();
            Some(async move { (i, resolve(name).await) })
        });
        let answers = futures_util::future::join_all(lookups).await;
        let now = Instant::now();
        let mut groups = self.groups.write().unwrap_or_else(|e| e.into_inner());
        for (i, answer) in answers {
            let target = &self.targets[i];
            let group = &mut groups[i];
            group.resolved_at = Some(now);
            let mut addrs = match answer {
                Ok(addrs) if !addrs.is_empty() => addrs,
                other => {
                    let why = match other {
                        Ok(_) => "it has no addresses".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    if group.endpoints.is_empty() {
                        tracing::warn!(coordinator = %target.base, why,
                            "cannot resolve the coordinator's name; the HTTP client will try itself");
                        group.endpoints = vec![self.unpinned(target)];
                    } else {
                        tracing::warn!(coordinator = %target.base, why,
                            "cannot resolve the coordinator's name again; keeping its known addresses");
                    }
                    continue;
                }
            };
            let mut seen = std::collections::HashSet::new();
            addrs.retain(|a| seen.insert(*a));
            group.endpoints = addrs
                .into_iter()
                .map(|addr| {
                    group
                        .endpoints
                        .iter()
                        .find(|e| e.addr == Some(addr))
                        .cloned()
                        .unwrap_or_else(|| self.pinned(target, addr, expansion.user_agent))
                })
                .collect();
        }
    }

    fn unpinned(&self, target: &Target) -> Arc<Endpoint> {
        Endpoint::new(target.base.clone(), None, self.shared_http.clone())
    }

    /// An endpoint for `addr` whose client sends to `addr` whatever the
    /// name resolves to, keeping the name for TLS and `Host`.
    fn pinned(&self, target: &Target, addr: IpAddr, user_agent: &str) -> Arc<Endpoint> {
        let name = target.name.as_deref().unwrap_or_default();
        // Port 0: the URL's port (or the scheme's) is used.
        let built = reqwest::Client::builder()
            .user_agent(user_agent)
            .resolve(name, SocketAddr::new(addr, 0))
            .build();
        match built {
            Ok(http) => Endpoint::new(target.base.clone(), Some(addr), http),
            Err(error) => {
                tracing::warn!(coordinator = %target.base, %addr, %error,
                    "cannot build an HTTP client pinned to the address; using the name as given");
                self.unpinned(target)
            }
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        // The prober holds only a weak reference and would stop at its next
        // tick; stop it now.
        if let Some(task) = self
            .prober
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// The system resolver, through tokio (`getaddrinfo` on a blocking
/// thread).
pub(super) fn system_resolver() -> Arc<ResolveFn> {
    Arc::new(|name: String| {
        Box::pin(async move {
            // The port is only there because `lookup_host` wants one.
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
