//! The sentences the store writes into a transaction's history and its
//! refusals, shared by every backend's writes so that the log reads the same
//! whichever database holds it.

use crate::auth::by_token;
use dtx_protocol::Mode;

use crate::store::{Fence, StoreError};

/// The `registered` event of a new transaction, registered `by` a token.
pub(in crate::store) fn registered(mode: Mode, branches: usize, by: Option<&str>) -> String {
    format!(
        "registered {mode} transaction with {branches} branches{}",
        by_token(by)
    )
}

/// The `branch` event of a branch registered at `idx` `by` a token.
pub(in crate::store) fn branch_registered(idx: i64, by: Option<&str>) -> String {
    format!("branch registered at index {idx}{}", by_token(by))
}

/// The `takeover` event of an explicit takeover.
pub(in crate::store) fn taken_over(owner: &str, epoch: i64) -> String {
    format!("taken over by {owner} (epoch {epoch})")
}

/// The `takeover` event of a claim of an expired lease.
pub(in crate::store) fn claimed(owner: &str, epoch: i64) -> String {
    format!("claimed by {owner} after the lease expired (epoch {epoch})")
}

/// Why an update naming a branch that does not exist was refused.
pub(in crate::store) fn no_such_branch(gid: &str, index: u32) -> String {
    format!("transaction `{gid}` has no branch at index {index}")
}

/// Why a fenced update changed no row, given the row's fence state as read
/// again (`owner`, `epoch`, branch `count`).
pub(in crate::store) fn refusal(
    fence: &Fence,
    expect_branch_count: Option<u32>,
    owner: Option<&str>,
    epoch: i64,
    count: i64,
) -> StoreError {
    if owner != Some(fence.owner.as_str()) || epoch != fence.epoch {
        return StoreError::Fenced;
    }
    match expect_branch_count {
        Some(expected) if i64::from(expected) != count => StoreError::Conflict(
            format!(
                "transaction `{}` has {count} branches, the write expected {expected}",
                fence.gid
            )
            .into(),
        ),
        // The row matched every condition when read again: a concurrent
        // writer changed it back in between. Rare; the caller reloads.
        _ => StoreError::Conflict(
            format!("transaction `{}` changed during the write", fence.gid).into(),
        ),
    }
}
