//! [`ClientBuilder`]: the coordinators a [`Client`] knows and its settings:
//! the request timeout, the initiator's signing key, the coordinator's keys
//! (which answers to the termination query are verified with), the API
//! token, the HTTP client, and how it notices a coordinator that stopped answering
//! (probe interval and timeout, how long a failed one is skipped, how host
//! names are resolved).

use super::endpoints::{Directory, Expansion, ResolveFn, Settings, Target, system_resolver};
use super::health::Backoff;
use super::{Client, ClientError, Inner};
use crate::signature::{DecisionVerifier, Keyring, SigningKey};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// How long one request may take by default, on top of any wait for an
/// outcome.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each coordinator's `/readyz` is probed by default, when the
/// client knows more than one.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a probe waits for `/readyz` by default before the coordinator
/// counts as not ready.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// [`Client::failover_time`] with the default probe settings:
/// [`DEFAULT_PROBE_INTERVAL`] + [`DEFAULT_PROBE_TIMEOUT`].
pub const DEFAULT_FAILOVER_TIME: Duration = Duration::from_millis(1500);

/// How long a failed coordinator is skipped by default before it is probed
/// again, doubling with every failed probe up to [`DEFAULT_DOWN_MAX`].
const DEFAULT_DOWN_INITIAL: Duration = Duration::from_secs(2);
const DEFAULT_DOWN_MAX: Duration = Duration::from_secs(10);

const USER_AGENT: &str = concat!("dtx-sdk/", env!("CARGO_PKG_VERSION"));

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    urls: Vec<String>,
    timeout: Duration,
    signing_key: Option<SigningKey>,
    coordinator_keys: Option<DecisionVerifier>,
    bearer_token: Option<BearerToken>,
    http: Option<reqwest::Client>,
    probe_interval: Duration,
    probe_timeout: Duration,
    backoff: Backoff,
    resolver: Option<Resolver>,
}

/// An API token, sent as `Authorization: Bearer`; `Debug` never shows it.
#[derive(Clone)]
pub(super) struct BearerToken(pub(super) String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A caller's resolver of host names.
#[derive(Clone)]
struct Resolver(Arc<ResolveFn>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<resolver>")
    }
}

