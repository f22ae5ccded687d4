//! Exhaustive exploration of small configurations: where the seeded runs
//! sample schedules, this visits every one. Two or three branches, every
//! combination of business answers, and at every point every choice: which
//! call reaches its participant, which answer comes back, which call is
//! lost (once per branch), when the timers (retries, the deadline) fire, a
//! crash of the coordinator (once) with recovery from its log, a 3PC
//! participant's timeout. States already seen are not explored again.
//!
//! Checked in every state: no phase-one call while the log holds a
//! decision, nothing a correct coordinator never sends; in every state
//! where the coordinator is done and nothing is in flight: the outcome
//! agrees with what the participants did, and the log replays to the live
//! state. The state counts are pinned: a change of the core that changes
//! them must say why.

use super::participants::Participant;
use crate::machine::Transaction;
use crate::planted::Planted;
use crate::state::{BranchStatus, Decision, Status};
use crate::step::{Action, HistoryRecord, Input, Step};
use crate::timing::{Now, Timing};
use crate::wire::{Mode, Op, Reply};
use std::collections::{BTreeSet, HashSet, VecDeque};

/// A call on its way: sent by coordinator incarnation `by`; `answer` once
/// the participant has handled it.
#[derive(Debug, Clone, PartialEq, Hash)]
struct InFlight {
    branch: usize,
    op: Op,
    by: u8,
    answer: Option<Reply>,
}

#[derive(Debug, Clone)]
struct State {
    tx: Option<Transaction>,
    incarnation: u8,
    dirty: BTreeSet<usize>,
    log_status: Status,
    log_statuses: Vec<BranchStatus>,
    participants: Vec<Participant>,
    in_flight: Vec<InFlight>,
    now: i64,
    crashes_left: u8,
    losses_left: Vec<u8>,
}

/// What one configuration explored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Explored {
    pub(super) states: usize,
    pub(super) violations: Vec<String>,
}

fn fingerprint(s: &State) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match &s.tx {
        Some(tx) => tx.hash_state(&mut h),
        None => 0u8.hash(&mut h),
    }
    (&s.dirty, s.log_status, &s.log_statuses, &s.participants).hash(&mut h);
    (&s.in_flight, &s.losses_left, s.crashes_left, s.incarnation).hash(&mut h);
    h.finish()
}

/// The configuration explored.
struct Config {
    mode: Mode,
    n: usize,
    deps: Vec<Vec<usize>>,
    planted: Planted,
}

impl Config {
    fn timing() -> Timing {
        Timing {
            deadline_at_ms: 10_000,
            retry: crate::RetryPolicy {
                initial_ms: 100,
                max_ms: 100,
                multiplier: 1.0,
            },
            poll_interval_ms: 100,
            attention_after_ms: 1_000_000,
        }
    }

    fn fresh(&self) -> Transaction {
        let mut tx = match self.mode {
            Mode::Saga => Transaction::new_saga(self.deps.clone()),
            Mode::TwoPhase => Transaction::new_two_phase(self.n),
            Mode::ThreePhase => Transaction::new_three_phase(self.n),
            Mode::Tcc => {
                unreachable!("TCC's phase one is the initiator's, explored by the seeded runs")
            }
        }
        .with_timing(Config::timing());
        tx.planted = self.planted.clone();
        tx
    }

    fn recovered(&self, s: &State) -> Transaction {
        let statuses = s.log_statuses.clone();
        Transaction::recover_planted(
            self.mode,
            s.log_status,
            statuses,
            self.deps.clone(),
            self.planted.clone(),
        )
        .with_timing(Config::timing())
    }
}

/// Explores every schedule of `mode` with `n` branches (saga dependencies
/// `deps`) and every combination of refusals, up to `max_states` states, with
/// `planted` defects switched on; stops at the first violation.
pub(super) fn explore(
    mode: Mode,
    n: usize,
    deps: Vec<Vec<usize>>,
    planted: Planted,
    max_states: usize,
) -> Explored {
    let cfg = Config {
        mode,
        n,
        deps,
        planted,
    };
    let mut out = Explored::default();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::new();
    for refusals in 0..(1u32 << n) {
        let mut tx = cfg.fresh();
        let mut s = State {
            log_status: tx.status(),
            log_statuses: tx.branch_statuses().collect(),
            tx: None,
            incarnation: 0,
            dirty: BTreeSet::new(),
            participants: (0..n)
                .map(|b| Participant {
                    refuses: refusals & (1 << b) != 0,
                    ..Participant::default()
                })
                .collect(),
            in_flight: vec![],
            now: 0,
            crashes_left: 1,
            losses_left: vec![1; n],
        };
        let step = tx.start();
        s.tx = Some(tx);
        carry_out(&mut s, step, &mut out);
        queue.push_back(s);
    }
    while let Some(s) = queue.pop_front() {
        if !seen.insert(fingerprint(&s)) {
            continue;
        }
        if seen.len() > max_states {
            out.violations
                .push(format!("more than {max_states} states"));
            break;
        }
        check_terminal(&cfg, &s, &mut out);
        if !out.violations.is_empty() {
            break;
        }
        for next in successors(&cfg, &s, &mut out) {
            queue.push_back(next);
        }
    }
    out.states = seen.len();
    out
}

