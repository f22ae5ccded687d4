//! The simulated participants: one per branch, each keeping its own state
//! the way a real participant built on the SDK would, and counting how many
//! times each operation took effect.
//!
//! - saga and TCC: the sub-transaction barrier (a duplicate answers as the
//!   first call did; an undo before its forward step is a null
//!   compensation; a forward step after its undo is refused: suspension);
//! - 2PC: an XA-like prepared state (prepare holds, commit or rollback
//!   resolves it, rollback without prepare succeeds and fences out a late
//!   prepare);
//! - 3PC: the SDK's state table and timeout rule, in [`super::three_phase`].
//!
//! What no correct coordinator can cause (a confirm without its try, a
//! commit after a rollback, ...) is reported as a violation where it
//! happens; whether the end states agree with the coordinator's outcome is
//! checked in [`super::invariants`].

use std::collections::BTreeMap;
use std::time::Duration;

use dtx_protocol::{Mode, Op};
use dtx_tests::harness::checker::ViolationKind;
use tokio::time::Instant;

use super::invariants::Kind;
use super::world::Planted;

/// One participant: a branch of a transaction, as `(gid, branch id)`.
pub type Key = (String, String);

/// An operation reaching a participant: the coordinator's, or the
/// initiator's TCC Try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOp {
    /// A call the coordinator makes.
    Coordinator(Op),
    /// The TCC initiator's own Try.
    Try,
}

impl SimOp {
    /// The operation's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SimOp::Coordinator(op) => op.as_str(),
            SimOp::Try => "try",
        }
    }
}

/// How the business behind a branch answers, drawn once per branch.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Refuses its forward step (action, try, prepare, can_commit): 409.
    pub refuses: bool,
    /// 2PC: votes read-only.
    pub read_only: bool,
    /// 3PC: refuses PreCommit.
    pub refuses_pre_commit: bool,
    /// 3PC: how long it waits in `voted_yes` before asking.
    pub uncertain_timeout: Duration,
    /// 3PC: how long it waits in `pre_committed` before asking.
    pub precommit_timeout: Duration,
    /// When the network cuts it off from everybody, if ever.
    pub partition: Option<(Duration, Duration)>,
}

/// A barrier row of saga and TCC participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Succeeded,
    Refused,
    /// Written by an undo that arrived first: the forward step must not run.
    NeverRan,
}

/// What a 2PC or 3PC participant holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Nothing arrived yet.
    Nothing,
    /// 2PC: prepared. 3PC: voted yes.
    Prepared,
    /// 2PC: voted read-only.
    ReadOnly,
    /// 2PC: voted no.
    VotedNo,
    /// 3PC: pre-committed.
    PreCommitted,
    /// Committed.
    Committed,
    /// Rolled back or aborted (3PC: also a no vote).
    Undone,
}

/// Who decided a 3PC participant's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// A call of the coordinator, or its answer to the termination query.
    Coordinator,
    /// The participant alone, by the timeout rule, the coordinator being
    /// unreachable (or seeming so).
    TimeoutRule,
}

/// One simulated participant.
#[derive(Debug)]
pub struct Participant {
    pub(crate) mode: Mode,
    pub(crate) behaviour: Behaviour,
    /// Saga: the branches whose actions depend on this one's.
    pub(crate) dependents: Vec<String>,
    rows: BTreeMap<&'static str, Row>,
    pub(crate) held: Held,
    /// How many times each operation took effect.
    pub(crate) effects: BTreeMap<&'static str, u32>,
    /// 3PC: who decided, once decided.
    pub(crate) decided_by: Option<DecidedBy>,
    /// Bumped at every change of `held`; a 3PC watchdog armed for one
    /// state gives up once it moved on.
    pub(crate) version: u64,
    /// When the run began, for the partition window.
    pub(crate) epoch: Instant,
}

/// The answer to one call, before the network has its say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// The HTTP status.
    pub status: u16,
    /// A 2PC read-only vote (`dtx-vote: read-only`).
    pub read_only: bool,
    /// 3PC: the participant is now in doubt and arms its watchdog for this.
    pub in_doubt_for: Option<Duration>,
}

impl Handled {
    pub(crate) fn status(status: u16) -> Handled {
        Handled {
            status,
            read_only: false,
            in_doubt_for: None,
        }
    }
}

/// Problems a participant saw, to report with its key.
pub type Problems = Vec<(Kind, String)>;

impl Participant {
    /// A participant that has seen nothing yet.
    pub fn new(mode: Mode, behaviour: Behaviour, dependents: Vec<String>) -> Participant {
        Participant {
            mode,
            behaviour,
            dependents,
            rows: BTreeMap::new(),
            held: Held::Nothing,
            effects: BTreeMap::new(),
            decided_by: None,
            version: 0,
            epoch: Instant::now(),
        }
    }