impl ClientBuilder {
    pub(super) fn new<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder {
            urls: urls.into_iter().map(|u| u.as_ref().to_owned()).collect(),
            timeout: DEFAULT_TIMEOUT,
            signing_key: None,
            coordinator_keys: None,
            bearer_token: None,
            http: None,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            backoff: Backoff {
                initial: DEFAULT_DOWN_INITIAL,
                max: DEFAULT_DOWN_MAX,
            },
            resolver: None,
        }
    }

    /// Another coordinator the client may send requests to. Every
    /// coordinator of one client must share one store (PostgreSQL): a
    /// request may go to any of them, and a transaction registered through
    /// one is read, waited for, committed or aborted through another.
    /// A URL given twice counts once.
    pub fn add_coordinator(mut self, url: impl AsRef<str>) -> Self {
        self.urls.push(url.as_ref().to_owned());
        self
    }

    /// How long one request may take, on top of any wait for an outcome
    /// (default 10 s). Past it the request goes to the next coordinator, or
    /// fails with [`ClientError::Unreachable`] if there is none left.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The initiator's own key, which signs the TCC Try calls the client
    /// makes (`dtx-signature`, version 2). Give it an id and a secret of its
    /// own, not the coordinator's: participants list both keys in their
    /// [`SignatureKeys`](crate::SignatureKeys). Unset, Try calls go
    /// unsigned, and a participant that checks signatures refuses them.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// The coordinator's keys (those of `dtx serve --signing-key`; during
    /// a rotation, the old and the new one): the answers to the termination
    /// query ([`Client::decision`]), which 2PC recovery and the 3PC watchdog
    /// commit or roll back on, must then be signed with one of them, within
    /// the default window ([`DEFAULT_WINDOW`](crate::signature::DEFAULT_WINDOW)),
    /// for the question asked. An answer that is unsigned, signed with
    /// another key, altered, stale or made for another question fails with
    /// [`ClientError::UnverifiedDecision`], and nothing acts on it.
    ///
    /// Give the coordinator's keys only, not the initiator's: whoever holds
    /// a key in this ring can tell the participant to commit or roll back.
    /// Unset, answers are taken as they come, and the first one logs a
    /// warning that says so.
    pub fn coordinator_keys(mut self, keys: Keyring) -> Self {
        self.coordinator_keys = Some(DecisionVerifier::new(keys));
        self
    }

    /// An API token of the coordinator (`dtx serve --tokens`), sent as
    /// `Authorization: Bearer <token>` with every request to the
    /// coordinator: registration, reads, waits and the termination query
    /// ([`Client::decision`]) that 2PC recovery and the 3PC watchdog trust.
    /// A participant that only asks for decisions needs a `reader` token.
    /// (The readiness probes go without it: `/readyz` is open.)
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(BearerToken(token.into()));
        self
    }

    /// Uses this reqwest client (e.g. with custom TLS roots) instead of a
    /// new one, for the coordinators and for the TCC Try calls. Its own
    /// timeout, if any, still applies.
    ///
    /// A reqwest client cannot be copied with an address pinned, so with
    /// this one the client does not expand a host name into one endpoint
    /// per address: each URL is one coordinator, its name is resolved by
    /// this client at each new connection, and [`resolver`](Self::resolver)
    /// is not used. Give the coordinators' addresses (or one name per
    /// coordinator) to fail over between them.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// How often the client asks each coordinator whether it is ready
    /// (`GET /readyz`) when it knows more than one (default 500 ms). With
    /// [`probe_timeout`](Self::probe_timeout), it bounds how long a request
    /// waits on a coordinator that stopped answering before it goes to
    /// another ([`Client::failover_time`]).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// How long a readiness probe waits for its answer (default 1 s); a
    /// coordinator that does not answer within it is skipped, and requests
    /// in flight to it go to another coordinator. Keep it well above the
    /// time `/readyz` takes under load: a coordinator that is slow to
    /// answer it is treated as one that stopped.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// How long a coordinator that failed is skipped before it is probed
    /// again: `initial` (default 2 s) after the first failure, doubling with
    /// each failed probe up to `max` (default 10 s). A coordinator back
    /// from a failure takes requests again at most `max` plus a probe
    /// later.
    pub fn down_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff { initial, max };
        self
    }

    /// Resolves the coordinators' host names with `resolve` instead of the
    /// system resolver (`getaddrinfo`, through tokio): e.g. a service
    /// registry, or a test's fixed answers. It gets the host name and
    /// returns its addresses; the port is the URL's. Not used with
    /// [`http_client`](Self::http_client).
    pub fn resolver<F, Fut>(mut self, resolve: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<Vec<IpAddr>>> + Send + 'static,
    {
        self.resolver = Some(Resolver(Arc::new(move |name| Box::pin(resolve(name)))));
        self
    }

    /// The client. Fails with [`ClientError::Config`] when no URL was given,
    /// a URL is not an `http` or `https` URL, or a duration is zero.
    pub fn build(self) -> Result<Client, ClientError> {
        if self.urls.is_empty() {
            return Err(ClientError::Config(
                "no coordinator URL was given".to_owned(),
            ));
        }
        for (name, value) in [
            ("probe interval", self.probe_interval),
            ("probe timeout", self.probe_timeout),
            ("down backoff", self.backoff.initial),
        ] {
            if value.is_zero() {
                return Err(ClientError::Config(format!("the {name} must not be zero")));
            }
        }
        // Names are expanded into addresses only with a client of our own.
        let expansion = self.http.is_none().then(|| Expansion {
            resolve: self
                .resolver
                .map_or_else(system_resolver, |Resolver(resolve)| resolve),
            user_agent: USER_AGENT,
        });
        let mut targets: Vec<Target> = Vec::new();
        for raw in &self.urls {
            let base = base_url(raw)?;
            if targets.iter().any(|t| t.base == base) {
                continue;
            }
            let name = match base.host() {
                Some(Host::Domain(name)) if expansion.is_some() => Some(name.to_owned()),
                _ => None,
            };
            targets.push(Target { base, name });
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .build()
                .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?,
        };
        let settings = Settings {
            probe_interval: self.probe_interval,
            probe_timeout: self.probe_timeout,
            backoff: Backoff {
                initial: self.backoff.initial,
                max: self.backoff.max.max(self.backoff.initial),
            },
        };
        Ok(Client {
            inner: Arc::new(Inner {
                directory: Arc::new(Directory::new(targets, http.clone(), expansion, settings)),
                http,
                timeout: self.timeout,
                signing_key: self.signing_key,
                coordinator_keys: self.coordinator_keys,
                bearer_token: self.bearer_token,
            }),
        })
    }
}

