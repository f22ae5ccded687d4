//! The availability figures on synthetic runs: a client answered every
//! `every` milliseconds, faults placed by hand.

use dtx_protocol::Mode;

use super::*;
use crate::harness::nemesis::PlannedFault;

fn attempt(at_ms: u64, told: Told) -> Attempt {
    Attempt {
        at_ms,
        mode: Mode::Saga,
        order: None,
        told,
    }
}

/// Orders confirmed every `every` ms in `[from, to)`.
fn confirmed(from: u64, to: u64, every: u64) -> Vec<Attempt> {
    (from..to)
        .step_by(every as usize)
        .map(|t| attempt(t, Told::Settled(OrderStatus::Confirmed)))
        .collect()
}

fn fault(kind: FaultKind, began_ms: u64, ended_ms: u64) -> AppliedFault {
    AppliedFault {
        planned: PlannedFault {
            at_ms: began_ms,
            kind,
            target: Node::Coordinator1,
            hold_ms: ended_ms - began_ms,
        },
        began_ms,
        ended_ms,
        failover_ms: None,
        note: None,
        error: None,
    }
}

fn measured(attempts: &[Attempt], faults: &[AppliedFault], workload_ms: u64) -> Availability {
    measure(attempts, faults, workload_ms, Target::for_kind)
}

#[test]
fn the_healthy_rate_is_measured_after_the_warm_up_and_before_the_first_fault() {
    // 20 per second until 5 s, then 40 per second: only the first counts.
    let mut attempts = confirmed(0, 5000, 50);
    attempts.extend(confirmed(5000, 10_000, 25));
    let figures = measured(
        &attempts,
        &[fault(FaultKind::KillParticipant, 5000, 6000)],
        10_000,
    );
    assert_eq!(
        (figures.healthy_from_ms, figures.healthy_to_ms),
        (1000, 5000)
    );
    assert_eq!(figures.healthy_rate, 20.0);
}

#[test]
fn without_faults_the_whole_run_is_healthy_and_no_kind_is_reported() {
    let figures = measured(&confirmed(0, 10_000, 100), &[], 10_000);
    assert_eq!(
        (figures.healthy_from_ms, figures.healthy_to_ms),
        (1000, 10_000)
    );
    assert_eq!(figures.healthy_rate, 10.0);
    assert!(figures.strikes.is_empty() && figures.kinds.is_empty());
}

#[test]
fn cancelled_orders_complete_and_unanswered_or_unsettled_ones_do_not() {
    let told = [
        Told::Settled(OrderStatus::Confirmed),
        Told::Settled(OrderStatus::Cancelled),
        Told::Settled(OrderStatus::Other),
        Told::Settled(OrderStatus::Pending),
        Told::Unsettled,
        Told::Refused(503),
        Told::NoAnswer,
    ];
    let completed: Vec<bool> = told
        .into_iter()
        .map(|t| completed(&attempt(0, t)))
        .collect();
    assert_eq!(completed, [true, true, false, false, false, false, false]);
}

#[test]
fn a_fault_with_no_completed_order_has_ratio_zero_and_a_gap_spanning_it() {
    // Every 100 ms, except from 4 s to 7 s while the fault holds.
    let mut attempts = confirmed(0, 4000, 100);
    attempts.extend(
        (4000..7000)
            .step_by(100)
            .map(|t| attempt(t, Told::NoAnswer)),
    );
    attempts.extend(confirmed(7000, 15_000, 100));
    // The coordinator-loss shape, with a 3 s bound on the gap.
    let target = Target {
        min_ratio: Some(0.8),
        max_gap_ms: Some(3000),
        back_to_full_rate: false,
    };
    let figures = measure(
        &attempts,
        &[fault(FaultKind::KillCoordinator, 4000, 7000)],
        15_000,
        |_| Some(target),
    );
    let strike = &figures.strikes[0];
    assert_eq!(
        (strike.completed, strike.rate, strike.ratio),
        (0, 0.0, Some(0.0))
    );
    // From the last completion before (3.9 s) to the first after (7 s).
    assert_eq!(strike.longest_gap_ms, 3100);
    assert_eq!(strike.to_full_rate_ms, Some(0));
    let kind = figures.kind(FaultKind::KillCoordinator).expect("it struck");
    assert_eq!(kind.met(), Some(false));
    assert_eq!(kind.misses.len(), 2, "{:?}", kind.misses);
}

#[test]
fn a_fault_at_the_very_end_leaves_its_gap_open_to_the_end_and_no_return_to_full_rate() {
    let attempts = confirmed(0, 8000, 100);
    let figures = measured(
        &attempts,
        &[fault(FaultKind::RestartPostgres, 8000, 9500)],
        10_000,
    );
    let strike = &figures.strikes[0];
    assert_eq!(strike.longest_gap_ms, 10_000 - 7900);
    assert_eq!(strike.to_full_rate_ms, None);
    // No target for this kind: reported, not judged.
    let kind = figures.kind(FaultKind::RestartPostgres).expect("it struck");
    assert_eq!((kind.target, kind.met()), (None, None));
}

#[test]
fn a_half_rate_during_the_fault_is_a_ratio_of_one_half() {
    let mut attempts = confirmed(0, 4000, 100);
    attempts.extend(confirmed(4000, 8000, 200));
    attempts.extend(confirmed(8000, 14_000, 100));
    let figures = measured(
        &attempts,
        &[fault(FaultKind::PauseCoordinator, 4000, 8000)],
        14_000,
    );
    let strike = &figures.strikes[0];
    assert_eq!((strike.completed, strike.ratio), (20, Some(0.5)));
    assert_eq!(strike.longest_gap_ms, 200);
}

