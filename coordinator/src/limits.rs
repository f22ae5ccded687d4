//! Every bound on what a caller can make dtx hold or do, in one place: the
//! settings (`dtx serve` flags, each with a default) and the checks that
//! enforce the bounds on registrations. Each refusal says which flag
//! raises the bound. The bounds enforced elsewhere are named here and
//! enforced by: [`CallLimit`] (concurrent participant calls),
//! `api::waiting` (concurrent `wait_ms` waiters) and `http_server`
//! (connections, header and body read timeouts).

use crate::api::problem::ApiError;
use crate::transport::{CallOutcome, CallRequest, Transport};
use async_trait::async_trait;
use clap::Args;
use dtx_protocol::spec::BRANCH_HEADERS_MAX;
use dtx_protocol::{BranchSpec, TxOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The bounds, as `dtx serve` flags.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Most branches one transaction may have (registered at once, or one by
    /// one for TCC).
    #[arg(long, env = "DTX_MAX_BRANCHES", default_value_t = 100)]
    pub max_branches: usize,

    /// Longest participant URL, in bytes.
    #[arg(long, env = "DTX_MAX_URL_BYTES", default_value_t = 2048)]
    pub max_url_bytes: usize,

    /// Largest branch payload, in bytes of JSON: it is sent with every call
    /// of the branch and kept in the log.
    #[arg(long, env = "DTX_MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,

    /// Most `depends_on` edges in one saga, all branches together.
    #[arg(long, env = "DTX_MAX_DEPENDENCIES", default_value_t = 1000)]
    pub max_dependencies: usize,

    /// Shortest retry delay and poll interval a transaction may ask for, in
    /// milliseconds: a floor on how hard dtx can be made to call a
    /// participant.
    #[arg(long, env = "DTX_MIN_RETRY_MS", default_value_t = 10)]
    pub min_retry_ms: u64,

    /// Most participant calls in flight at once; more wait for a slot.
    #[arg(long, env = "DTX_MAX_OUTBOUND_CALLS", default_value_t = 512)]
    pub max_outbound_calls: usize,

    /// Most requests waiting for an outcome (`wait_ms`) at once; more are
    /// answered 503 with `Retry-After`.
    #[arg(long, env = "DTX_MAX_WAITERS", default_value_t = 1024)]
    pub max_waiters: usize,

    /// Most events in one transaction's history, status changes aside: past
    /// it, one event says later ones are left out. Failures of one call in a
    /// row are logged at attempts 1, 2, 4, 8, ... already; this bounds
    /// what a participant that keeps changing its answer could add.
    #[arg(long, env = "DTX_MAX_HISTORY_EVENTS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(4..))]
    pub max_history_events: u64,

    /// Most headers one branch may carry (at most the protocol's 32).
    #[arg(long, env = "DTX_MAX_BRANCH_HEADERS", default_value_t = BRANCH_HEADERS_MAX as u64, value_parser = clap::value_parser!(u64).range(0..=BRANCH_HEADERS_MAX as u64))]
    pub max_branch_headers: u64,

    /// Most open client connections; more wait in the listen backlog.
    #[arg(long, env = "DTX_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// How long a client may take to send a request's headers, in
    /// milliseconds (a slow client cannot hold a connection for ever).
    #[arg(long, env = "DTX_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// How long a client may take to send a request's body, in milliseconds.
    #[arg(long, env = "DTX_BODY_READ_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_branches: 100,
            max_url_bytes: 2048,
            max_payload_bytes: 64 * 1024,
            max_dependencies: 1000,
            min_retry_ms: 10,
            max_outbound_calls: 512,
            max_waiters: 1024,
            max_history_events: 1000,
            max_branch_headers: BRANCH_HEADERS_MAX as u64,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
        }
    }
}

impl Limits {
    /// Checks the bounds of a registration: its branch count, its options,
    /// and each branch (see [`Limits::check_branch`]).
    pub fn check_registration(
        &self,
        branches: &[BranchSpec],
        options: &TxOptions,
    ) -> Result<(), ApiError> {
        self.check_branch_count(branches.len())?;
        self.check_options(options)?;
        let edges: usize = branches
            .iter()
            .map(|b| b.depends_on.as_ref().map_or(0, Vec::len))
            .sum();
        if edges > self.max_dependencies {
            return Err(ApiError::BadRequest(format!(
                "the saga has {edges} `depends_on` edges; at most {} are accepted \
                 (`--max-dependencies`)",
                self.max_dependencies
            )));
        }
        branches.iter().try_for_each(|b| self.check_branch(b))
    }

    /// Checks that a transaction may have `count` branches.
    pub fn check_branch_count(&self, count: usize) -> Result<(), ApiError> {
        if count > self.max_branches {
            return Err(ApiError::BadRequest(format!(
                "a transaction may have at most {} branches (`--max-branches`); this one would have {count}",
                self.max_branches
            )));
        }
        Ok(())
    }

