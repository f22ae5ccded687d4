//! The fault-injection harness on real containers: each scenario of the CI
//! selection (one per fault kind, every mode the samples offer) runs once
//! with a fixed seed and must keep every rule; each planted defect
//! (`harness::plants`) must make the checker report exactly the rules it
//! breaks; targeted runs kill a coordinator at named protocol points and
//! reproduce 3PC's partition failure.
//!
//! A failing scenario is replayed with
//! `cargo run -p dtx-tests --bin dtx-harness -- --scenarios NAME --seed SEED`.

use std::sync::OnceLock;

use dtx_tests::harness::MODES;
use dtx_tests::harness::binaries::Binaries;
use std::collections::BTreeSet;

use dtx_tests::harness::checker::ViolationKind;
use dtx_tests::harness::plants::{self, Plant};
use dtx_tests::harness::scenario::{self, ScenarioReport, Settings};
use dtx_tests::harness::targeted;

/// The programs, built once per test process.
fn binaries() -> &'static Binaries {
    static BUILT: OnceLock<Binaries> = OnceLock::new();
    BUILT.get_or_init(|| Binaries::build(false).expect("cargo builds the programs"))
}

/// Runs `name` with `seed` and writes its report under target/harness-ci.
async fn run(name: &str, seed: u64) -> ScenarioReport {
    let scenario = scenario::find(name).expect("the scenario exists");
    let progress = |stage: &str| eprintln!("{name}: {stage}");
    let report = scenario::run(binaries(), scenario, seed, &Settings::ci(MODES), &progress)
        .await
        .expect("the scenario runs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/harness-ci")
        .join(name);
    dtx_tests::harness::report::write(&dir, std::slice::from_ref(&report)).expect("report written");
    eprintln!("{name}: report in {}", dir.display());
    report
}

/// Asserts a scenario kept every rule, reached quiescence, faulted, and
/// recovered: every mode had orders confirmed after the last fault ended.
fn assert_kept_every_rule(report: &ScenarioReport) {
    assert!(
        report.violations.is_empty(),
        "{} (seed {}) broke rules: {:#?}",
        report.scenario,
        report.seed,
        report.violations
    );
    assert!(
        report.quiescence_ms.is_some(),
        "not quiescent within the bound"
    );
    assert!(
        report.faults.iter().all(|f| f.error.is_none()),
        "a fault could not be carried out: {:#?}",
        report.faults
    );
    assert!(!report.faults.is_empty(), "no fault was injected");
    assert!(
        report.passed(),
        "the verdict disagrees with the checks above"
    );
    for mode in MODES {
        assert!(
            report
                .confirmed_after_faults
                .get(mode.as_str())
                .copied()
                .unwrap_or(0)
                > 0,
            "no {mode} order was confirmed after the last fault ended: {:?}",
            report.confirmed_after_faults
        );
    }
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal, $seed:literal;)*) => {$(
        #[tokio::test]
        async fn $test() {
            assert_kept_every_rule(&run($name, $seed).await);
        }
    )*};
}

scenario_tests! {
    kill_coordinator_keeps_every_rule => "kill-coordinator", 11;
    pause_coordinator_past_its_lease_keeps_every_rule => "pause-coordinator", 12;
    kill_participant_keeps_every_rule => "kill-participant", 13;
    partition_participant_keeps_every_rule => "partition-participant", 14;
    partition_coordinator_keeps_every_rule => "partition-coordinator", 15;
    restart_postgres_keeps_every_rule => "restart-postgres", 16;
    slow_participant_keeps_every_rule => "slow-participant", 17;
}

/// Runs the services with `plant` and asserts the checker reported
/// exactly the rules the plant breaks.
async fn assert_reports_exactly(plant: Plant) {
    let found = plants::run(binaries(), plant)
        .await
        .unwrap_or_else(|e| panic!("{plant:?}: {e:?}"));
    let reported: BTreeSet<ViolationKind> = found.violations.iter().map(|v| v.kind).collect();
    let expected: BTreeSet<ViolationKind> = plant.expects().iter().copied().collect();
    assert_eq!(
        reported, expected,
        "{plant:?} (orders {:?}): {:#?}",
        found.gids, found.violations
    );
    assert_eq!(found.quiescent, plant.quiesces(), "{plant:?}: quiescence");
}

