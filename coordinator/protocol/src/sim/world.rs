//! One run of the simulation from a seed: a transaction of a drawn mode and
//! shape, its coordinator (the real protocol core, a durable log written the
//! way the engine's driver writes it, crashes and recovery from that log),
//! the network between them (lost, duplicated, delayed and reordered
//! messages, unknown and "still working" answers, calls slower than the
//! request timeout, a 3PC partition), simulated participants, and a TCC
//! initiator. Events run in virtual time from one queue; the checks in
//! `checks` watch every step.

use super::checks::Checks;
use super::events::{Ev, Faults, Log, ReplyOrd};
use super::participants::Participant;
use super::rng::Rng;
use crate::machine::Transaction;
use crate::planted::Planted;
use crate::state::Decision;
use crate::step::{Action, HistoryRecord, Input, Step, Verdict};
use crate::timing::{Now, Timing};
use crate::wire::{Mode, Op, Reply};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Milliseconds one participant call may take before it is unknown.
pub(super) const REQUEST_TIMEOUT_MS: i64 = 1_000;
/// How long a crashed coordinator's transactions wait for a lease to expire.
const LEASE_MS: i64 = 3_000;
/// A 3PC participant's timeout: longer than any deadline drawn, as the
/// documented rule asks.
const PARTICIPANT_TIMEOUT_MS: i64 = 30_000;
/// How long after healing every transaction must be final.
const QUIESCENCE_BOUND_MS: i64 = 600_000;

/// The coordinator while it runs.
struct Coordinator {
    tx: Transaction,
    /// Branches answered since the last write (the driver writes their rows
    /// with the next history).
    dirty: BTreeSet<usize>,
}

/// One run.
pub(super) struct World {
    rng: Rng,
    pub(super) now: i64,
    seq: u64,
    queue: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    pub(super) mode: Mode,
    deps: Vec<Vec<usize>>,
    timing: Timing,
    planted: Planted,
    coordinator: Option<Coordinator>,
    incarnation: u32,
    pub(super) log: Log,
    pub(super) participants: Vec<Participant>,
    faults: Faults,
    healed: bool,
    tries_answered: Vec<Option<Reply>>,
    pub(super) checks: Checks,
    pub(super) partitioned: bool,
}