    /// Checks one branch's header count, URLs and payload.
    pub fn check_branch(&self, branch: &BranchSpec) -> Result<(), ApiError> {
        let headers = branch.headers.len();
        if headers as u64 > self.max_branch_headers {
            return Err(ApiError::BadRequest(format!(
                "branch `{}` has {headers} headers; at most {} are accepted \
                 (`--max-branch-headers`)",
                branch.id, self.max_branch_headers
            )));
        }
        for (op, url) in &branch.urls {
            if url.len() > self.max_url_bytes {
                return Err(ApiError::BadRequest(format!(
                    "branch `{}`: the `{op}` URL has {} bytes; at most {} are accepted \
                     (`--max-url-bytes`)",
                    branch.id,
                    url.len(),
                    self.max_url_bytes
                )));
            }
        }
        // The payload's JSON is written again to measure it: a registration
        // body has already been read whole, so this costs no more memory.
        let payload = serde_json::to_vec(&branch.payload).map_err(|_| ApiError::Internal)?;
        if payload.len() > self.max_payload_bytes {
            return Err(ApiError::TooLarge(format!(
                "branch `{}`: the payload has {} bytes of JSON; at most {} are accepted \
                 (`--max-payload-bytes`)",
                branch.id,
                payload.len(),
                self.max_payload_bytes
            )));
        }
        Ok(())
    }

    fn check_options(&self, options: &TxOptions) -> Result<(), ApiError> {
        let floor = self.min_retry_ms;
        for (name, value) in [
            ("options.retry.initial_ms", options.retry.initial_ms),
            ("options.poll_interval_ms", options.poll_interval_ms),
        ] {
            if value < floor {
                return Err(ApiError::BadRequest(format!(
                    "{name} is {value}; it must be at least {floor} (`--min-retry-ms`)"
                )));
            }
        }
        Ok(())
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The body read timeout.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// A transport that lets at most a fixed number of calls be in flight:
/// a call beyond it waits for a slot before it is sent (its request timeout
/// starts when it is sent). Without it, a burst of registrations would open
/// as many connections to participants as it has branches.
pub struct CallLimit {
    inner: Arc<dyn Transport>,
    slots: Semaphore,
}

impl CallLimit {
    /// `inner`, with at most `max` calls at once (at least one).
    pub fn new(inner: Arc<dyn Transport>, max: usize) -> CallLimit {
        CallLimit {
            inner,
            slots: Semaphore::new(max.max(1)),
        }
    }
}

#[async_trait]
impl Transport for CallLimit {
    async fn call(&self, request: CallRequest<'_>) -> CallOutcome {
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await;
        self.inner.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtx_protocol::Op;
    use std::collections::BTreeMap;

    fn branch(url: &str, payload: serde_json::Value, deps: usize) -> BranchSpec {
        BranchSpec {
            id: "b".into(),
            urls: BTreeMap::from([
                (Op::Action, url.to_owned()),
                (Op::Compensate, url.to_owned()),
            ]),
            payload,
            headers: BTreeMap::new(),
            depends_on: (deps > 0).then(|| vec!["a".to_owned(); deps]),
        }
    }

    fn detail(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(d)) => format!("400 {d}"),
            Err(ApiError::TooLarge(d)) => format!("413 {d}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn each_bound_holds_at_its_limit_and_refuses_one_more() {
        let limits = Limits {
            max_branches: 3,
            max_url_bytes: 30,
            max_payload_bytes: 20,
            max_dependencies: 4,
            min_retry_ms: 50,
            ..Limits::default()
        };
        let ok = branch("http://h/a", serde_json::json!("x"), 0);
        let options = TxOptions::default();
        let url_at = format!("http://h/{}", "a".repeat(21));
        assert_eq!(url_at.len(), 30);
        let payload_at = serde_json::json!("x".repeat(18)); // 20 bytes with quotes
        let cases: Vec<(Vec<BranchSpec>, TxOptions, Option<&str>)> = vec![
            (vec![ok.clone(); 3], options.clone(), None),
            (
                vec![ok.clone(); 4],
                options.clone(),
                Some("400 a transaction may have at most 3 branches"),
            ),
            (
                vec![branch(&url_at, serde_json::json!(1), 0)],
                options.clone(),
                None,
            ),
            (
                vec![branch(&format!("{url_at}b"), serde_json::json!(1), 0)],
                options.clone(),
                Some("(`--max-url-bytes`)"),
            ),
            (
                vec![branch("http://h/a", payload_at.clone(), 0)],
                options.clone(),
                None,
            ),
            (
                vec![branch("http://h/a", serde_json::json!("x".repeat(19)), 0)],
                options.clone(),
                Some("413 branch `b`: the payload has 21 bytes"),
            ),
            (
                vec![branch("http://h/a", serde_json::json!(1), 2); 2],
                options.clone(),
                None,
            ),
            (
                vec![
                    branch("http://h/a", serde_json::json!(1), 2),
                    branch("http://h/a", serde_json::json!(1), 3),
                ],
                options.clone(),
                Some("5 `depends_on` edges"),
            ),
            (
                vec![ok.clone()],
                TxOptions {
                    poll_interval_ms: 49,
                    ..options.clone()
                },
                Some("options.poll_interval_ms is 49"),
            ),
            (
                vec![ok.clone()],
                TxOptions {
                    poll_interval_ms: 50,
                    ..options.clone()
                },
                None,
            ),
        ];
        for (branches, options, expected) in cases {
            let result = detail(limits.check_registration(&branches, &options));
            match expected {
                None => assert_eq!(result, "Ok(())"),
                Some(expected) => assert!(result.contains(expected), "{result} lacks {expected}"),
            }
        }
        let mut retry = TxOptions::default();
        retry.retry.initial_ms = 49;
        assert!(
            detail(limits.check_registration(&[ok], &retry))
                .contains("options.retry.initial_ms is 49")
        );
    }
}