macro_rules! plant_tests {
    ($($test:ident => $plant:ident;)*) => {$(
        #[tokio::test]
        async fn $test() {
            assert_reports_exactly(Plant::$plant).await;
        }
    )*};
}

plant_tests! {
    checker_catches_a_participant_without_the_barrier => SkipBarrier;
    checker_catches_a_sale_missing_from_the_ledger => UnrecordedSale;
    checker_catches_a_compensation_without_its_action => CompensateWithoutAction;
    checker_catches_a_confirm_without_its_try => ConfirmWithoutTry;
    checker_catches_a_cancel_that_keeps_the_hold => CancelKeepsHold;
    checker_catches_a_refused_confirm_and_the_missing_quiescence => RefuseConfirm;
    checker_catches_a_2pc_rollback_that_commits => CommitAborted2pc;
    checker_catches_a_2pc_branch_left_prepared => RollbackLeavesPrepared;
    checker_catches_a_3pc_abort_that_sells_without_calling_it_the_partition_finding => AbortSells3pc;
    checker_catches_an_answer_given_before_the_outcome => AnswerBeforeOutcome;
    checker_catches_an_order_placed_under_another_gid => PlaceUnderNewGid;
    checker_catches_orders_nobody_asked_for => DoubleInsert;
    checker_catches_an_order_kept_after_its_saga_aborted => CompensationKeepsOrder;
}

#[tokio::test]
async fn checker_catches_reads_of_a_state_still_changing() {
    let found = plants::unstable_reads(binaries())
        .await
        .expect("the run completes");
    assert_eq!(
        found.map(|v| v.kind),
        Some(ViolationKind::UnstableObservation)
    );
}

#[tokio::test]
async fn three_pc_partition_divergence_is_reproduced_and_reported() {
    let found = targeted::three_pc_partition(binaries())
        .await
        .expect("the run completes");
    let gid = &found.gids[0];
    assert!(
        found.violations.iter().any(|v| {
            v.kind == ViolationKind::ThreePcPartitionDivergence && v.gid.as_ref() == Some(gid)
        }),
        "the divergence of {gid} was not reported: {:#?}",
        found.violations
    );
    // Only that transaction is affected (it cannot finish either: the
    // participant refuses an abort after its own commit).
    assert!(
        found.violations.iter().all(|v| v.gid.as_ref() == Some(gid)),
        "{:#?}",
        found.violations
    );
}

/// Kills the coordinator at `point` and asserts nothing was violated.
async fn assert_survives_coordinator_kill_at(point: targeted::ProtocolPoint) {
    let found = targeted::coordinator_killed_at(binaries(), point)
        .await
        .unwrap_or_else(|e| panic!("{point:?}: {e:?}"));
    assert!(
        found.violations.is_empty(),
        "{point:?} (order {:?}): {:#?}",
        found.gids,
        found.violations
    );
    assert!(found.quiescent, "{point:?}: not quiescent");
}

#[tokio::test]
async fn coordinator_killed_after_the_2pc_decision_before_phase_two_keeps_every_rule() {
    assert_survives_coordinator_kill_at(targeted::ProtocolPoint::AfterDecisionBeforePhaseTwo).await;
}

#[tokio::test]
async fn coordinator_killed_between_try_and_confirm_keeps_every_rule() {
    assert_survives_coordinator_kill_at(targeted::ProtocolPoint::BetweenTryAndConfirm).await;
}

#[tokio::test]
async fn coordinator_killed_during_compensation_keeps_every_rule() {
    assert_survives_coordinator_kill_at(targeted::ProtocolPoint::DuringCompensation).await;
}
