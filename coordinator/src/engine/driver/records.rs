//! What a driver writes and hands out besides the core's decisions: the
//! history event of each record the core emits (with the sentence an
//! operator reads), and the record waiters get once the transaction is
//! final, built without a read of the store.

use super::Driver;
use crate::store::{BranchRecord, Event, TransactionRecord};
use dtx_protocol::{AttentionReason, BranchSpec, HistoryRecord, Reply};

impl Driver {
    /// The transaction as the store holds it after a write at
    /// `written_at_ms`: what a read would return, without the read. The
    /// lease expiry is the one this driver loaded; renewals since then moved
    /// it in the store, and it means nothing once the transaction is final.
    pub(super) fn written_record(&self, written_at_ms: i64) -> TransactionRecord {
        let branches = self
            .tx
            .branch_statuses()
            .zip(self.tx.failing_since_ms())
            .zip(&self.specs)
            .zip(&self.calls)
            .enumerate()
            .map(
                |(index, (((status, failing_since_ms), spec), calls))| BranchRecord {
                    index: index as u32,
                    spec: BranchSpec::clone(spec),
                    status,
                    attempts: calls.attempts,
                    last_http_status: calls.last_http_status,
                    last_error: calls.last_error.clone(),
                    failing_since_ms,
                },
            )
            .collect();
        TransactionRecord {
            status: self.tx.status(),
            updated_at_ms: written_at_ms,
            owner: Some(self.fence.owner.clone()),
            epoch: self.fence.epoch,
            attention: self.attention.clone(),
            branches,
            ..self.base.clone()
        }
    }

    fn event(&self, at_ms: i64, kind: &str, branch: Option<usize>, detail: String) -> Event {
        Event {
            at_ms,
            kind: kind.to_owned(),
            branch_id: branch.map(|b| self.specs[b].id.clone()),
            detail,
        }
    }

    pub(super) fn history_event(&self, record: &HistoryRecord, at_ms: i64) -> Event {
        match *record {
            HistoryRecord::Status { to, reason, cause } => {
                self.event(at_ms, "status", cause, format!("{to}: {reason}"))
            }
            HistoryRecord::Branch { branch, op, to } => {
                self.event(at_ms, "branch", Some(branch), format!("{op} → {to}"))
            }
            HistoryRecord::CallFailed {
                branch,
                op,
                reply,
                failures,
                retry_at_ms,
            } => {
                let error = self.calls[branch]
                    .last_error
                    .as_deref()
                    .unwrap_or("no detail");
                let next_in_ms = (retry_at_ms - at_ms).max(0);
                let detail = match reply {
                    Reply::StillWorking => {
                        format!("{op}: still working ({error}); asking again every {next_in_ms} ms")
                    }
                    _ => format!(
                        "{op}: {} ({error}); failure {failures} in a row, next attempt in {next_in_ms} ms",
                        if reply == Reply::Refused {
                            "refused"
                        } else {
                            "unknown outcome"
                        }
                    ),
                };
                self.event(at_ms, "call_failed", Some(branch), detail)
            }
            HistoryRecord::Attention { branch, op, reason } => {
                let id = &self.specs[branch].id;
                let last = self.calls[branch]
                    .last_error
                    .as_deref()
                    .unwrap_or("unknown");
                let detail = match reason {
                    AttentionReason::Refused => format!(
                        "branch `{id}` refused its {op} (HTTP 409); a {op} must succeed, so dtx keeps retrying: fix the participant"
                    ),
                    AttentionReason::FailingFor { ms } => format!(
                        "branch `{id}`: {op} has failed for over {} s (last: {last}); dtx keeps retrying",
                        ms / 1000
                    ),
                };
                self.event(at_ms, "attention", Some(branch), detail)
            }
        }
    }
}
