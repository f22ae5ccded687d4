//! One request to "the coordinator", carried to one of several: the
//! endpoints are tried one after the other in the order
//! [`Directory::plan`](super::endpoints::Directory::plan) gives, and the
//! request moves on to the next only when the one asked gave no answer
//! (connection error, timeout, an answer that broke off) or answered 503.
//! Any other answer, success or error, is the answer: it is never sent
//! elsewhere.
//!
//! Moving on is safe because every request of the client is idempotent by
//! gid: a registration sent again under the same gid with the same body is
//! the same transaction to every coordinator sharing the store (the second
//! one answers 200 with it), and a commit, an abort, a read, a wait or a
//! termination query may go to any of them.
//!
//! Requests are never sent to two coordinators at once, with one exception
//! that is not really one: when the prober gets no answer from the
//! coordinator a request is waiting on (paused, partitioned), the request
//! is sent to the next one without waiting for its timeout. What was sent
//! to the silent one cannot be taken back anyway (it may still be carried
//! out when that coordinator wakes up; idempotency makes that harmless),
//! so its answer is still listened for: the first definitive answer from
//! either is the answer. And if every other coordinator then fails without
//! answering, the request waits for the silent one until its own timeout
//! before it reports [`ClientError::Unreachable`]: a coordinator that is
//! slow (its store is down and it answers 503 only after its connection
//! timeout) must not be reported as one that gave no answer, which the
//! 3PC timeout rule would act on. The last endpoint of the plan is never
//! left, so a request with nowhere else to go waits for its own answer or
//! timeout, as with a single coordinator.

use super::endpoints::Endpoint;
use super::{BearerToken, Client, ClientError};
use dtx_protocol::wire::HEADER_SIGNATURE;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A coordinator's answer, and which endpoint gave it (requests about the
/// same transaction prefer it afterwards).
pub(super) struct Answered<R> {
    pub(super) status: StatusCode,
    pub(super) body: R,
    /// The answer's `dtx-signature` header: the termination query's answer
    /// is verified with it (`decision`).
    pub(super) signature: Option<String>,
    pub(super) endpoint: Arc<Endpoint>,
}

/// How one attempt at one endpoint ended.
struct Exchange {
    endpoint: Arc<Endpoint>,
    url: url::Url,
    /// The answer, read to the end, or the transport error.
    outcome: Result<Reply, reqwest::Error>,
}

/// An answer read to the end.
struct Reply {
    status: StatusCode,
    /// Its `dtx-signature` header, if any (the one header kept).
    signature: Option<String>,
    bytes: Vec<u8>,
}

/// What the attempts that were not the answer left behind.
struct Tally {
    /// The last 503.
    unavailable: Option<ClientError>,
    /// The last transport error.
    unreachable: Option<ClientError>,
}

impl Tally {
    /// Records `done`; returns the call's result if it is final: an answer
    /// other than 503, or a request the configuration could not build.
    fn settle<R: DeserializeOwned>(
        &mut self,
        done: Exchange,
        backoff: super::health::Backoff,
    ) -> Option<Result<Answered<R>, ClientError>> {
        let Exchange {
            endpoint,
            url,
            outcome,
        } = done;
        match outcome {
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                endpoint.request_failed(backoff);
                self.unavailable = Some(ClientError::from_answer(
                    reply.status.as_u16(),
                    &reply.bytes,
                ));
                None
            }
            Ok(Reply {
                status,
                signature,
                bytes,
            }) => {
                endpoint.answered();
                Some(read(status, &bytes).map(|body| Answered {
                    status,
                    body,
                    signature,
                    endpoint,
                }))
            }
            // Made from the configuration: no coordinator would take it.
            Err(source) if source.is_builder() => Some(Err(ClientError::Unreachable {
                url: url.to_string(),
                source,
            })),
            Err(source) => {
                endpoint.request_failed(backoff);
                tracing::debug!(coordinator = %endpoint.describe(), error = %source,
                    "no answer from the coordinator");
                self.unreachable = Some(ClientError::Unreachable {
                    url: url.to_string(),
                    source,
                });
                None
            }
        }
    }

    /// The error when no attempt was final: a 503 if any coordinator
    /// answered so, the last transport error only if none answered.
    fn into_error(self) -> ClientError {
        self.unavailable
            .or(self.unreachable)
            .unwrap_or_else(|| ClientError::Config("the client knows no coordinator".to_owned()))
    }
}