    /// Whether the network cuts this participant off at `now`.
    pub fn cut_off(&self, now: Instant) -> bool {
        self.behaviour.partition.is_some_and(|(from, to)| {
            let at = now.duration_since(self.epoch);
            at >= from && at < to
        })
    }

    /// How many times `op` took effect.
    pub fn effect(&self, op: &str) -> u32 {
        self.effects.get(op).copied().unwrap_or(0)
    }

    /// Whether an undo (compensate, cancel) arrived at all.
    pub fn has_row(&self, op: &str) -> bool {
        self.rows.contains_key(op)
    }

    pub(crate) fn took_effect(&mut self, op: &'static str, problems: &mut Problems) {
        let count = self.effects.entry(op).or_insert(0);
        *count += 1;
        if *count == 2 {
            problems.push((
                Kind::Harness(ViolationKind::AppliedTwice),
                format!("{op} took effect twice"),
            ));
        }
    }

    pub(crate) fn set_held(&mut self, held: Held) {
        self.held = held;
        self.version += 1;
    }

    /// Handles one call that reached the participant.
    pub fn handle(
        &mut self,
        op: SimOp,
        planted: Option<Planted>,
        problems: &mut Problems,
    ) -> Handled {
        let barrier_off = planted == Some(Planted::BarrierOff);
        let no_suspension = planted == Some(Planted::NoSuspension);
        match (self.mode, op) {
            (Mode::Saga, SimOp::Coordinator(Op::Action)) | (Mode::Tcc, SimOp::Try) => {
                self.forward(op.name(), barrier_off, no_suspension, problems)
            }
            (Mode::Saga, SimOp::Coordinator(Op::Compensate)) => {
                self.undo("compensate", "action", barrier_off, problems)
            }
            (Mode::Tcc, SimOp::Coordinator(Op::Cancel)) => {
                if self.rows.contains_key("confirm") {
                    problems.push((Kind::ConfirmAndCancel, "cancel after confirm".into()));
                    return Handled::status(409);
                }
                self.undo("cancel", "try", barrier_off, problems)
            }
            (Mode::Tcc, SimOp::Coordinator(Op::Confirm)) => self.confirm(barrier_off, problems),
            (Mode::TwoPhase, SimOp::Coordinator(op)) => {
                self.xa(op, barrier_off, no_suspension, problems)
            }
            (Mode::ThreePhase, SimOp::Coordinator(op)) => {
                self.three_phase(op, barrier_off, problems)
            }
            (mode, op) => {
                problems.push((
                    Kind::WrongOperation,
                    format!("{} sent to a {mode} participant", op.name()),
                ));
                Handled::status(400)
            }
        }
    }

    /// A forward step behind the barrier.
    fn forward(
        &mut self,
        op: &'static str,
        barrier_off: bool,
        no_suspension: bool,
        problems: &mut Problems,
    ) -> Handled {
        match self.rows.get(op) {
            Some(Row::Succeeded) if !barrier_off => return Handled::status(200),
            Some(Row::Refused) if !barrier_off => return Handled::status(409),
            // Suspension: the undo came first.
            Some(Row::NeverRan) if !no_suspension => return Handled::status(409),
            _ => {}
        }
        if self.behaviour.refuses {
            self.rows.insert(op, Row::Refused);
            return Handled::status(409);
        }
        self.rows.insert(op, Row::Succeeded);
        self.took_effect(op, problems);
        Handled::status(200)
    }

    /// An undo behind the barrier: a duplicate, a null compensation, or
    /// the undo of a forward step that took effect.
    fn undo(
        &mut self,
        op: &'static str,
        forward: &'static str,
        barrier_off: bool,
        problems: &mut Problems,
    ) -> Handled {
        let again = self.rows.contains_key(op);
        if again && !barrier_off {
            return Handled::status(200);
        }
        self.rows.insert(op, Row::Succeeded);
        match self.rows.get(forward) {
            None => {
                self.rows.insert(forward, Row::NeverRan);
            }
            Some(Row::Refused | Row::NeverRan) => {}
            Some(Row::Succeeded) => self.took_effect(op, problems),
        }
        Handled::status(200)
    }

    fn confirm(&mut self, barrier_off: bool, problems: &mut Problems) -> Handled {
        if self.rows.contains_key("confirm") && !barrier_off {
            return Handled::status(200);
        }
        match (self.rows.get("try"), self.rows.get("cancel")) {
            (Some(Row::Succeeded), None) => {
                self.rows.insert("confirm", Row::Succeeded);
                self.took_effect("confirm", problems);
                Handled::status(200)
            }
            (_, Some(_)) => {
                problems.push((Kind::ConfirmAndCancel, "confirm after cancel".into()));
                Handled::status(409)
            }
            _ => {
                problems.push((
                    Kind::Harness(ViolationKind::ConfirmWithoutTry),
                    "confirm without a successful try".into(),
                ));
                Handled::status(409)
            }
        }
    }