impl World {
    /// Draws a run from `seed`.
    pub(super) fn new(seed: u64, planted: Planted) -> World {
        let mut rng = Rng::new(seed);
        let mode =
            [Mode::Saga, Mode::Tcc, Mode::TwoPhase, Mode::ThreePhase][rng.range(0, 3) as usize];
        let n = rng.range(1, 4) as usize;
        let deps: Vec<Vec<usize>> = match mode {
            Mode::Saga if rng.chance(0.5) => (0..n)
                .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
                .collect(),
            // A dependency graph: each branch may depend on any earlier one.
            Mode::Saga => (0..n)
                .map(|i| (0..i).filter(|_| rng.chance(0.4)).collect())
                .collect(),
            Mode::Tcc | Mode::TwoPhase | Mode::ThreePhase => vec![],
        };
        let timing = Timing {
            deadline_at_ms: rng.range(2_000, 20_000),
            retry: crate::RetryPolicy {
                initial_ms: 100,
                max_ms: 2_000,
                multiplier: 2.0,
            },
            poll_interval_ms: 500,
            attention_after_ms: 10_000,
        };
        let calm = rng.chance(0.2);
        let level = if calm { 0.0 } else { rng.unit() * 0.3 };
        let faults = Faults {
            lose_request: level * rng.unit(),
            lose_reply: level * rng.unit(),
            duplicate: level * rng.unit(),
            unknown: level * rng.unit(),
            still_working: level * rng.unit(),
            slow: level * rng.unit() * 0.5,
            crash_at_step: if rng.chance(0.3) { 0.05 } else { 0.0 },
            partition: (mode == Mode::ThreePhase && rng.chance(0.1)).then(|| {
                let from = rng.range(0, 10_000);
                (
                    rng.range(0, n as i64 - 1) as usize,
                    from,
                    from + rng.range(35_000, 60_000),
                )
            }),
        };
        let participants = (0..n)
            .map(|_| Participant {
                refuses: rng.chance(0.15),
                read_only: mode == Mode::TwoPhase && rng.chance(0.2),
                ..Participant::default()
            })
            .collect();
        let heal_at = rng.range(20_000, 60_000);
        let mut tx = match mode {
            Mode::Saga => Transaction::new_saga(deps.clone()),
            Mode::Tcc => {
                let mut tx = Transaction::new_tcc();
                for _ in 0..n {
                    tx.add_branch();
                }
                tx
            }
            Mode::TwoPhase => Transaction::new_two_phase(n),
            Mode::ThreePhase => Transaction::new_three_phase(n),
        }
        .with_timing(timing.clone());
        tx.planted = planted.clone();
        let log = Log {
            status: tx.status(),
            statuses: tx.branch_statuses().collect(),
            failing_since: vec![None; n],
            flagged: false,
        };
        let checks = Checks::new(n, &timing);
        let mut world = World {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            mode,
            deps,
            timing,
            planted,
            coordinator: Some(Coordinator {
                tx,
                dirty: BTreeSet::new(),
            }),
            incarnation: 0,
            log,
            participants,
            faults,
            healed: false,
            tries_answered: vec![None; n],
            checks,
            partitioned: false,
        };
        world.partitioned = world.faults.partition.is_some();
        world.checks.trace(
            0,
            format!(
                "{mode} with {n} branches, deps {:?}, faults {:?}, heal at {heal_at}",
                world.deps, world.faults
            ),
        );
        world.schedule(heal_at, Ev::Heal);
        if mode == Mode::Tcc {
            // The initiator calls every Try itself; a Try may be lost, slow
            // (and arrive after the cancel), or answered too late to count.
            for branch in 0..n {
                if world.fault(world.faults.lose_request) {
                    continue;
                }
                let slow = world.fault(world.faults.slow);
                let delay = if slow {
                    world.rng.range(REQUEST_TIMEOUT_MS, 3 * REQUEST_TIMEOUT_MS)
                } else {
                    world.rng.range(1, 300)
                };
                let answered = !slow && !world.fault(world.faults.lose_reply);
                world.schedule(delay, Ev::TryDelivered { branch, answered });
            }
            world.schedule(REQUEST_TIMEOUT_MS, Ev::InitiatorDecides);
        }
        let step = world.coordinator.as_mut().expect("just built").tx.start();
        world.carry_out(step);
        world
    }

