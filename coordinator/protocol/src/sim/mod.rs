//! Deterministic simulation of the protocol core: thousands of seeded runs,
//! each a whole transaction with its participants, a faulty network, crashes
//! of the coordinator with recovery from its log, a TCC initiator and, for
//! 3PC, partitions; every rule checked as the run goes. A failing seed prints
//! the command that replays it and the trace.
//!
//! - `world`: one run; `participants`: simulated participants with barrier
//!   semantics, XA-like prepared state and the 3PC timeout rule; `checks`:
//!   the rules; `rng`: the seeded generator.
//! - The engine-level simulation (the real driver, store and lease code over
//!   a fake transport and paused time) lives in `dtx-coordinator`'s tests.
//!
//! Run more seeds, or replay one:
//! ```text
//! DTX_SIM_SEEDS=1000000 cargo test --release -p dtx-protocol --lib sim::
//! DTX_SIM_SEED=4242 cargo test -p dtx-protocol --lib sim::every_rule_holds -- --nocapture
//! ```

mod checks;
mod events;
mod explore;
mod participants;
mod rng;
mod world;

use crate::planted::{Bug, Planted};
use world::World;

/// Seeds a CI run explores (about two seconds in a debug build).
const CI_SEEDS: u64 = 10_000;

/// The result of one run.
struct Report {
    violations: Vec<String>,
    findings: Vec<String>,
    trace: Vec<String>,
}

fn run(seed: u64, planted: &Planted) -> Report {
    let mut world = World::new(seed, planted.clone());
    world.run();
    let checks = world.checks;
    Report {
        violations: checks.violations,
        findings: checks.findings,
        trace: checks.lines,
    }
}

/// The seeds to run: `DTX_SIM_SEED` alone, or `DTX_SIM_SEEDS` of them
/// (default [`CI_SEEDS`]) from `DTX_SIM_START` (default 0).
fn seeds() -> std::ops::Range<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(seed) = var("DTX_SIM_SEED") {
        return seed..seed + 1;
    }
    let start = var("DTX_SIM_START").unwrap_or(0);
    start..start + var("DTX_SIM_SEEDS").unwrap_or(CI_SEEDS)
}

fn replay_command(seed: u64) -> String {
    format!(
        "DTX_SIM_SEED={seed} cargo test -p dtx-protocol --lib sim::every_rule_holds -- --nocapture"
    )
}

/// The first seed whose run breaks a rule with `planted` switched on.
fn first_violation(planted: &Planted) -> Option<(u64, Report)> {
    seeds()
        .map(|seed| (seed, run(seed, planted)))
        .find(|(_, report)| !report.violations.is_empty())
}

#[test]
fn every_rule_holds() {
    let seeds = seeds();
    let single = seeds.end - seeds.start == 1;
    let mut findings = 0;
    for seed in seeds.clone() {
        let report = run(seed, &Planted::default());
        if single {
            println!("{}", report.trace.join("\n"));
        }
        findings += report.findings.len();
        if let Some(first) = report.violations.first() {
            let tail = report.trace.len().saturating_sub(80);
            panic!(
                "seed {seed} broke a rule: {first}\nreplay: {}\nlast events:\n{}",
                replay_command(seed),
                report.trace[tail..].join("\n")
            );
        }
    }
    println!(
        "{} seeds, every rule held; {findings} 3PC partition findings",
        seeds.end - seeds.start
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 77, 4_242] {
        assert_eq!(
            run(seed, &Planted::default()).trace,
            run(seed, &Planted::default()).trace
        );
    }
}

#[test]
fn the_three_pc_partition_divergence_is_seen_and_reported() {
    // The simulation must be able to see 3PC's known weakness, or it could
    // not be trusted to see anything like it.
    let found = seeds().any(|seed| !run(seed, &Planted::default()).findings.is_empty());
    assert!(found, "no seed drew a 3PC partition that split the outcome");
}

/// Asserts the simulation finds `bug` within the CI seeds.
fn finds(bug: Bug, rule: &str) {
    let Some((seed, report)) = first_violation(&Planted::of(&[bug])) else {
        panic!(
            "the simulation did not find the planted {bug:?} in {:?}",
            seeds()
        );
    };
    println!(
        "planted {bug:?} found by seed {seed}: {}",
        report.violations[0]
    );
    assert!(
        report.violations.iter().any(|v| v.starts_with(rule)),
        "seed {seed} found {bug:?} through another rule: {:?}",
        report.violations
    );
}

#[test]
fn planted_decision_keeps_phase_one_retry_is_found() {
    finds(
        Bug::DecisionKeepsPhaseOneRetry,
        "phase_one_call_after_decision",
    );
}

#[test]
fn planted_still_working_is_a_failure_is_found() {
    finds(
        Bug::StillWorkingIsAFailure,
        "still_working_not_polled_steadily",
    );
}

#[test]
fn planted_failures_carry_over_is_found() {
    finds(Bug::FailuresCarryOver, "backoff_longer_than_the_policy");
}

#[test]
fn planted_forget_maybe_sent_on_recovery_is_found() {
    finds(Bug::ForgetMaybeSentOnRecovery, "outcome_disagrees");
}

#[test]
fn every_schedule_of_small_configurations_keeps_every_rule() {
    use crate::wire::Mode;
    // (mode, branches, saga dependencies, states visited): the counts are
    // pinned, so a change of the core that changes the explored space shows.
    let configs = [
        (Mode::TwoPhase, 2, vec![], 98_566),
        (Mode::ThreePhase, 2, vec![], 276_708),
        (Mode::Saga, 2, vec![vec![], vec![0]], 3_376),
        (Mode::Saga, 2, vec![vec![], vec![]], 93_677),
    ];
    for (mode, n, deps, pinned) in configs {
        let explored = explore::explore(mode, n, deps.clone(), Planted::default(), 2_000_000);
        println!("{mode} n={n} deps={deps:?}: {} states", explored.states);
        assert!(
            explored.violations.is_empty(),
            "{mode} {deps:?}: {:?}",
            &explored.violations[..explored.violations.len().min(5)]
        );
        assert_eq!(explored.states, pinned, "{mode} n={n} deps={deps:?}");
    }
}

#[test]
fn exploration_finds_the_planted_defects_it_can_reach() {
    use crate::wire::Mode;
    // A refusal that leaves the other branch's retry waiting: reached by
    // every schedule explorer worth the name.
    let planted = Planted::of(&[Bug::DecisionKeepsPhaseOneRetry]);
    let explored = explore::explore(Mode::Saga, 2, vec![vec![], vec![]], planted, 2_000_000);
    assert!(
        explored
            .violations
            .iter()
            .any(|v| v.contains("while the log says aborting")),
        "{:?}",
        explored.violations
    );
    // A recovered saga that forgets a branch that may have been sent.
    let planted = Planted::of(&[Bug::ForgetMaybeSentOnRecovery]);
    let explored = explore::explore(Mode::Saga, 2, vec![vec![], vec![0]], planted, 2_000_000);
    assert!(
        explored
            .violations
            .iter()
            .any(|v| v.starts_with("aborted but participants")),
        "{:?}",
        explored.violations
    );
}
