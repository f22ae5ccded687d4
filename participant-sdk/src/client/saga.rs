//! Sagas: a builder of branches, registered in one request.

use super::{Client, ClientError, Transaction, new_gid};
use dtx_protocol::{BranchSpec, Mode, Op, TxOptions};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One saga branch: an action and the compensation that undoes it.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Branch {
    spec: BranchSpec,
}

impl Branch {
    /// A branch `id` (unique in the saga) whose forward step is a POST to
    /// `action_url` and whose undo is a POST to `compensate_url`.
    pub fn new(
        id: impl Into<String>,
        action_url: impl Into<String>,
        compensate_url: impl Into<String>,
    ) -> Self {
        let urls = BTreeMap::from([
            (Op::Action, action_url.into()),
            (Op::Compensate, compensate_url.into()),
        ]);
        Branch {
            spec: BranchSpec {
                id: id.into(),
                urls,
                payload: serde_json::Value::Null,
                headers: BTreeMap::new(),
                depends_on: None,
            },
        }
    }

    /// The JSON body of both calls.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.spec.payload = payload;
        self
    }

    /// An extra header on both calls (not `dtx-*`, `content-type` or
    /// `traceparent`, which the coordinator sets).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.headers.insert(name.into(), value.into());
        self
    }

    /// Runs the action only after these branches' actions succeeded. Once
    /// any branch of a saga names dependencies, the saga is a graph and
    /// branches without dependencies start at once; otherwise the branches
    /// run one after another, in order.
    pub fn depends_on<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec
            .depends_on
            .get_or_insert_with(Vec::new)
            .extend(ids.into_iter().map(Into::into));
        self
    }
}

/// How a registration went.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The coordinator created the transaction (201).
    Created(Transaction),
    /// It already existed with the same request (200): a retry, which
    /// changed nothing.
    Existing(Transaction),
}

impl Registered {
    /// The transaction either way.
    pub fn transaction(&self) -> &Transaction {
        match self {
            Registered::Created(tx) | Registered::Existing(tx) => tx,
        }
    }

    /// The transaction either way, by value.
    pub fn into_transaction(self) -> Transaction {
        match self {
            Registered::Created(tx) | Registered::Existing(tx) => tx,
        }
    }
}

/// A saga being described. Nothing is sent until
/// [`submit`](Self::submit); submitting twice sends the same gid and body,
/// which the coordinator answers with the same transaction.
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until `submit`"]
pub struct SagaBuilder {
    client: Client,
    gid: String,
    branches: Vec<BranchSpec>,
    options: TxOptions,
}

/// The registration of a transaction whose branches are all given at once
/// (saga, 2PC, 3PC): the request body, and what the saga and the 2PC/3PC
/// builders do with it.
#[derive(Serialize)]
pub(super) struct RegisterBody<'a> {
    #[serde(skip)]
    pub(super) client: &'a Client,
    pub(super) gid: &'a str,
    pub(super) mode: Mode,
    pub(super) branches: &'a [BranchSpec],
    pub(super) options: &'a TxOptions,
}

impl RegisterBody<'_> {
    /// Registers; the coordinator waits up to `wait` for the outcome.
    pub(super) async fn register(&self, wait: Duration) -> Result<Registered, ClientError> {
        let (status, tx) = self
            .client
            .call(Method::POST, "v1/transactions", Some(self), wait)
            .await?;
        Ok(if status == StatusCode::CREATED {
            Registered::Created(tx)
        } else {
            Registered::Existing(tx)
        })
    }

    /// Registers and waits until the transaction is final, at most
    /// `timeout`; returns it with its history.
    pub(super) async fn register_and_wait(
        &self,
        timeout: Duration,
    ) -> Result<Transaction, ClientError> {
        let started = tokio::time::Instant::now();
        let tx = self
            .register(timeout.min(super::MAX_WAIT_PER_REQUEST))
            .await?
            .into_transaction();
        if tx.is_final() {
            // The registration's answer has no history; read it.
            return self.client.get(self.gid).await;
        }
        let left = timeout.saturating_sub(started.elapsed());
        self.client.wait(self.gid, left).await
    }
}

impl SagaBuilder {
    pub(super) fn new(client: Client) -> Self {
        SagaBuilder {
            client,
            gid: new_gid(),
            branches: Vec::new(),
            options: TxOptions::default(),
        }
    }

    /// Uses this gid (1–128 of `A-Z a-z 0-9 - _ . :`) instead of a fresh
    /// UUIDv7, e.g. an order id, to make the saga idempotent across your
    /// own retries.
    pub fn with_gid(mut self, gid: impl Into<String>) -> Self {
        self.gid = gid.into();
        self
    }

    /// The gid the saga will be registered under.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a branch; branches run in the order added unless some declare
    /// [dependencies](Branch::depends_on).
    pub fn branch(mut self, branch: Branch) -> Self {
        self.branches.push(branch.spec);
        self
    }

    /// Sets the options (deadline, timeouts, retry policy).
    pub fn options(mut self, options: TxOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers the saga and returns at once; the coordinator runs it.
    pub async fn submit(&self) -> Result<Registered, ClientError> {
        self.body().register(Duration::ZERO).await
    }

    /// Registers the saga and waits until it is final, at most `timeout`;
    /// returns it with its history. A saga that was refused and compensated
    /// is `Ok` with status `aborted` ([`Transaction::abort_cause`] says
    /// which branch refused); a saga still running after `timeout` is
    /// [`ClientError::TimedOut`].
    pub async fn submit_and_wait(&self, timeout: Duration) -> Result<Transaction, ClientError> {
        self.body().register_and_wait(timeout).await
    }

    fn body(&self) -> RegisterBody<'_> {
        RegisterBody {
            client: &self.client,
            gid: &self.gid,
            mode: Mode::Saga,
            branches: &self.branches,
            options: &self.options,
        }
    }
}
