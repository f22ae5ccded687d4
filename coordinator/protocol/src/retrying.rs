//! What the core does with an answer that asks for another attempt: the
//! backoff of an unknown answer, the steady polling of "still working", the
//! sparse log of a failure run, and the operator flag of a phase-two call
//! that was refused or keeps failing.

use crate::branch::CallState;
use crate::machine::Transaction;
use crate::planted::Bug;
use crate::step::{AttentionReason, HistoryRecord, Step};
use crate::timing::Now;
use crate::wire::{Op, Reply};

impl Transaction {
    /// Plans the next attempt of a call that did not succeed, logs the
    /// failure run sparsely, and raises the operator flag when a phase-two
    /// call was refused or has failed for the whole attention window.
    pub(crate) fn schedule_retry(
        &mut self,
        now: Now,
        index: usize,
        op: Op,
        reply: Reply,
        step: &mut Step,
    ) {
        let timing = &self.timing;
        let still_working_is_a_failure = self.planted_bug(Bug::StillWorkingIsAFailure);
        let branch = &mut self.branches[index];
        if reply == Reply::StillWorking && !still_working_is_a_failure {
            // The participant is alive and busy: ask again at a steady pace.
            // It is not failing, so neither the backoff nor the operator's
            // window moves.
            let due_ms = now.ms + timing.poll_interval_ms as i64;
            branch.call = CallState::Waiting { op, due_ms };
            branch.failures = 0;
            branch.failing_since_ms = None;
            if !branch.polling {
                branch.polling = true;
                step.history.push(HistoryRecord::CallFailed {
                    branch: index,
                    op,
                    reply,
                    failures: 0,
                    retry_at_ms: due_ms,
                });
            }
            return;
        }
        branch.polling = false;
        branch.failures = branch.failures.saturating_add(1);
        let due_ms = now.ms + timing.retry.delay(branch.failures, now.jitter).as_millis() as i64;
        branch.call = CallState::Waiting { op, due_ms };
        if branch.failures.is_power_of_two() {
            step.history.push(HistoryRecord::CallFailed {
                branch: index,
                op,
                reply,
                failures: branch.failures,
                retry_at_ms: due_ms,
            });
        }
        if !op.is_phase_two() {
            return; // phase one ends at the deadline instead
        }
        let since = *branch.failing_since_ms.get_or_insert(now.ms);
        let failing_for = now.ms.saturating_sub(since).max(0) as u64;
        let reason = if reply == Reply::Refused {
            Some(AttentionReason::Refused)
        } else if failing_for >= timing.attention_after_ms {
            Some(AttentionReason::FailingFor { ms: failing_for })
        } else {
            None
        };
        if let (Some(reason), false) = (reason, self.flagged) {
            self.flagged = true;
            step.history.push(HistoryRecord::Attention {
                branch: index,
                op,
                reason,
            });
        }
    }
}
