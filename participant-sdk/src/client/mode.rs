//! The four protocols as types, so that one generic branch builder
//! ([`Branch`]) and one transaction builder
//! ([`TransactionBuilder`](super::TransactionBuilder)) serve them all while
//! each mode keeps its own URL methods: a saga branch has `action` and
//! `compensate`, a 2PC branch `prepare`, `commit` and `rollback`, and a
//! builder only takes branches of its own mode. You never name these types;
//! the aliases ([`SagaBranch`](super::SagaBranch),
//! [`SagaBuilder`](super::SagaBuilder), ...) do.

use super::Branch;
use crate::op::BranchOp;
use dtx_protocol::Mode;
use std::fmt::Debug;
use std::time::Duration;

/// Sagas ([`Mode::Saga`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saga;

/// TCC ([`Mode::Tcc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcc;

/// Two-phase commit ([`Mode::TwoPhase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoPhase;

/// Three-phase commit ([`Mode::ThreePhase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreePhase;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Saga {}
    impl Sealed for super::Tcc {}
    impl Sealed for super::TwoPhase {}
    impl Sealed for super::ThreePhase {}
}

/// A protocol as a type. Sealed: the four above are all there is.
pub trait TxMode:
    sealed::Sealed + Debug + Clone + Copy + PartialEq + Send + Sync + 'static
{
    /// The mode on the wire.
    const MODE: Mode;
    /// The operations whose URLs every branch of this mode must give, in the
    /// order a reader expects them.
    const URLS: &'static [BranchOp];
    /// What a transaction builder of this mode holds besides its gid and
    /// options: the branches (saga, 2PC, 3PC) or the scope's settings (TCC).
    type Parts: Debug + Clone + Send + Sync;
    /// The parts of a new builder.
    fn new_parts() -> Self::Parts;
}

/// A protocol whose branches are all given at registration and driven by
/// the coordinator from the start: saga, 2PC, 3PC.
pub trait Upfront: TxMode<Parts = Vec<Branch<Self>>> {}

impl TxMode for Saga {
    const MODE: Mode = Mode::Saga;
    const URLS: &'static [BranchOp] = &[BranchOp::Action, BranchOp::Compensate];
    type Parts = Vec<Branch<Saga>>;
    fn new_parts() -> Self::Parts {
        Vec::new()
    }
}
impl Upfront for Saga {}

impl TxMode for Tcc {
    const MODE: Mode = Mode::Tcc;
    const URLS: &'static [BranchOp] = &[BranchOp::Try, BranchOp::Confirm, BranchOp::Cancel];
    type Parts = TccSettings;
    fn new_parts() -> Self::Parts {
        TccSettings {
            wait: Duration::ZERO,
            try_attempts: 3,
            outcome_patience: Duration::from_secs(60),
        }
    }
}

impl TxMode for TwoPhase {
    const MODE: Mode = Mode::TwoPhase;
    const URLS: &'static [BranchOp] = &[BranchOp::Prepare, BranchOp::Commit, BranchOp::Rollback];
    type Parts = Vec<Branch<TwoPhase>>;
    fn new_parts() -> Self::Parts {
        Vec::new()
    }
}
impl Upfront for TwoPhase {}

impl TxMode for ThreePhase {
    const MODE: Mode = Mode::ThreePhase;
    const URLS: &'static [BranchOp] = &[
        BranchOp::CanCommit,
        BranchOp::PreCommit,
        BranchOp::DoCommit,
        BranchOp::Abort,
    ];
    type Parts = Vec<Branch<ThreePhase>>;
    fn new_parts() -> Self::Parts {
        Vec::new()
    }
}
impl Upfront for ThreePhase {}

/// The TCC scope's settings; see
/// [`TccBuilder`](super::TccBuilder)'s methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TccSettings {
    pub(super) wait: Duration,
    pub(super) try_attempts: u32,
    pub(super) outcome_patience: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_asks_for_the_urls_the_coordinator_requires_and_tcc_for_its_try() {
        fn sent_by_coordinator(urls: &[BranchOp]) -> Vec<dtx_protocol::Op> {
            urls.iter().filter_map(|op| op.coordinator_op()).collect()
        }
        assert_eq!(sent_by_coordinator(Saga::URLS), Mode::Saga.required_ops());
        assert_eq!(sent_by_coordinator(Tcc::URLS), Mode::Tcc.required_ops());
        assert!(Tcc::URLS.contains(&BranchOp::Try));
        assert_eq!(
            sent_by_coordinator(TwoPhase::URLS),
            Mode::TwoPhase.required_ops()
        );
        assert_eq!(
            sent_by_coordinator(ThreePhase::URLS),
            Mode::ThreePhase.required_ops()
        );
        for urls in [Saga::URLS, Tcc::URLS, TwoPhase::URLS, ThreePhase::URLS] {
            assert!(
                urls.iter()
                    .all(|op| urls.iter().all(|o| o.mode() == op.mode()))
            );
        }
    }
}
