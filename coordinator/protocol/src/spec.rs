//! What a client registers: the branches of a global transaction and its
//! options, with the structural checks that need no I/O (ids, dependencies,
//! required operations). URL syntax is checked by the API layer.

use crate::retry::RetryPolicy;
use crate::wire::{Mode, Op};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One participant of a global transaction, as registered.
///
/// Unknown fields are rejected: the URL map is flattened and its keys must be
/// operation names, so a misspelt field fails as an unknown operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchSpec {
    /// Unique within the transaction; sent to the participant as `dtx-branch`.
    pub id: String,
    /// URL of each operation the coordinator will call, keyed by operation.
    /// On the wire these are flat fields: `"action": "http://..."`.
    #[serde(flatten)]
    pub urls: BTreeMap<Op, String>,
    /// JSON body sent with every call on this branch.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Extra headers sent with every call on this branch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Saga only: ids of branches whose actions must succeed before this one
    /// starts. When no branch of a saga names any, the saga is sequential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
}

/// Per-transaction options; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TxOptions {
    /// Milliseconds from registration until phase one gives up: a saga still
    /// running compensates, an open TCC transaction is aborted.
    pub deadline_ms: u64,
    /// Milliseconds a single participant call may take before its answer is
    /// treated as unknown (and retried).
    pub request_timeout_ms: u64,
    /// Backoff between attempts of a call whose answer was unknown.
    pub retry: RetryPolicy,
    /// Milliseconds between two asks of a call answered "still working"
    /// (425): a steady interval, not the growing backoff of an unknown answer.
    pub poll_interval_ms: u64,
    /// Milliseconds a phase-two call may keep failing before the transaction
    /// is flagged for an operator. Retries go on after the flag.
    pub attention_after_ms: u64,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            deadline_ms: 60_000,
            request_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            poll_interval_ms: 1_000,
            attention_after_ms: 600_000,
        }
    }
}

impl TxOptions {
    /// Checks the options make sense; returns a sentence for the caller if not.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline_ms == 0 || self.deadline_ms > 7 * 24 * 3_600_000 {
            return Err("options.deadline_ms must be between 1 ms and 7 days".into());
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > 600_000 {
            return Err("options.request_timeout_ms must be between 1 ms and 10 minutes".into());
        }
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 3_600_000 {
            return Err("options.poll_interval_ms must be between 1 ms and 1 hour".into());
        }
        if self.attention_after_ms == 0 {
            return Err("options.attention_after_ms must be above 0".into());
        }
        self.retry.validate().map_err(|e| format!("options.{e}"))
    }
}

/// Checks one branch: a non-empty id and exactly the URLs its mode calls.
pub fn validate_branch(mode: Mode, branch: &BranchSpec) -> Result<(), String> {
    if branch.id.trim().is_empty() {
        return Err("every branch needs a non-empty `id`".into());
    }
    if branch.id.len() > 128 {
        return Err(format!(
            "branch id `{}…` is longer than 128 characters",
            &branch.id[..16]
        ));
    }
    for op in mode.required_ops() {
        if !branch.urls.contains_key(op) {
            return Err(format!(
                "branch `{}` has no `{}` URL, which {} requires",
                branch.id, op, mode
            ));
        }
    }
    if let Some(op) = branch
        .urls
        .keys()
        .find(|op| !mode.required_ops().contains(op))
    {
        return Err(format!(
            "branch `{}` has a `{}` URL, which {} does not use",
            branch.id, op, mode
        ));
    }
    if mode != Mode::Saga && branch.depends_on.is_some() {
        return Err(format!(
            "branch `{}`: `depends_on` is only for sagas",
            branch.id
        ));
    }
    Ok(())
}

/// Checks the branches of a mode whose branches are all registered at once:
/// at least one, unique ids, each with exactly the URLs the mode calls.
pub fn validate_branches(mode: Mode, branches: &[BranchSpec]) -> Result<(), String> {
    if branches.is_empty() {
        return Err(format!("a {mode} transaction needs at least one branch"));
    }
    let mut seen = std::collections::HashSet::new();
    for b in branches {
        validate_branch(mode, b)?;
        if !seen.insert(b.id.as_str()) {
            return Err(format!("branch id `{}` is used twice", b.id));
        }
    }
    Ok(())
}

/// Checks every branch of a saga and resolves its dependency graph.
///
/// Returns, for each branch, the indices of the branches it depends on.
/// When no branch names `depends_on`, each branch depends on the one before.
pub fn saga_dependencies(branches: &[BranchSpec]) -> Result<Vec<Vec<usize>>, String> {
    if branches.is_empty() {
        return Err("a saga needs at least one branch".into());
    }
    let mut index = HashMap::new();
    for (i, b) in branches.iter().enumerate() {
        validate_branch(Mode::Saga, b)?;
        if index.insert(b.id.as_str(), i).is_some() {
            return Err(format!("branch id `{}` is used twice", b.id));
        }
    }
    if branches.iter().all(|b| b.depends_on.is_none()) {
        return Ok((0..branches.len())
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect());
    }
    let mut deps = Vec::with_capacity(branches.len());
    for b in branches {
        let mut mine = Vec::new();
        for d in b.depends_on.iter().flatten() {
            let &j = index.get(d.as_str()).ok_or_else(|| {
                format!(
                    "branch `{}` depends on `{d}`, which is not a branch of this saga",
                    b.id
                )
            })?;
            if !mine.contains(&j) {
                mine.push(j);
            }
        }
        deps.push(mine);
    }
    if let Some(i) = find_cycle(&deps) {
        return Err(format!(
            "the dependencies form a cycle through branch `{}`",
            branches[i].id
        ));
    }
    Ok(deps)
}

/// Returns a node on a cycle of the graph, if there is one (Kahn's algorithm:
/// whatever cannot be ordered lies on or behind a cycle).
fn find_cycle(deps: &[Vec<usize>]) -> Option<usize> {
    let mut unmet: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..deps.len()).filter(|&i| unmet[i] == 0).collect();
    let mut ordered = 0;
    while let Some(done) = ready.pop() {
        ordered += 1;
        for (i, d) in deps.iter().enumerate() {
            if d.contains(&done) {
                unmet[i] -= 1;
                if unmet[i] == 0 {
                    ready.push(i);
                }
            }
        }
    }
    (ordered < deps.len()).then(|| unmet.iter().position(|&n| n > 0).unwrap_or(0))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