#[test]
fn the_full_rate_is_back_at_the_first_window_at_ninety_percent() {
    // Healthy 10/s; after the fault ends at 5 s, 2/s until 8 s, then 10/s.
    let mut attempts = confirmed(0, 4000, 100);
    attempts.extend(confirmed(4000, 8000, 500));
    attempts.extend(confirmed(8000, 14_000, 100));
    let figures = measured(
        &attempts,
        &[fault(FaultKind::KillParticipant, 4000, 5000)],
        14_000,
    );
    // A 2 s window needs 18 completions: [7.75 s, 9.75 s) is the first
    // that holds them (8.0 to 9.7 s), 2.75 s after the end.
    assert_eq!(figures.strikes[0].to_full_rate_ms, Some(2750));
}

#[test]
fn a_stall_just_after_the_fault_counts_as_its_gap() {
    // Healthy every 100 ms; the fault ends at 5 s and a 2 s stall follows.
    let mut attempts = confirmed(0, 5000, 100);
    attempts.extend(confirmed(7000, 14_000, 100));
    let figures = measured(
        &attempts,
        &[fault(FaultKind::KillCoordinator, 4000, 5000)],
        14_000,
    );
    assert_eq!(figures.strikes[0].longest_gap_ms, 2100);
}

#[test]
fn several_strikes_of_a_kind_pool_their_rate_and_report_the_worst_of_the_rest() {
    // Strike one: half rate, short gap, back at once. Strike two: nothing
    // completes for 3 s, and the run ends 1 s after it.
    let mut attempts = confirmed(0, 3000, 100);
    attempts.extend(confirmed(3000, 5000, 200));
    attempts.extend(confirmed(5000, 9000, 100));
    let faults = [
        fault(FaultKind::PartitionCoordinator, 3000, 5000),
        fault(FaultKind::PartitionCoordinator, 9000, 12_000),
    ];
    let figures = measured(&attempts, &faults, 13_000);
    let kind = figures
        .kind(FaultKind::PartitionCoordinator)
        .expect("it struck");
    assert_eq!(kind.strikes, 2);
    // 10 orders in strike one's 2 s, none in strike two's 3 s: 2 a second
    // over the 5 s, a fifth of the healthy 10.
    assert_eq!((kind.rate_during, kind.ratio), (2.0, Some(0.2)));
    assert_eq!(kind.worst_strike_ratio, Some(0.0));
    assert_eq!(kind.longest_gap_ms, 13_000 - 8900);
    assert_eq!(kind.to_full_rate_ms, None);
    assert_eq!(figures.strikes[0].ratio, Some(0.5));
}

#[test]
fn kinds_are_judged_apart() {
    let mut attempts = confirmed(0, 4000, 100);
    attempts.extend(confirmed(6000, 20_000, 100));
    let faults = [
        fault(FaultKind::KillParticipant, 4000, 6000),
        fault(FaultKind::KillCoordinator, 10_000, 12_000),
    ];
    let figures = measured(&attempts, &faults, 20_000);
    let coordinator = figures.kind(FaultKind::KillCoordinator).expect("it struck");
    assert_eq!(coordinator.met(), Some(true), "{:?}", coordinator.misses);
    assert_eq!(coordinator.ratio, Some(1.0));
    let participant = figures.kind(FaultKind::KillParticipant).expect("it struck");
    assert_eq!((participant.ratio, participant.met()), (Some(0.0), None));
}

#[test]
fn no_healthy_rate_cannot_meet_a_ratio_target() {
    let attempts = confirmed(3000, 10_000, 100);
    let figures = measured(
        &attempts,
        &[fault(FaultKind::KillCoordinator, 1500, 2500)],
        10_000,
    );
    let kind = figures.kind(FaultKind::KillCoordinator).expect("it struck");
    assert_eq!((figures.healthy_rate, kind.ratio), (0.0, None));
    assert!(kind.misses.iter().any(|m| m.contains("no healthy rate")));
}

#[test]
fn the_primary_loss_target_wants_the_gap_bounded_and_the_full_rate_back() {
    // Nothing completes from 3.9 s to 16 s: a gap of 12.1 s.
    let mut attempts = confirmed(0, 4000, 100);
    attempts.extend(confirmed(16_000, 30_000, 100));
    let faults = [fault(FaultKind::RestartPostgres, 4000, 6000)];
    let judged = |failover: u64| {
        let target = Target::primary_loss(Duration::from_secs(failover));
        measure(&attempts, &faults, 30_000, |_| Some(target)).kinds[0].clone()
    };
    let within = judged(10);
    assert_eq!(within.target.and_then(|t| t.max_gap_ms), Some(15_000));
    assert_eq!(within.longest_gap_ms, 12_100);
    // The first 2 s window with 18 completions starts at 15.75 s.
    assert_eq!(within.to_full_rate_ms, Some(9750));
    assert_eq!(within.met(), Some(true), "{:?}", within.misses);
    let beyond = judged(5);
    assert_eq!(
        beyond.misses,
        ["a gap of 12.1 s without a completed order, over 10.0 s"]
    );
}

#[test]
fn completions_are_counted_per_second_of_the_workload() {
    let mut attempts = confirmed(0, 2000, 250);
    attempts.push(attempt(2500, Told::NoAnswer));
    assert_eq!(per_second(&attempts, 2500), vec![4, 4, 0]);
}