    /// The XA-like 2PC participant.
    fn xa(
        &mut self,
        op: Op,
        barrier_off: bool,
        no_suspension: bool,
        problems: &mut Problems,
    ) -> Handled {
        let mixed = Kind::Harness(ViolationKind::MixedTwoPhaseOutcome);
        match (op, self.held) {
            (Op::Prepare, Held::Nothing) => self.vote(problems),
            // The planted bug: a prepare after its rollback holds again.
            (Op::Prepare, Held::Undone) if no_suspension => self.vote(problems),
            (Op::Prepare, Held::Prepared) => {
                if barrier_off {
                    self.took_effect("prepare", problems);
                }
                Handled::status(200)
            }
            (Op::Prepare, Held::ReadOnly) => Handled {
                read_only: true,
                ..Handled::status(200)
            },
            (Op::Prepare, Held::Committed) => Handled::status(200),
            // Voted no, or rolled back before this prepare arrived.
            (Op::Prepare, _) => Handled::status(409),
            (Op::Commit, Held::Prepared) => {
                self.set_held(Held::Committed);
                self.took_effect("commit", problems);
                Handled::status(200)
            }
            (Op::Commit, Held::Committed) => {
                if barrier_off {
                    self.took_effect("commit", problems);
                }
                Handled::status(200)
            }
            (Op::Commit, Held::Undone) => {
                problems.push((mixed, "commit after rollback".into()));
                Handled::status(409)
            }
            (Op::Commit, _) => {
                problems.push((
                    Kind::Harness(ViolationKind::ConfirmWithoutTry),
                    format!("commit in state {:?}", self.held),
                ));
                Handled::status(409)
            }
            (Op::Rollback, Held::Prepared) => {
                self.set_held(Held::Undone);
                self.took_effect("rollback", problems);
                Handled::status(200)
            }
            (Op::Rollback, Held::Committed) => {
                problems.push((mixed, "rollback after commit".into()));
                Handled::status(409)
            }
            (Op::Rollback, Held::Nothing | Held::VotedNo) => {
                // Null rollback; a prepare arriving later is refused.
                self.set_held(Held::Undone);
                Handled::status(200)
            }
            (Op::Rollback, _) => Handled::status(200),
            (op, _) => {
                problems.push((
                    Kind::WrongOperation,
                    format!("{op} sent to a 2pc participant"),
                ));
                Handled::status(400)
            }
        }
    }

    /// A 2PC vote by the business: no, read-only, or yes (prepared).
    fn vote(&mut self, problems: &mut Problems) -> Handled {
        if self.behaviour.refuses {
            self.set_held(Held::VotedNo);
            Handled::status(409)
        } else if self.behaviour.read_only {
            self.set_held(Held::ReadOnly);
            Handled {
                read_only: true,
                ..Handled::status(200)
            }
        } else {
            self.set_held(Held::Prepared);
            self.took_effect("prepare", problems);
            Handled::status(200)
        }
    }
}

/// Every participant of a run.
#[derive(Debug, Default)]
pub struct Participants {
    map: BTreeMap<Key, Participant>,
}

impl Participants {
    /// Adds the participant of branch `key`.
    pub fn insert(&mut self, key: Key, participant: Participant) {
        self.map.insert(key, participant);
    }

    /// The participant of branch `key`.
    pub fn get(&self, key: &Key) -> Option<&Participant> {
        self.map.get(key)
    }

    /// The participant of branch `key`, to change it.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Participant> {
        self.map.get_mut(key)
    }

    /// The participants of transaction `gid`, by branch id.
    pub fn of(&self, gid: &str) -> impl Iterator<Item = (&str, &Participant)> {
        self.map
            .iter()
            .filter(move |((g, _), _)| g == gid)
            .map(|((_, b), p)| (b.as_str(), p))
    }

    /// Handles a call that reached participant `key`; `None` when no such
    /// participant exists (a call to a branch the plan never made).
    pub fn handle(
        &mut self,
        key: &Key,
        op: SimOp,
        planted: Option<Planted>,
        problems: &mut Problems,
    ) -> Option<Handled> {
        if op == SimOp::Coordinator(Op::Compensate) {
            self.check_compensation_order(key, problems);
        }
        Some(self.map.get_mut(key)?.handle(op, planted, problems))
    }

    /// A saga compensates in reverse dependency order: when the first
    /// compensation of a branch arrives, every branch depending on it whose
    /// action took effect must have been compensated already.
    fn check_compensation_order(&self, key: &Key, problems: &mut Problems) {
        let Some(p) = self.map.get(key) else { return };
        if p.has_row("compensate") {
            return;
        }
        for dependent in &p.dependents {
            let Some(d) = self.map.get(&(key.0.clone(), dependent.clone())) else {
                continue;
            };
            if d.effect("action") > 0 && !d.has_row("compensate") {
                problems.push((
                    Kind::CompensationOrder,
                    format!(
                        "{} compensated before {dependent}, which depends on it and ran",
                        key.1
                    ),
                ));
            }
        }
    }
}
