//! 2PC and 3PC: a builder of branches registered in one request, like the
//! saga builder; the coordinator then drives the votes and phase two.

use super::saga::RegisterBody;
use super::{Client, ClientError, Registered, Transaction, new_gid};
use dtx_protocol::{BranchSpec, Mode, Op, TxOptions};
use std::collections::BTreeMap;
use std::time::Duration;

/// One branch of a 2PC or 3PC transaction: the URLs of its operations.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct PhasedBranch {
    spec: BranchSpec,
}

impl PhasedBranch {
    /// A 2PC branch `id` (unique in the transaction): its vote is a POST to
    /// `prepare_url`, then `commit_url` or `rollback_url`.
    pub fn two_phase(
        id: impl Into<String>,
        prepare_url: impl Into<String>,
        commit_url: impl Into<String>,
        rollback_url: impl Into<String>,
    ) -> Self {
        Self::with_urls(
            id,
            [
                (Op::Prepare, prepare_url.into()),
                (Op::Commit, commit_url.into()),
                (Op::Rollback, rollback_url.into()),
            ],
        )
    }

    /// A 3PC branch `id` (unique in the transaction): its vote is a POST to
    /// `can_commit_url`, then `pre_commit_url`, then `do_commit_url`, or
    /// `abort_url` at any point.
    pub fn three_phase(
        id: impl Into<String>,
        can_commit_url: impl Into<String>,
        pre_commit_url: impl Into<String>,
        do_commit_url: impl Into<String>,
        abort_url: impl Into<String>,
    ) -> Self {
        Self::with_urls(
            id,
            [
                (Op::CanCommit, can_commit_url.into()),
                (Op::PreCommit, pre_commit_url.into()),
                (Op::DoCommit, do_commit_url.into()),
                (Op::Abort, abort_url.into()),
            ],
        )
    }

    fn with_urls<const N: usize>(id: impl Into<String>, urls: [(Op, String); N]) -> Self {
        PhasedBranch {
            spec: BranchSpec {
                id: id.into(),
                urls: BTreeMap::from(urls),
                payload: serde_json::Value::Null,
                headers: BTreeMap::new(),
                depends_on: None,
            },
        }
    }

    /// The JSON body of every call of the branch.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.spec.payload = payload;
        self
    }

    /// An extra header on every call (not `dtx-*`, `content-type` or
    /// `traceparent`, which the coordinator sets).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.headers.insert(name.into(), value.into());
        self
    }
}

/// A 2PC or 3PC transaction being described, made by
/// [`Client::two_phase`] or [`Client::three_phase`]. Nothing is sent until
/// [`submit`](Self::submit); submitting twice sends the same gid and body,
/// which the coordinator answers with the same transaction.
#[derive(Debug, Clone)]
#[must_use = "nothing is sent until `submit`"]
pub struct PhasedBuilder {
    client: Client,
    mode: Mode,
    gid: String,
    branches: Vec<BranchSpec>,
    options: TxOptions,
}

impl Client {
    /// Starts describing a 2PC transaction; add branches made with
    /// [`PhasedBranch::two_phase`] and send it with [`PhasedBuilder::submit`].
    pub fn two_phase(&self) -> PhasedBuilder {
        PhasedBuilder::new(self.clone(), Mode::TwoPhase)
    }

    /// Starts describing a 3PC transaction; add branches made with
    /// [`PhasedBranch::three_phase`] and send it with [`PhasedBuilder::submit`].
    pub fn three_phase(&self) -> PhasedBuilder {
        PhasedBuilder::new(self.clone(), Mode::ThreePhase)
    }
}

impl PhasedBuilder {
    fn new(client: Client, mode: Mode) -> Self {
        PhasedBuilder {
            client,
            mode,
            gid: new_gid(),
            branches: Vec::new(),
            options: TxOptions::default(),
        }
    }

    /// Uses this gid (1–128 of `A-Z a-z 0-9 - _ . :`) instead of a fresh
    /// UUIDv7, e.g. an order id, to make the registration idempotent across
    /// your own retries.
    pub fn with_gid(mut self, gid: impl Into<String>) -> Self {
        self.gid = gid.into();
        self
    }

    /// The gid the transaction will be registered under.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The protocol: [`Mode::TwoPhase`] or [`Mode::ThreePhase`].
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Adds a branch. Its URLs must be those of this builder's mode (the
    /// coordinator refuses the registration otherwise).
    pub fn branch(mut self, branch: PhasedBranch) -> Self {
        self.branches.push(branch.spec);
        self
    }

    /// Sets the options (the vote deadline, timeouts, retry policy).
    pub fn options(mut self, options: TxOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers the transaction and returns at once; the coordinator runs it.
    pub async fn submit(&self) -> Result<Registered, ClientError> {
        self.body().register(Duration::ZERO).await
    }

    /// Registers the transaction and waits until it is final, at most
    /// `timeout`; returns it with its history. A transaction voted down (or
    /// past its deadline) and rolled back is `Ok` with status `aborted`
    /// ([`Transaction::abort_cause`] says which branch refused); one still
    /// going after `timeout` is [`ClientError::TimedOut`].
    pub async fn submit_and_wait(&self, timeout: Duration) -> Result<Transaction, ClientError> {
        self.body().register_and_wait(timeout).await
    }

    fn body(&self) -> RegisterBody<'_> {
        RegisterBody {
            client: &self.client,
            gid: &self.gid,
            mode: self.mode,
            branches: &self.branches,
            options: &self.options,
        }
    }
}
