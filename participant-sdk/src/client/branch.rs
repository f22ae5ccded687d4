//! The branch builder, one for every mode: [`Branch`], used through its
//! aliases [`SagaBranch`], [`TccBranch`], [`TwoPhaseBranch`] and
//! [`ThreePhaseBranch`]. Each URL is set by a method named after its
//! operation, so two URLs cannot be swapped by position; a branch missing
//! one is refused when it is submitted
//! ([`ClientError::IncompleteBranch`]), before anything is sent.

use super::ClientError;
use super::mode::{Saga, Tcc, ThreePhase, TwoPhase, TxMode};
use crate::op::BranchOp;
use dtx_protocol::BranchSpec;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// A saga branch: `SagaBranch::new(id).action(url).compensate(url)`.
pub type SagaBranch = Branch<Saga>;
/// A TCC branch: `TccBranch::new(id).try_url(url).confirm(url).cancel(url)`.
/// The initiator calls the Try itself
/// ([`TccScope::try_branch`](super::TccScope::try_branch)); the coordinator
/// calls Confirm or Cancel.
pub type TccBranch = Branch<Tcc>;
/// A 2PC branch: `TwoPhaseBranch::new(id).prepare(url).commit(url).rollback(url)`.
pub type TwoPhaseBranch = Branch<TwoPhase>;
/// A 3PC branch:
/// `ThreePhaseBranch::new(id).can_commit(url).pre_commit(url).do_commit(url).abort(url)`.
pub type ThreePhaseBranch = Branch<ThreePhase>;

/// One branch of a transaction of mode `M`: its id, the URL of each of its
/// operations, the payload and extra headers of its calls. Every mode shares
/// [`payload`](Self::payload) and [`header`](Self::header); the URL methods
/// are the mode's own (see the aliases).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Branch<M> {
    id: String,
    urls: BTreeMap<BranchOp, String>,
    payload: serde_json::Value,
    headers: BTreeMap<String, String>,
    depends_on: Option<Vec<String>>,
    mode: PhantomData<fn() -> M>,
}

impl<M: TxMode> Branch<M> {
    /// A branch `id` (unique in the transaction; sent as `dtx-branch`), with
    /// no URL yet: set each with the method named after its operation.
    pub fn new(id: impl Into<String>) -> Self {
        Branch {
            id: id.into(),
            urls: BTreeMap::new(),
            payload: serde_json::Value::Null,
            headers: BTreeMap::new(),
            depends_on: None,
            mode: PhantomData,
        }
    }

    /// The branch id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The URL set for `op`, if any.
    pub fn url(&self, op: BranchOp) -> Option<&str> {
        self.urls.get(&op).map(String::as_str)
    }

    /// The JSON body of every call of the branch.
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    /// An extra header on every call of the branch (not `dtx-*`,
    /// `content-type` or `traceparent`, which the coordinator and the client
    /// set).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    fn with_url(mut self, op: BranchOp, url: impl Into<String>) -> Self {
        self.urls.insert(op, url.into());
        self
    }

    /// The branch as the coordinator registers it, after checking that
    /// every URL of the mode was given.
    pub(super) fn to_spec(&self) -> Result<BranchSpec, ClientError> {
        let missing: Vec<BranchOp> = M::URLS
            .iter()
            .copied()
            .filter(|op| !self.urls.contains_key(op))
            .collect();
        if !missing.is_empty() {
            return Err(ClientError::IncompleteBranch {
                branch: self.id.clone(),
                missing,
            });
        }
        Ok(BranchSpec {
            id: self.id.clone(),
            // The Try's URL is the initiator's to call: the coordinator
            // never sees it.
            urls: self
                .urls
                .iter()
                .filter_map(|(op, url)| Some((op.coordinator_op()?, url.clone())))
                .collect(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            depends_on: self.depends_on.clone(),
        })
    }
}

/// The name of the builder method that sets `op`'s URL.
pub(super) fn setter(op: BranchOp) -> &'static str {
    match op {
        BranchOp::Try => "try_url",
        other => other.as_str(),
    }
}

