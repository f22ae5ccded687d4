//! The rules a run must keep, checked as it goes (every call, every write,
//! every operator flag) and at its end (everything final, outcomes agree
//! with what the participants did, the log replays to the same state).
//! Each broken rule is a violation with a sentence; the known weakness of
//! 3PC under a partition is a finding, not a violation.

use super::world::World;
use crate::retry::RetryPolicy;
use crate::state::Status;
use crate::step::{AttentionReason, HistoryRecord};
use crate::wire::{Mode, Op, Reply};

/// A failure run of one branch's operation, as the network saw it.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    op: Option<Op>,
    /// Unknown answers (and phase-two refusals) in a row.
    failures: u32,
    /// When the first of them came, for a phase-two operation.
    since: Option<i64>,
    /// The last answer that asks for another attempt: (when, answer).
    last: Option<(i64, Reply)>,
}

/// What the checks saw.
pub(super) struct Checks {
    pub(super) violations: Vec<String>,
    pub(super) findings: Vec<String>,
    pub(super) lines: Vec<String>,
    pub(super) healed_at: Option<i64>,
    runs: Vec<Run>,
    retry: RetryPolicy,
    poll_interval_ms: i64,
    attention_after_ms: i64,
}

impl Checks {
    pub(super) fn new(branches: usize, timing: &crate::timing::Timing) -> Checks {
        Checks {
            violations: vec![],
            findings: vec![],
            lines: vec![],
            healed_at: None,
            runs: vec![Run::default(); branches],
            retry: timing.retry,
            poll_interval_ms: timing.poll_interval_ms as i64,
            attention_after_ms: timing.attention_after_ms as i64,
        }
    }

    pub(super) fn trace(&mut self, at: i64, line: String) {
        self.lines.push(format!("{at:>7} ms  {line}"));
    }

    fn violation(&mut self, at: i64, rule: &str, detail: String) {
        self.trace(at, format!("VIOLATION {rule}: {detail}"));
        self.violations.push(format!("{rule} at {at} ms: {detail}"));
    }

    /// An outcome reached the coordinator.
    pub(super) fn on_outcome(&mut self, at: i64, branch: usize, op: Op, reply: Reply) {
        self.trace(
            at,
            format!("the coordinator hears {reply:?} for {op} on b{branch}"),
        );
        let run = &mut self.runs[branch];
        if run.op != Some(op) {
            *run = Run {
                op: Some(op),
                ..Run::default()
            };
        }
        match reply {
            Reply::Success | Reply::ReadOnly => {
                *run = Run {
                    op: Some(op),
                    ..Run::default()
                }
            }
            Reply::Refused if !op.is_phase_two() => {
                *run = Run {
                    op: Some(op),
                    ..Run::default()
                }
            }
            Reply::StillWorking => {
                run.failures = 0;
                run.since = None;
                run.last = Some((at, reply));
            }
            Reply::Refused | Reply::Unknown => {
                run.failures += 1;
                if op.is_phase_two() {
                    run.since.get_or_insert(at);
                }
                run.last = Some((at, reply));
            }
        }
    }

    /// The coordinator sends a call, with the log saying `logged`.
    pub(super) fn on_call(&mut self, at: i64, branch: usize, op: Op, logged: Status) {
        self.trace(at, format!("the coordinator sends {op} to b{branch}"));
        if !op.is_phase_two() && !logged.is_phase_one() {
            self.violation(
                at,
                "phase_one_call_after_decision",
                format!("{op} sent to b{branch} while the log says {logged}"),
            );
        }
        let run = self.runs[branch];
        if let (Some(run_op), Some((failed_at, reply))) = (run.op, run.last)
            && run_op == op
        {
            let gap = at - failed_at;
            if reply == Reply::StillWorking && gap != self.poll_interval_ms {
                self.violation(
                    at,
                    "still_working_not_polled_steadily",
                    format!(
                        "{op} on b{branch} asked again {gap} ms after a 425, not every {} ms",
                        self.poll_interval_ms
                    ),
                );
            }
            let allowed = self.retry.delay(run.failures, 1.0).as_millis() as i64;
            if reply != Reply::StillWorking && gap > allowed {
                self.violation(
                    at,
                    "backoff_longer_than_the_policy",
                    format!("{op} on b{branch} retried {gap} ms after failure {} in a row; the policy allows {allowed} ms", run.failures),
                );
            }
        }
        self.runs[branch].last = None;
    }