/// A coordinator URL, checked, ending with `/`.
fn base_url(raw: &str) -> Result<Url, ClientError> {
    let mut base = Url::parse(raw)
        .map_err(|e| ClientError::Config(format!("coordinator URL `{raw}`: {e}")))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ClientError::Config(format!(
            "coordinator URL `{raw}` must use http or https"
        )));
    }
    // `Url::join` replaces the last path segment unless the base ends with a
    // slash: keep a coordinator mounted under a path reachable.
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_failover_time_is_a_probe_interval_and_a_probe_timeout() {
        assert_eq!(
            DEFAULT_FAILOVER_TIME,
            DEFAULT_PROBE_INTERVAL + DEFAULT_PROBE_TIMEOUT
        );
        let client = Client::new("http://127.0.0.1:7707").unwrap();
        assert_eq!(client.failover_time(), DEFAULT_FAILOVER_TIME);
        let tuned = Client::builder("http://127.0.0.1:7707")
            .probe_interval(Duration::from_millis(200))
            .probe_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        assert_eq!(tuned.failover_time(), Duration::from_millis(500));
    }

    #[test]
    fn every_url_is_checked_and_a_repeated_one_counts_once() {
        let client = Client::builder_for(["http://127.0.0.1:1", "http://127.0.0.1:2/dtx"])
            .add_coordinator("http://127.0.0.1:1/")
            .build()
            .unwrap();
        let urls: Vec<String> = client.endpoints().into_iter().map(|e| e.url).collect();
        assert_eq!(urls, ["http://127.0.0.1:1/", "http://127.0.0.1:2/dtx/"]);
        let bad = Client::builder("http://127.0.0.1:1")
            .add_coordinator("ftp://127.0.0.1:2")
            .build();
        assert!(matches!(bad, Err(ClientError::Config(m)) if m.contains("ftp://")));
        let none = Client::builder_for(Vec::<String>::new()).build();
        assert!(matches!(none, Err(ClientError::Config(_))));
        let zero = Client::builder("http://127.0.0.1:1")
            .probe_timeout(Duration::ZERO)
            .build();
        assert!(matches!(zero, Err(ClientError::Config(_))));
    }

    #[test]
    fn host_names_wait_for_their_first_use_unless_the_caller_gave_the_client() {
        let named = Client::builder("http://coordinators.invalid:7707")
            .add_coordinator("http://127.0.0.1:7707")
            .build()
            .unwrap();
        let urls: Vec<String> = named.endpoints().into_iter().map(|e| e.url).collect();
        assert_eq!(
            urls,
            ["http://127.0.0.1:7707/"],
            "the name is not resolved yet"
        );
        let given = Client::builder("http://coordinators.invalid:7707")
            .http_client(reqwest::Client::new())
            .build()
            .unwrap();
        let endpoints = given.endpoints();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints[0].address, None,
            "the given client resolves the name"
        );
    }
}