impl Branch<Saga> {
    /// The forward step: a POST to `url` with `dtx-op: action`.
    pub fn action(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Action, url)
    }

    /// The undo of the action: a POST to `url` with `dtx-op: compensate`,
    /// for an action that ran, may have run, or was refused.
    pub fn compensate(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Compensate, url)
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
        self.depends_on
            .get_or_insert_with(Vec::new)
            .extend(ids.into_iter().map(Into::into));
        self
    }
}

impl Branch<Tcc> {
    /// The Try, which the initiator POSTs itself with `dtx-op: try`
    /// (`try` is a keyword, hence the name).
    pub fn try_url(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Try, url)
    }

    /// The Confirm of a successful Try: a POST to `url` with `dtx-op: confirm`.
    pub fn confirm(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Confirm, url)
    }

    /// The Cancel of a Try that may have run: a POST to `url` with
    /// `dtx-op: cancel`.
    pub fn cancel(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Cancel, url)
    }
}

impl Branch<TwoPhase> {
    /// The vote: a POST to `url` with `dtx-op: prepare`.
    pub fn prepare(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Prepare, url)
    }

    /// The commit of a prepared branch: `dtx-op: commit`.
    pub fn commit(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Commit, url)
    }

    /// The rollback of a branch that may have prepared: `dtx-op: rollback`.
    pub fn rollback(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Rollback, url)
    }
}

impl Branch<ThreePhase> {
    /// The vote: a POST to `url` with `dtx-op: can_commit`.
    pub fn can_commit(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::CanCommit, url)
    }

    /// Everyone voted yes, do the work and hold it: `dtx-op: pre_commit`.
    pub fn pre_commit(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::PreCommit, url)
    }

    /// Make the held work final: `dtx-op: do_commit`.
    pub fn do_commit(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::DoCommit, url)
    }

    /// Undo whatever the branch holds: `dtx-op: abort`.
    pub fn abort(self, url: impl Into<String>) -> Self {
        self.with_url(BranchOp::Abort, url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtx_protocol::Op;

    #[test]
    fn urls_land_under_the_operation_they_are_named_after() {
        let spec = SagaBranch::new("stock")
            .compensate("http://s/release")
            .action("http://s/reserve")
            .payload(serde_json::json!({"qty": 1}))
            .header("x-tenant", "acme")
            .to_spec()
            .expect("complete");
        assert_eq!(spec.urls[&Op::Action], "http://s/reserve");
        assert_eq!(spec.urls[&Op::Compensate], "http://s/release");
        assert_eq!(spec.headers["x-tenant"], "acme");
        assert_eq!(spec.payload, serde_json::json!({"qty": 1}));
    }

    #[test]
    fn a_missing_url_is_a_typed_error_naming_the_method_to_call() {
        let error = SagaBranch::new("stock")
            .action("http://s/reserve")
            .to_spec()
            .expect_err("no compensation URL");
        match &error {
            ClientError::IncompleteBranch { branch, missing } => {
                assert_eq!(branch, "stock");
                assert_eq!(missing, &[BranchOp::Compensate]);
            }
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("`.compensate(url)`"), "{error}");

        let error = TccBranch::new("stock")
            .confirm("http://s/confirm")
            .to_spec()
            .expect_err("no Try and no Cancel URL");
        let message = error.to_string();
        assert!(message.contains("`.try_url(url)`"), "{message}");
        assert!(message.contains("`.cancel(url)`"), "{message}");
    }

    #[test]
    fn the_try_url_stays_with_the_initiator() {
        let branch = TccBranch::new("stock")
            .try_url("http://s/try")
            .confirm("http://s/confirm")
            .cancel("http://s/cancel");
        let spec = branch.to_spec().expect("complete");
        assert_eq!(
            spec.urls.keys().copied().collect::<Vec<_>>(),
            [Op::Confirm, Op::Cancel]
        );
        assert_eq!(branch.url(BranchOp::Try), Some("http://s/try"));
    }
}