    /// The core raised the operator flag.
    pub(super) fn on_attention(&mut self, at: i64, branch: usize, op: Op, reason: AttentionReason) {
        self.trace(at, format!("attention: b{branch} {op} {reason:?}"));
        let run = self.runs[branch];
        let justified = match reason {
            AttentionReason::Refused => run.last.is_some_and(|(_, r)| r == Reply::Refused),
            AttentionReason::FailingFor { .. } => {
                run.op == Some(op) && run.since.is_some_and(|s| at - s >= self.attention_after_ms)
            }
        };
        if !justified {
            self.violation(
                at,
                "attention_without_cause",
                format!("b{branch} {op} flagged ({reason:?}) but its failures seen were {run:?}"),
            );
        }
    }

    /// The coordinator wrote `history`, moving the logged status.
    pub(super) fn on_write(
        &mut self,
        at: i64,
        before: Status,
        after: Status,
        history: &[HistoryRecord],
    ) {
        self.trace(at, format!("log: {before} → {after} with {history:?}"));
        if before.is_final() && after != before {
            self.violation(
                at,
                "final_status_changed",
                format!("{before} became {after}"),
            );
        }
        if !before.is_phase_one() && after.is_phase_one() {
            self.violation(
                at,
                "decision_taken_back",
                format!("{before} became {after}"),
            );
        }
    }

    /// The coordinator crashed: the outcomes it was waiting for are gone.
    pub(super) fn crashed(&mut self, _at: i64) {
        for run in &mut self.runs {
            run.last = None;
        }
    }

    /// The coordinator recovered: what it knows of each failure run is what
    /// its log holds (an answer that ended a run may have been lost with the
    /// crash, before it was written).
    pub(super) fn recovered(&mut self, failing_since: &[Option<i64>]) {
        for (run, since) in self.runs.iter_mut().zip(failing_since) {
            if since.is_some() {
                run.since = *since;
            }
        }
    }

    pub(super) fn at_end(&mut self, world: &World) {
        let at = world.now;
        let status = world.log.status;
        let ps = &world.participants;
        for (b, p) in ps.iter().enumerate() {
            for misuse in &p.misuse {
                self.violation(at, "participant_misused", format!("b{b}: {misuse}"));
            }
            if p.done > 1 || p.committed > 1 || p.undo_effects > 1 {
                self.violation(at, "applied_twice", format!("b{b}: {p:?}"));
            }
        }
        let committed = |p: &super::participants::Participant| p.committed > 0;
        let undone_effect =
            |p: &super::participants::Participant| p.done == 0 || p.undo_effects == 1;
        let agrees = match (world.mode, status) {
            (Mode::Saga, Status::Committed) => {
                ps.iter().all(|p| p.done == 1 && p.undo_effects == 0)
            }
            (Mode::Saga | Mode::Tcc | Mode::TwoPhase, Status::Aborted) => {
                ps.iter().all(|p| !committed(p) && undone_effect(p))
            }
            (Mode::Tcc, Status::Committed) => {
                ps.iter().all(|p| committed(p) && p.undo_effects == 0)
            }
            (Mode::TwoPhase, Status::Committed) => ps
                .iter()
                .all(|p| committed(p) || (p.read_only && p.done == 0)),
            (Mode::ThreePhase, _) => {
                // Split: participants disagree with each other, or one that
                // decided by its timeout rule disagrees with the log.
                let decision = crate::state::Decision::of(Some(status));
                let mixed = (ps.iter().any(committed) && ps.iter().any(|p| p.undone))
                    || ps.iter().any(|p| {
                        (committed(p) && decision == crate::state::Decision::Abort)
                            || (p.undone && decision == crate::state::Decision::Commit)
                    });
                if mixed && world.partitioned {
                    self.findings.push("three_pc_partition_divergence".into());
                    true
                } else if status == Status::Committed {
                    ps.iter().all(committed)
                } else if status == Status::Aborted {
                    ps.iter().all(|p| !committed(p))
                } else {
                    !mixed
                }
            }
            _ => true, // not final: reported below
        };
        if !agrees {
            self.violation(
                at,
                "outcome_disagrees",
                format!("the log says {status}; participants {ps:?}"),
            );
        }
        if !status.is_final() && self.findings.is_empty() {
            self.violation(
                at,
                "not_final",
                format!("still {status} long after the faults stopped"),
            );
        }
        if let Some(live) = world.live()
            && status.is_final()
        {
            let replayed = world.recovered();
            let same = replayed.status() == live.status()
                && replayed.branch_statuses().eq(live.branch_statuses());
            if !same {
                self.violation(
                    at,
                    "log_does_not_replay",
                    format!(
                        "live {:?} {:?}, replayed {:?} {:?}",
                        live.status(),
                        live.branch_statuses().collect::<Vec<_>>(),
                        replayed.status(),
                        replayed.branch_statuses().collect::<Vec<_>>()
                    ),
                );
            }
        }
    }
}