impl Client {
    /// Sends one request and reads a JSON answer back, failing over between
    /// coordinators as the module documentation says. `wait` becomes
    /// `?wait_ms=` (less what earlier attempts used) and lengthens the
    /// request timeout; `prefer` is tried first while it is healthy.
    ///
    /// Errors: the first answer that is not a success and not a 503; else,
    /// when every coordinator failed, the last 503 if one answered so, and
    /// the last transport error ([`ClientError::Unreachable`]) only if none
    /// answered at all.
    pub(super) async fn call<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        wait: Duration,
        prefer: Option<&Arc<Endpoint>>,
    ) -> Result<Answered<R>, ClientError> {
        let directory = &self.inner.directory;
        directory.ready().await;
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Config(format!("cannot encode the request: {e}")))?;
        let plan = directory.plan(prefer);
        let backoff = directory.settings.backoff;
        let started = Instant::now();
        let mut tally = Tally {
            unavailable: None,
            unreachable: None,
        };
        // Attempts left behind when the prober found their coordinator
        // silent; still listened to.
        let mut left: FuturesUnordered<BoxFuture<'static, Exchange>> = FuturesUnordered::new();
        for (n, endpoint) in plan.iter().enumerate() {
            let more = n + 1 < plan.len();
            let wait = wait.saturating_sub(started.elapsed());
            let url = with_wait(endpoint.url(path)?, wait);
            let mut marked_down = pin!(endpoint.marked_down());
            let mut current = self.exchange(endpoint, method.clone(), url, body.clone(), wait);
            loop {
                tokio::select! {
                    biased;
                    done = &mut current => {
                        match tally.settle(done, backoff) {
                            Some(result) => return result,
                            None => break,
                        }
                    }
                    Some(done) = left.next(), if !left.is_empty() => {
                        if let Some(result) = tally.settle(done, backoff) {
                            return result;
                        }
                    }
                    () = &mut marked_down, if more => {
                        tracing::info!(coordinator = %endpoint.describe(), path,
                            "the coordinator stopped answering probes; asking another one");
                        left.push(current);
                        break;
                    }
                }
            }
        }
        if tally.unavailable.is_none() {
            // Every other coordinator failed without answering: one that was
            // left while silent may still answer before its own timeout.
            while let Some(done) = left.next().await {
                if let Some(result) = tally.settle(done, backoff) {
                    return result;
                }
            }
        }
        Err(tally.into_error())
    }

    /// One attempt at `endpoint`, as a future of its own (it may outlive
    /// the turn of its endpoint in [`call`](Self::call)).
    fn exchange(
        &self,
        endpoint: &Arc<Endpoint>,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> BoxFuture<'static, Exchange> {
        let mut request = endpoint
            .http
            .request(method, url.clone())
            .timeout(self.inner.timeout + wait);
        if let Some(BearerToken(token)) = &self.inner.bearer_token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let endpoint = endpoint.clone();
        Box::pin(async move {
            let outcome = async {
                let response = request.send().await?;
                let status = response.status();
                let signature = response
                    .headers()
                    .get(HEADER_SIGNATURE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = response.bytes().await?.to_vec();
                Ok(Reply {
                    status,
                    signature,
                    bytes,
                })
            }
            .await;
            Exchange {
                endpoint,
                url,
                outcome,
            }
        })
    }
}

/// `url` with `?wait_ms=` when there is a wait.
fn with_wait(mut url: url::Url, wait: Duration) -> url::Url {
    if !wait.is_zero() {
        url.query_pairs_mut()
            .append_pair("wait_ms", &wait.as_millis().to_string());
    }
    url
}

/// A final answer: the body of a success, or the error it maps to.
fn read<R: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<R, ClientError> {
    if !status.is_success() {
        return Err(ClientError::from_answer(status.as_u16(), bytes));
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Unexpected {
        status: status.as_u16(),
        detail: format!("the answer is not what the API documents: {e}"),
    })
}