    /// Runs to the end: faults stop at the heal, then every transaction
    /// must be final within the bound.
    pub(super) fn run(&mut self) {
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if self.healed && at > self.heal_deadline() {
                break;
            }
            self.now = at;
            self.handle(ev);
            if self.log.status.is_final() && self.coordinator_is_idle() {
                break;
            }
        }
        let mut checks = std::mem::replace(&mut self.checks, Checks::new(0, &self.timing));
        checks.at_end(self);
        self.checks = checks;
    }

    fn heal_deadline(&self) -> i64 {
        self.checks.healed_at.unwrap_or(i64::MAX / 4) + QUIESCENCE_BOUND_MS
    }

    fn coordinator_is_idle(&self) -> bool {
        self.coordinator
            .as_ref()
            .is_some_and(|c| c.tx.status().is_final())
    }

    /// The coordinator's transaction, if it is up.
    pub(super) fn live(&self) -> Option<&Transaction> {
        self.coordinator.as_ref().map(|c| &c.tx)
    }

    /// The transaction rebuilt from the log, as recovery builds it.
    pub(super) fn recovered(&self) -> Transaction {
        Transaction::recover_planted(
            self.mode,
            self.log.status,
            self.log.statuses.clone(),
            self.deps.clone(),
            self.planted.clone(),
        )
        .with_timing(self.timing.clone())
        .with_attention_state(self.log.flagged, &self.log.failing_since)
    }

    fn schedule(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Whether a fault of probability `p` strikes (never after the heal).
    fn fault(&mut self, p: f64) -> bool {
        !self.healed && self.rng.chance(p)
    }

    fn cut_off(&self, branch: usize) -> bool {
        matches!(self.faults.partition, Some((b, from, to)) if b == branch && (from..to).contains(&self.now) && !self.healed)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                branch,
                op,
                incarnation,
                reply_at,
            } => {
                let reply = self.participants[branch].handle(self.mode, op);
                self.checks
                    .trace(self.now, format!("b{branch} gets {op} → {reply:?}"));
                self.after_participant_step(branch);
                if let Some(at) = reply_at {
                    self.schedule(
                        at,
                        Ev::Outcome {
                            branch,
                            op,
                            reply: ReplyOrd::of(reply),
                            incarnation,
                        },
                    );
                }
            }
            Ev::Outcome {
                branch,
                op,
                reply,
                incarnation,
            } => {
                if incarnation != self.incarnation || self.coordinator.is_none() {
                    return; // sent by a coordinator that has since crashed
                }
                let reply = reply.reply();
                self.checks.on_outcome(self.now, branch, op, reply);
                let now = Now {
                    ms: self.now,
                    jitter: self.rng.unit(),
                };
                let coordinator = self.coordinator.as_mut().expect("checked");
                coordinator.dirty.insert(branch);
                let step = coordinator
                    .tx
                    .handle(now, Input::Replied { branch, op, reply });
                self.carry_out(step);
            }
            Ev::Wake { incarnation } => {
                let due = self
                    .live()
                    .and_then(Transaction::poll_timeout)
                    .is_some_and(|t| t <= self.now);
                if incarnation == self.incarnation && due {
                    let now = Now {
                        ms: self.now,
                        jitter: self.rng.unit(),
                    };
                    let step = self
                        .coordinator
                        .as_mut()
                        .expect("checked")
                        .tx
                        .handle_timeout(now);
                    self.carry_out(step);
                }
            }
            Ev::Recover => {
                let mut tx = self.recovered();
                self.checks.trace(
                    self.now,
                    format!(
                        "recovered from the log: {:?} {:?}",
                        self.log.status, self.log.statuses
                    ),
                );
                self.checks.recovered(&self.log.failing_since);
                let step = tx.start();
                self.coordinator = Some(Coordinator {
                    tx,
                    dirty: BTreeSet::new(),
                });
                self.carry_out(step);
            }
            Ev::ParticipantTimer { branch } => {
                let p = &self.participants[branch];
                if p.committed > 0 || p.undone {
                    return;
                }
                let answer = (!self.cut_off(branch)).then(|| Decision::of(Some(self.log.status)));
                self.checks.trace(
                    self.now,
                    format!("b{branch} times out and hears {answer:?}"),
                );
                self.participants[branch].three_phase_timeout(answer);
                if answer == Some(Decision::Pending) {
                    self.schedule(
                        self.now + PARTICIPANT_TIMEOUT_MS / 2,
                        Ev::ParticipantTimer { branch },
                    );
                }
            }
            Ev::TryDelivered { branch, answered } => {
                let reply = self.participants[branch].try_reserve();
                self.checks.trace(
                    self.now,
                    format!("b{branch} gets the initiator's try → {reply:?}"),
                );
                if answered {
                    self.tries_answered[branch] = Some(reply);
                }
            }
            Ev::InitiatorDecides => {
                let all_yes = self
                    .tries_answered
                    .iter()
                    .all(|r| *r == Some(Reply::Success));
                let verdict = if all_yes && !self.rng.chance(0.1) {
                    Some(Verdict::Commit)
                } else if self.rng.chance(0.8) {
                    Some(Verdict::Abort)
                } else {
                    None // the initiator vanished: the deadline decides
                };
                self.checks
                    .trace(self.now, format!("the initiator asks {verdict:?}"));
                match (verdict, self.coordinator.as_mut()) {
                    (Some(verdict), Some(c)) => {
                        let now = Now {
                            ms: self.now,
                            jitter: 0.5,
                        };
                        let step = c.tx.handle(now, Input::Decide(verdict));
                        self.carry_out(step);
                    }
                    // The coordinator is down: the initiator asks again.
                    (Some(_), None) => self.schedule(self.now + 1_000, Ev::InitiatorDecides),
                    (None, _) => {}
                }
            }
            Ev::Heal => {
                self.healed = true;
                self.checks.healed_at = Some(self.now);
                self.checks.trace(self.now, "faults stop".into());
                if self.coordinator.is_none() {
                    self.schedule(self.now, Ev::Recover);
                }
            }
        }
    }

    /// A 3PC participant that now holds a yes or a pre-commit starts its timer.
    fn after_participant_step(&mut self, branch: usize) {
        let p = &self.participants[branch];
        if self.mode == Mode::ThreePhase
            && p.first_answer == Some(Reply::Success)
            && p.committed == 0
            && !p.undone
        {
            self.schedule(
                self.now + PARTICIPANT_TIMEOUT_MS,
                Ev::ParticipantTimer { branch },
            );
        }
    }

    /// Carries out a step the way the driver does: history first (with the
    /// rows of the branches answered since), then the calls; a crash may
    /// strike before the write or between the write and the calls.
    fn carry_out(&mut self, step: Step) {
        if self.fault(self.faults.crash_at_step) && self.rng.chance(0.5) {
            return self.crash("before writing the step");
        }
        if !step.history.is_empty() {
            self.persist(&step.history);
        }
        if !step.actions.is_empty() && self.fault(self.faults.crash_at_step) {
            return self.crash("after writing the step, before its calls");
        }
        for Action::Call { branch, op } in step.actions {
            self.checks.on_call(self.now, branch, op, self.log.status);
            self.send(branch, op);
        }
        if let Some(at) = self.live().and_then(Transaction::poll_timeout) {
            let incarnation = self.incarnation;
            self.schedule(at.max(self.now), Ev::Wake { incarnation });
        }
    }

    fn persist(&mut self, history: &[HistoryRecord]) {
        let coordinator = self
            .coordinator
            .as_mut()
            .expect("only a live coordinator writes");
        let tx = &coordinator.tx;
        let mut rows = std::mem::take(&mut coordinator.dirty);
        for record in history {
            match *record {
                HistoryRecord::Branch { branch, .. } | HistoryRecord::CallFailed { branch, .. } => {
                    rows.insert(branch);
                }
                HistoryRecord::Attention { branch, op, reason } => {
                    self.checks.on_attention(self.now, branch, op, reason);
                    self.log.flagged = true;
                }
                HistoryRecord::Status { .. } => {}
            }
        }
        let statuses: Vec<_> = tx.branch_statuses().collect();
        let failing: Vec<_> = tx.failing_since_ms().collect();
        for i in rows {
            self.log.statuses[i] = statuses[i];
            self.log.failing_since[i] = failing[i];
        }
        let before = self.log.status;
        self.log.status = tx.status();
        self.checks
            .on_write(self.now, before, self.log.status, history);
    }

    fn crash(&mut self, when: &str) {
        self.checks
            .trace(self.now, format!("the coordinator crashes {when}"));
        self.coordinator = None;
        self.incarnation += 1;
        self.checks.crashed(self.now);
        self.schedule(self.now + LEASE_MS, Ev::Recover);
    }

    /// Sends one call through the faulty network.
    fn send(&mut self, branch: usize, op: Op) {
        let incarnation = self.incarnation;
        let timed_out = |w: &World| w.now + REQUEST_TIMEOUT_MS;
        let unknown = Ev::Outcome {
            branch,
            op,
            reply: ReplyOrd::Unknown,
            incarnation,
        };
        if self.cut_off(branch) || self.fault(self.faults.lose_request) {
            self.checks
                .trace(self.now, format!("{op} to b{branch} is lost"));
            return self.schedule(timed_out(self), unknown);
        }
        if self.fault(self.faults.unknown) {
            // A 500 or a 3xx: the participant did nothing; unknown.
            let at = self.now + self.rng.range(1, 50);
            return self.schedule(at, unknown);
        }
        if self.fault(self.faults.still_working) {
            let at = self.now + self.rng.range(1, 50);
            let ev = Ev::Outcome {
                branch,
                op,
                reply: ReplyOrd::StillWorking,
                incarnation,
            };
            return self.schedule(at, ev);
        }
        let there = if self.fault(self.faults.slow) {
            self.rng.range(REQUEST_TIMEOUT_MS, 3 * REQUEST_TIMEOUT_MS)
        } else {
            self.rng.range(1, 300)
        };
        let back = self.rng.range(1, 300);
        let in_time = there + back < REQUEST_TIMEOUT_MS && !self.fault(self.faults.lose_reply);
        let reply_at = in_time.then_some(self.now + there + back);
        self.schedule(
            self.now + there,
            Ev::Deliver {
                branch,
                op,
                incarnation,
                reply_at,
            },
        );
        if !in_time {
            self.schedule(timed_out(self), unknown);
        }
        if self.fault(self.faults.duplicate) {
            let again = self.now + self.rng.range(1, 2_000);
            self.schedule(
                again,
                Ev::Deliver {
                    branch,
                    op,
                    incarnation,
                    reply_at: None,
                },
            );
        }
    }
}