fn successors(cfg: &Config, s: &State, out: &mut Explored) -> Vec<State> {
    let mut next = vec![];
    for (i, call) in s.in_flight.iter().enumerate() {
        // The request reaches the participant.
        if call.answer.is_none() {
            let mut t = s.clone();
            let reply = t.participants[call.branch].handle(cfg.mode, call.op);
            t.in_flight[i].answer = Some(reply);
            next.push(t);
        }
        // The answer reaches the coordinator that sent the call.
        if let Some(reply) = call.answer {
            let mut t = s.clone();
            let call = t.in_flight.remove(i);
            deliver(&mut t, &call, reply, out);
            next.push(t);
        }
        // The request or its answer is lost: the coordinator hears unknown.
        if s.losses_left[call.branch] > 0 {
            let mut t = s.clone();
            t.losses_left[call.branch] -= 1;
            let call = t.in_flight.remove(i);
            deliver(&mut t, &call, Reply::Unknown, out);
            next.push(t);
        }
    }
    if let Some(tx) = &s.tx {
        // Time passes to the next timer (a retry, a poll, the deadline).
        if let Some(at) = tx.poll_timeout() {
            let mut t = s.clone();
            t.now = t.now.max(at);
            let now = Now::at(t.now);
            let step = t.tx.as_mut().expect("live").handle_timeout(now);
            carry_out(&mut t, step, out);
            next.push(t);
        }
        if s.crashes_left > 0 && !tx.status().is_final() {
            let mut t = s.clone();
            t.crashes_left -= 1;
            t.tx = None;
            t.incarnation += 1;
            t.dirty.clear();
            next.push(t);
        }
    } else {
        let mut t = s.clone();
        let mut tx = cfg.recovered(&t);
        let step = tx.start();
        t.tx = Some(tx);
        carry_out(&mut t, step, out);
        next.push(t);
    }
    // A 3PC participant that voted yes or pre-committed times out and asks
    // the coordinator, which answers from its log (no partition here).
    if cfg.mode == Mode::ThreePhase {
        for b in 0..s.participants.len() {
            let p = &s.participants[b];
            let waiting = p.first_answer == Some(Reply::Success) && p.committed == 0 && !p.undone;
            let answer = Decision::of(Some(s.log_status));
            if waiting && answer != Decision::Pending {
                let mut t = s.clone();
                t.participants[b].three_phase_timeout(Some(answer));
                next.push(t);
            }
        }
    }
    next
}

fn deliver(s: &mut State, call: &InFlight, reply: Reply, out: &mut Explored) {
    if call.by != s.incarnation {
        return; // its coordinator crashed; nobody hears it
    }
    let Some(tx) = s.tx.as_mut() else { return };
    s.dirty.insert(call.branch);
    let now = Now::at(s.now);
    let step = tx.handle(
        now,
        Input::Replied {
            branch: call.branch,
            op: call.op,
            reply,
        },
    );
    carry_out(s, step, out);
}

fn carry_out(s: &mut State, step: Step, out: &mut Explored) {
    let tx = s.tx.as_ref().expect("a live coordinator");
    if !step.history.is_empty() {
        let mut rows = std::mem::take(&mut s.dirty);
        for record in &step.history {
            if let HistoryRecord::Branch { branch, .. } | HistoryRecord::CallFailed { branch, .. } =
                record
            {
                rows.insert(*branch);
            }
        }
        let statuses: Vec<_> = tx.branch_statuses().collect();
        for i in rows {
            s.log_statuses[i] = statuses[i];
        }
        if s.log_status.is_final() && tx.status() != s.log_status {
            out.violations.push(format!(
                "final status {} became {}",
                s.log_status,
                tx.status()
            ));
        }
        s.log_status = tx.status();
    }
    for Action::Call { branch, op } in step.actions {
        if !op.is_phase_two() && !s.log_status.is_phase_one() {
            out.violations.push(format!(
                "{op} to b{branch} while the log says {}",
                s.log_status
            ));
        }
        s.in_flight.push(InFlight {
            branch,
            op,
            by: s.incarnation,
            answer: None,
        });
    }
}

fn check_terminal(cfg: &Config, s: &State, out: &mut Explored) {
    for (b, p) in s.participants.iter().enumerate() {
        for misuse in &p.misuse {
            out.violations.push(format!("b{b}: {misuse}"));
        }
    }
    let Some(tx) = &s.tx else { return };
    if !tx.status().is_final() || !s.in_flight.is_empty() {
        return;
    }
    let ps = &s.participants;
    let agrees = match (cfg.mode, tx.status()) {
        (Mode::Saga, Status::Committed) => ps.iter().all(|p| p.done == 1 && p.undo_effects == 0),
        (Mode::ThreePhase | Mode::TwoPhase, Status::Committed) => {
            ps.iter().all(|p| p.committed == 1)
        }
        (_, Status::Aborted) => ps
            .iter()
            .all(|p| p.committed == 0 && (p.done == 0 || p.undo_effects == 1)),
        _ => true,
    };
    if !agrees {
        out.violations
            .push(format!("{} but participants {ps:?}", tx.status()));
    }
    let replayed = cfg.recovered(s);
    if replayed.status() != tx.status() || !replayed.branch_statuses().eq(tx.branch_statuses()) {
        out.violations.push(format!(
            "the log {:?} {:?} does not replay to {:?}",
            s.log_status, s.log_statuses, tx
        ));
    }
}
