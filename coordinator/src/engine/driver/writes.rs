//! What a driver writes: one fenced update per step with history (the
//! core's records as history events, with the sentences an operator reads,
//! the rows of the branches answered since, the operator flag), retried in
//! place while the database is unavailable; and the record waiters get once
//! the transaction is final, built without a read of the store.

use super::Driver;
use crate::auth::by_token;
use crate::engine::{Progress, now_ms};
use crate::store::{BranchRecord, BranchUpdate, Event, StoreError, TransactionRecord, Update};
use dtx_protocol::{AttentionReason, BranchSpec, BranchStatus, HistoryRecord, Reply, Status};

use std::sync::Arc;
use std::time::Duration;

impl Driver {
    /// Writes history, dirty branches and the flag in one fenced update,
    /// retrying while the database is unavailable. Branch rows changed by an
    /// answer that the core did not log (a retry in a failure run) wait for
    /// the next write: they are for people, not for recovery.
    pub(super) async fn persist(
        &mut self,
        history: &[HistoryRecord],
        expect_branch_count: Option<u32>,
    ) -> Result<(), StoreError> {
        if history.is_empty() {
            return Ok(());
        }
        let written_at_ms = now_ms();
        let events: Vec<Event> = history
            .iter()
            .map(|record| self.history_event(record, written_at_ms))
            .collect();
        for record in history {
            match record {
                HistoryRecord::Branch { branch, .. } | HistoryRecord::CallFailed { branch, .. } => {
                    self.dirty.insert(*branch);
                }
                HistoryRecord::Attention { .. } => {
                    let sentence = events
                        .iter()
                        .find(|e| e.kind == "attention")
                        .map(|e| e.detail.clone());
                    if self.attention.is_none() {
                        tracing::warn!(
                            gid = self.fence.gid,
                            reason = sentence,
                            "transaction needs an operator"
                        );
                        self.shared.metrics.flagged();
                        self.attention = sentence;
                    }
                }
                HistoryRecord::Status { .. } => {}
            }
        }
        let events = self.history.admit(events, written_at_ms);
        let flag_pending = self.attention.is_some() && !self.flag_written;
        let statuses: Vec<_> = self.tx.branch_statuses().collect();
        let failing_since: Vec<_> = self.tx.failing_since_ms().collect();
        let branches = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|i| BranchUpdate {
                index: i as u32,
                status: statuses[i],
                attempts: self.calls[i].attempts,
                last_http_status: self.calls[i].last_http_status,
                last_error: self.calls[i].last_error.clone(),
                refusal: self.calls[i].refusal.clone(),
                failing_since_ms: failing_since[i],
            })
            .collect();
        let status = self.tx.status();
        let update = Update {
            fence: self.fence.clone(),
            now_ms: written_at_ms,
            status: (status != self.persisted_status).then_some(status),
            expect_branch_count,
            attention: if flag_pending {
                self.attention.clone()
            } else {
                None
            },
            branches,
            events,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.shared.store.update(update.clone()).await {
                Ok(()) => break,
                Err(StoreError::Unavailable(e)) => {
                    self.shared.metrics.store_retry();
                    tracing::warn!(
                        gid = self.fence.gid,
                        error = %e,
                        "database unavailable; retrying the write"
                    );
                    tokio::select! {
                        biased;
                        _ = self.shared.shutdown.cancelled() => return Err(StoreError::Unavailable(e)),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        self.persisted_status = status;
        self.flag_written |= flag_pending;
        let finished = status
            .is_final()
            .then(|| Arc::new(self.written_record(written_at_ms)));
        self.status_tx.send_replace(Progress { status, finished });
        if status.is_final() {
            self.shared.metrics.finished(self.mode, status);
        }
        Ok(())
    }

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
                    refusal: calls.refusal.clone(),
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

    /// Puts the reason of the refused Try the initiator named on its
    /// branch, to be written with the abort (the load before the decision
    /// read the branch rows afresh). A branch id the transaction lacks is
    /// left out: the Try may have been refused before its branch was
    /// registered.
    pub(super) fn note_refused_try(&mut self) {
        let Some(refused) = &self.refused_try else {
            return;
        };
        if let Some(index) = self.specs.iter().position(|s| s.id == refused.branch) {
            self.calls[index].refusal = Some(refused.reason.clone());
            self.dirty.insert(index);
        }
    }

    pub(super) fn history_event(&self, record: &HistoryRecord, at_ms: i64) -> Event {
        match *record {
            HistoryRecord::Status { to, reason, cause } => {
                let by = by_token(self.requested_by.as_deref());
                let (refused, cause) = match &self.refused_try {
                    Some(t) if to == Status::Aborting => (
                        format!("; branch `{}` refused its Try: {}", t.branch, t.reason),
                        // The refusing branch is the abort's cause, as a
                        // branch refusing its action is a saga's.
                        cause.or_else(|| self.specs.iter().position(|s| s.id == t.branch)),
                    ),
                    _ => (String::new(), cause),
                };
                self.event(
                    at_ms,
                    "status",
                    cause,
                    format!("{to}: {reason}{by}{refused}"),
                )
            }
            HistoryRecord::Branch { branch, op, to } => {
                let reason = match (&self.calls[branch].refusal, to) {
                    (Some(reason), BranchStatus::Refused) => format!(": {reason}"),
                    _ => String::new(),
                };
                self.event(
                    at_ms,
                    "branch",
                    Some(branch),
                    format!("{op} → {to}{reason}"),
                )
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
                        "branch `{id}` refused its {op} (HTTP 409: {}); a {op} must succeed, so dtx keeps retrying: fix the participant",
                        self.calls[branch]
                            .refusal
                            .as_deref()
                            .unwrap_or("no reason given")
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
