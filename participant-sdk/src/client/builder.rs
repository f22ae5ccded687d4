//! The transaction builder, one for every mode: [`TransactionBuilder`], used
//! through its aliases [`SagaBuilder`], [`TwoPhaseBuilder`],
//! [`ThreePhaseBuilder`] (all branches given, then
//! [`submit`](TransactionBuilder::submit)) and [`TccBuilder`] (branches
//! tried inside [`run`](TransactionBuilder::run), in `tcc`).

use super::endpoints::Endpoint;
use super::mode::{Saga, Tcc, ThreePhase, TwoPhase, TxMode, Upfront};
use super::{Branch, Client, ClientError, TransactionView, new_gid};
use dtx_protocol::{RegisterRequest, TxOptions};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// A saga being described, made by [`Client::saga`]: add
/// [`SagaBranch`](super::SagaBranch)es, then [`submit`](TransactionBuilder::submit).
pub type SagaBuilder = TransactionBuilder<Saga>;
/// A TCC transaction being described, made by [`Client::tcc`]: carry it out
/// with [`run`](TransactionBuilder::run).
pub type TccBuilder = TransactionBuilder<Tcc>;
/// A 2PC transaction being described, made by [`Client::two_phase`]: add
/// [`TwoPhaseBranch`](super::TwoPhaseBranch)es, then
/// [`submit`](TransactionBuilder::submit).
pub type TwoPhaseBuilder = TransactionBuilder<TwoPhase>;
/// A 3PC transaction being described, made by [`Client::three_phase`]: add
/// [`ThreePhaseBranch`](super::ThreePhaseBranch)es, then
/// [`submit`](TransactionBuilder::submit).
pub type ThreePhaseBuilder = TransactionBuilder<ThreePhase>;

/// A global transaction of mode `M` being described. Nothing is sent until
/// [`submit`](Self::submit) (saga, 2PC, 3PC) or [`run`](Self::run) (TCC);
/// submitting twice sends the same gid and body, which the coordinator
/// answers with the same transaction.
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until `submit` (or `run`, for TCC)"]
pub struct TransactionBuilder<M: TxMode> {
    pub(super) client: Client,
    pub(super) gid: String,
    pub(super) options: TxOptions,
    /// The branches (saga, 2PC, 3PC) or the scope's settings (TCC).
    pub(super) parts: M::Parts,
}

impl Client {
    /// Starts describing a saga; send it with [`SagaBuilder::submit`].
    pub fn saga(&self) -> SagaBuilder {
        TransactionBuilder::new(self.clone())
    }

    /// Starts describing a TCC transaction; run it with [`TccBuilder::run`].
    pub fn tcc(&self) -> TccBuilder {
        TransactionBuilder::new(self.clone())
    }

    /// Starts describing a 2PC transaction; send it with
    /// [`TwoPhaseBuilder::submit`].
    pub fn two_phase(&self) -> TwoPhaseBuilder {
        TransactionBuilder::new(self.clone())
    }

    /// Starts describing a 3PC transaction; send it with
    /// [`ThreePhaseBuilder::submit`].
    pub fn three_phase(&self) -> ThreePhaseBuilder {
        TransactionBuilder::new(self.clone())
    }
}

impl<M: TxMode> TransactionBuilder<M> {
    fn new(client: Client) -> Self {
        TransactionBuilder {
            client,
            gid: new_gid(),
            options: TxOptions::default(),
            parts: M::new_parts(),
        }
    }

    /// Uses this gid (1–128 of `A-Z a-z 0-9 - _ . :`) instead of a fresh
    /// UUIDv7, e.g. an order id, to make the transaction idempotent across
    /// your own retries.
    pub fn with_gid(mut self, gid: impl Into<String>) -> Self {
        self.gid = gid.into();
        self
    }

    /// The gid the transaction will be registered under.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The protocol.
    pub fn mode(&self) -> dtx_protocol::Mode {
        M::MODE
    }

    /// Sets the options: the deadline of phase one (saga actions, votes, a
    /// TCC scope), call timeouts, the retry policy.
    pub fn options(mut self, options: TxOptions) -> Self {
        self.options = options;
        self
    }
}

/// How a registration went.
#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// The coordinator created the transaction (201).
    Created(TransactionView),
    /// It already existed with the same request (200): a retry, which
    /// changed nothing. A registration that went to another coordinator
    /// after the first one took it but gave no answer is answered so too.
    Existing(TransactionView),
}

impl Registered {
    /// The transaction either way.
    pub fn transaction(&self) -> &TransactionView {
        match self {
            Registered::Created(tx) | Registered::Existing(tx) => tx,
        }
    }

    /// The transaction either way, by value.
    pub fn into_transaction(self) -> TransactionView {
        match self {
            Registered::Created(tx) | Registered::Existing(tx) => tx,
        }
    }
}

impl<M: Upfront> TransactionBuilder<M> {
    /// Adds a branch. Saga branches run in the order added unless some
    /// declare [dependencies](Branch::depends_on); 2PC and 3PC branches vote
    /// together.
    pub fn branch(mut self, branch: Branch<M>) -> Self {
        self.parts.push(branch);
        self
    }

    /// Registers the transaction and returns at once; the coordinator runs
    /// it. A branch missing one of its URLs fails with
    /// [`ClientError::IncompleteBranch`] before anything is sent.
    pub async fn submit(&self) -> Result<Registered, ClientError> {
        self.register(Duration::ZERO)
            .await
            .map(|(registered, _)| registered)
    }

    /// Registers the transaction and waits until it is final, at most
    /// `timeout`; returns it with its history. A transaction that was
    /// refused (a saga action, a no vote) or ran past its deadline, and was
    /// compensated or rolled back, is `Ok` with status `aborted`
    /// ([`TransactionView::abort_cause`] says which branch refused and why);
    /// one still going after `timeout` is [`ClientError::TimedOut`].
    ///
    /// The reads that follow the registration ask the coordinator that
    /// registered it first (it drives the transaction, so it knows of every
    /// change at once), and any other one when it fails.
    pub async fn submit_and_wait(&self, timeout: Duration) -> Result<TransactionView, ClientError> {
        let started = tokio::time::Instant::now();
        let (registered, home) = self
            .register(timeout.min(super::MAX_WAIT_PER_REQUEST))
            .await?;
        let tx = registered.into_transaction();
        if tx.is_final() {
            // The registration's answer has no history; read it.
            return self
                .client
                .get_at(&self.gid, Some(&home))
                .await
                .map(|a| a.body);
        }
        let left = timeout.saturating_sub(started.elapsed());
        self.client.wait_at(&self.gid, left, Some(&home)).await
    }

    /// Registers; the coordinator waits up to `wait` for the outcome.
    /// Returns the endpoint that answered, too.
    async fn register(&self, wait: Duration) -> Result<(Registered, Arc<Endpoint>), ClientError> {
        let branches = self
            .parts
            .iter()
            .map(Branch::to_spec)
            .collect::<Result<_, _>>()?;
        let request = RegisterRequest {
            gid: Some(self.gid.clone()),
            mode: M::MODE,
            branches,
            options: self.options.clone(),
        };
        let answered = self
            .client
            .call(Method::POST, "v1/transactions", Some(&request), wait, None)
            .await?;
        // A registration that failed over after the first coordinator had
        // created the transaction is answered 200 by the next: `Existing`.
        let registered = if answered.status == StatusCode::CREATED {
            Registered::Created(answered.body)
        } else {
            Registered::Existing(answered.body)
        };
        Ok((registered, answered.endpoint))
    }
}
