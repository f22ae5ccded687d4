//! Scenarios: which faults hit a fresh cluster while the workload runs, and
//! the run of one from start to verdict: start the cluster, seed stock,
//! run the workload alone for a healthy baseline, then workload and nemesis
//! together (the workload goes on for a while after the last fault ends, so
//! that recovery shows as progress), stop the workload, heal, wait for
//! quiescence within a bound, read everything back twice and check it, and
//! measure availability. A run passes only if it kept every rule, reached
//! quiescence, and carried out every fault; a service that never answers the
//! final reads is a violation of its own (`service_unanswered`), so every
//! run that got its cluster started ends with a report and a verdict.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dtx_protocol::Mode;
use serde::Serialize;
use tokio::sync::watch;

use super::availability::{self, Availability, Target};
use super::binaries::Binaries;
use super::checker::{self, OrderStatus, Violation, ViolationKind};
use super::cluster::{Cluster, ClusterOptions, Node};
use super::nemesis::{self, AppliedFault, FaultKind};
use super::observe::{self, Unanswered, UnansweredRead};
use super::workload::{self, Attempt, Told, WorkloadConfig};
use crate::error::TestSupportError;

/// A named set of faults.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scenario {
    /// The name a user picks it by.
    pub name: &'static str,
    /// The faults, each drawn `per_kind` times from the seed.
    pub faults: &'static [FaultKind],
    /// Findings this scenario provokes on purpose (none but for the 3PC
    /// partition scenario); any other violation fails the run.
    pub expects: &'static [ViolationKind],
}

/// Every scenario, the CI selection first: one per fault kind.
pub const CATALOGUE: &[Scenario] = &[
    Scenario {
        name: "kill-coordinator",
        faults: &[FaultKind::KillCoordinator],
        expects: &[],
    },
    Scenario {
        name: "pause-coordinator",
        faults: &[FaultKind::PauseCoordinator],
        expects: &[],
    },
    Scenario {
        name: "kill-participant",
        faults: &[FaultKind::KillParticipant],
        expects: &[],
    },
    Scenario {
        name: "partition-participant",
        faults: &[FaultKind::PartitionParticipant],
        expects: &[],
    },
    Scenario {
        name: "partition-coordinator",
        faults: &[FaultKind::PartitionCoordinator],
        expects: &[],
    },
    Scenario {
        name: "restart-postgres",
        faults: &[FaultKind::RestartPostgres],
        expects: &[],
    },
    Scenario {
        name: "slow-participant",
        faults: &[FaultKind::SlowParticipant],
        expects: &[],
    },
    Scenario {
        name: "mixed",
        faults: &FaultKind::ALL,
        expects: &[],
    },
    // On the replicated PostgreSQL (Patroni): the primary killed, and a
    // planned switchover.
    Scenario {
        name: "postgres-failover",
        faults: &FaultKind::REPLICATED,
        expects: &[],
    },
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<Scenario> {
    CATALOGUE.iter().copied().find(|s| s.name == name)
}

/// How hard and how long a run is.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The workload.
    pub workload: WorkloadConfig,
    /// How long the workload runs alone before the fault window opens: the
    /// healthy rate availability is measured against.
    pub baseline: Duration,
    /// How long the workload runs at least after the baseline (faults fall
    /// in its first 60%).
    pub window: Duration,
    /// How long the workload goes on after the last fault ended, at least;
    /// longer than the workload's request timeout, so that requests caught
    /// by the fault have ended and new ones show whether the system
    /// recovered.
    pub tail: Duration,
    /// How many times each fault kind of the scenario strikes.
    pub per_kind: usize,
    /// How long after heal every transaction must be final.
    pub quiescence_bound: Duration,
    /// How long the final reads wait for a service to answer before it is a
    /// `service_unanswered` violation.
    pub observe_patience: Duration,
    /// Units of the plentiful product seeded before the run.
    pub stock: i64,
    /// Units of the scarce product seeded before the run.
    pub scarce_stock: i64,
}

impl Settings {
    /// The bounded run CI makes of each scenario.
    pub fn ci(modes: &[Mode]) -> Settings {
        Settings {
            workload: WorkloadConfig {
                clients: 4,
                modes: modes.to_vec(),
                sku: "widget".into(),
                scarce_every: 5,
                scarce_sku: "gadget".into(),
                max_qty: 3,
                request_timeout: Duration::from_secs(10),
            },
            // 1 s of warm-up, then at least 3 s of healthy rate (the first
            // fault falls 2 s or more into the window).
            baseline: Duration::from_secs(4),
            window: Duration::from_secs(20),
            // Longer than a client's request timeout: requests that hung
            // on the fault must end before new ones show the recovery.
            tail: Duration::from_secs(15),
            // Twice: a fault that strikes once may hit a quiet moment, and
            // the second strike hits a system recovering from the first.
            per_kind: 2,
            quiescence_bound: Duration::from_secs(90),
            observe_patience: observe::PATIENCE,
            // About 600 orders of 2 units on average are placed in a run:
            // widgets never run out, so orders succeed until the end;
            // gadgets (one order in five) run out within seconds, and the
            // orders refused for them exercise compensation, cancel and
            // rollback in every mode.
            stock: 100_000,
            scarce_stock: 40,
        }
    }
}

/// Everything one run produced; the report is made of these.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed that replays it.
    pub seed: u64,
    /// The settings it ran with.
    pub settings: Settings,
    /// The faults, as carried out.
    pub faults: Vec<AppliedFault>,
    /// Order attempts per mode and what the client was told.
    pub attempts_by_mode: BTreeMap<String, BTreeMap<String, usize>>,
    /// Per mode, orders confirmed to their clients after the last fault
    /// ended: the system recovered, not just survived.
    pub confirmed_after_faults: BTreeMap<String, usize>,
    /// Transactions per mode and final status, from the coordinators' log.
    pub transactions_by_mode: BTreeMap<String, BTreeMap<String, usize>>,
    /// Broken rules the scenario did not expect.
    pub violations: Vec<Violation>,
    /// Expected findings that did occur (the 3PC partition divergence).
    pub findings: Vec<Violation>,
    /// Milliseconds from heal until everything was final; `None`: not
    /// within the bound (then `violations` says what was left).
    pub quiescence_ms: Option<u64>,
    /// For the first gids with a violation: the coordinator's record of the
    /// transaction (branches, attempts, errors, history) and the order, as
    /// read after the check.
    pub evidence: BTreeMap<String, serde_json::Value>,
    /// The last lines of every service's log, when a rule was broken.
    pub logs: BTreeMap<String, String>,
    /// Orders completed per second during each fault against the healthy
    /// rate, the longest gaps, the times back to full rate, per kind against
    /// its target.
    pub availability: Availability,
    /// Every order attempt, for the timeline.
    pub attempts: Vec<Attempt>,
    /// Milliseconds the whole run took, cluster start included.
    pub took_ms: u64,
}

impl ScenarioReport {
    /// Whether the run kept every rule it had to keep (every service
    /// answered the final reads among them), reached quiescence, and carried
    /// out every fault it planned. Availability is judged apart: its
    /// targets hold on a given machine, and CI asserts them where they are
    /// robust (see [`Availability`]).
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.quiescence_ms.is_some()
            && self.faults.iter().all(|f| f.error.is_none())
    }
}

/// Runs `scenario` once with `seed`; `progress` hears each stage. An error
/// only when the cluster could not be started or seeded: once it runs, every
/// run ends with a report.
pub async fn run(
    binaries: &Binaries,
    scenario: Scenario,
    seed: u64,
    settings: &Settings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ScenarioReport, TestSupportError> {
    let executed = execute(binaries, scenario, seed, settings, progress).await?;
    Ok(executed.judge(progress).await)
}

/// A run whose workload and faults are over, healed and given its time to
/// quiesce, with the cluster still up: [`Executed::judge`] reads it back.
/// Split from [`run`] so that a test can break the cluster in between.
pub struct Executed {
    cluster: Cluster,
    scenario: Scenario,
    seed: u64,
    settings: Settings,
    seeded: BTreeMap<String, i64>,
    faults: Vec<AppliedFault>,
    attempts: Vec<Attempt>,
    /// When the workload stopped, in milliseconds from its start.
    workload_ms: u64,
    quiescence: Option<Duration>,
    run_started: Instant,
}

/// The first part of [`run`]: everything up to the reads of the final state.
pub async fn execute(
    binaries: &Binaries,
    scenario: Scenario,
    seed: u64,
    settings: &Settings,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Executed, TestSupportError> {
    let run_started = Instant::now();
    progress("starting the cluster");
    let cluster = Cluster::start(
        binaries,
        &format!("{}-{seed}", scenario.name),
        &ClusterOptions {
            postgres: nemesis::postgres_setup(scenario.faults),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let seeded = BTreeMap::from([
        (settings.workload.sku.clone(), settings.stock),
        (settings.workload.scarce_sku.clone(), settings.scarce_stock),
    ]);
    for (sku, units) in &seeded {
        observe::seed(&cluster, sku, *units).await?;
    }
    let mut plan = nemesis::schedule(seed, scenario.faults, settings.per_kind, settings.window);
    // The fault window opens after the healthy baseline.
    for fault in &mut plan {
        fault.at_ms += settings.baseline.as_millis() as u64;
    }
    progress("workload and faults");
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients = tokio::spawn(workload::run(
        cluster.http().clone(),
        cluster.url(Node::Orders),
        settings.workload.clone(),
        seed,
        started,
        stop_rx,
    ));
    let (faults, ()) = tokio::join!(
        async {
            let faults = nemesis::run(&cluster, plan, started).await;
            // Recovery must show as progress: keep the clients going a
            // while after the last fault ended.
            tokio::time::sleep(settings.tail).await;
            faults
        },
        tokio::time::sleep(settings.baseline + settings.window)
    );
    let _ = stop_tx.send(true);
    let workload_ms = started.elapsed().as_millis() as u64;
    let attempts = clients.await.unwrap_or_default();
    progress("healing and waiting for quiescence");
    nemesis::heal(&cluster).await;
    let quiescence = observe::wait_for_quiescence(&cluster, settings.quiescence_bound).await;
    Ok(Executed {
        cluster,
        scenario,
        seed,
        settings: settings.clone(),
        seeded,
        faults,
        attempts,
        workload_ms,
        quiescence,
        run_started,
    })
}

impl Executed {
    /// The cluster, still up.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The second part of [`run`]: reads the final state back twice, checks
    /// it, measures availability and writes it all into a report. A service
    /// that never answers the reads is a `service_unanswered` violation
    /// (then nothing else is checked: there is no state to check).
    pub async fn judge(self, progress: &(dyn Fn(&str) + Sync)) -> ScenarioReport {
        progress("checking");
        let Executed {
            cluster,
            scenario,
            seed,
            settings,
            seeded,
            faults,
            attempts,
            workload_ms,
            quiescence,
            run_started,
        } = self;
        let observed = observe::observe_within(
            &cluster,
            &seeded,
            &attempts,
            quiescence.is_some(),
            settings.observe_patience,
        )
        .await;
        let (violations, findings, transactions_by_mode, silent) = match observed {
            Ok((first, observed)) => {
                let (findings, violations): (Vec<Violation>, Vec<Violation>) =
                    checker::check(&observed)
                        .into_iter()
                        .chain(checker::compare_reads(&first, &observed))
                        .partition(|v| scenario.expects.contains(&v.kind));
                let by_mode = count(
                    observed
                        .transactions
                        .iter()
                        .map(|t| (t.mode.to_string(), t.status.as_str().to_owned())),
                );
                (violations, findings, by_mode, Vec::new())
            }
            Err(Unanswered(silent)) => {
                let mut violations = Vec::new();
                for read in &silent {
                    violations.push(unanswered(&cluster, read).await);
                }
                (violations, Vec::new(), BTreeMap::new(), silent)
            }
        };
        let (evidence, mut logs) = if violations.is_empty() && quiescence.is_some() {
            Default::default()
        } else {
            gather_evidence(&cluster, &violations).await
        };
        for read in &silent {
            logs.insert(
                read.node.to_string(),
                cluster.log_tail(read.node, SILENT_LOG_LINES).await,
            );
        }
        let last_fault_end = faults.iter().map(|f| f.ended_ms).max().unwrap_or(0);
        let confirmed_after_faults = attempts
            .iter()
            .filter(|a| a.at_ms > last_fault_end && a.told == Told::Settled(OrderStatus::Confirmed))
            .fold(BTreeMap::new(), |mut by_mode, a| {
                *by_mode.entry(a.mode.to_string()).or_insert(0) += 1;
                by_mode
            });
        let availability = availability::measure(&attempts, &faults, workload_ms, Target::for_kind);
        ScenarioReport {
            scenario: scenario.name.to_owned(),
            seed,
            faults,
            attempts_by_mode: count(
                attempts
                    .iter()
                    .map(|a| (a.mode.to_string(), told_name(&a.told))),
            ),
            transactions_by_mode,
            confirmed_after_faults,
            violations,
            findings,
            quiescence_ms: quiescence.map(|d| d.as_millis() as u64),
            evidence,
            logs,
            availability,
            attempts,
            settings,
            took_ms: run_started.elapsed().as_millis() as u64,
        }
    }
}

/// How much of a silent service's log the report keeps.
const SILENT_LOG_LINES: usize = 100;

/// The violation for a service that never answered a read of the final
/// state: what was asked, the last error, and the container's state.
async fn unanswered(cluster: &Cluster, read: &UnansweredRead) -> Violation {
    Violation {
        kind: ViolationKind::ServiceUnanswered,
        gid: None,
        detail: format!(
            "{node} never answered {} within {:.0} s ({} tries); last error: {}; {}; \
             its last {SILENT_LOG_LINES} log lines are in the report's logs under `{node}`",
            read.request,
            read.waited.as_secs_f64(),
            read.tries,
            read.last_error,
            cluster.container_state(read.node).await,
            node = read.node,
        ),
    }
}

/// What a person needs to find the cause of a violation without the
/// cluster, which is gone once the run ends.
async fn gather_evidence(
    cluster: &Cluster,
    violations: &[Violation],
) -> (
    BTreeMap<String, serde_json::Value>,
    BTreeMap<String, String>,
) {
    const GIDS: usize = 8;
    let mut evidence = BTreeMap::new();
    for gid in violations.iter().filter_map(|v| v.gid.as_deref()) {
        if evidence.len() >= GIDS || evidence.contains_key(gid) {
            continue;
        }
        let mut seen = serde_json::Map::new();
        for (name, node, path) in [
            (
                "coordinator",
                Node::Coordinator1,
                format!("/v1/transactions/{gid}"),
            ),
            ("order", Node::Orders, format!("/orders/{gid}")),
        ] {
            let url = format!("{}{path}", cluster.url(node));
            let value = match cluster.http().get(&url).send().await {
                Ok(r) => r.json().await.unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::Value::String(e.to_string()),
            };
            seen.insert(name.into(), value);
        }
        evidence.insert(gid.to_owned(), serde_json::Value::Object(seen));
    }
    // Each service's last lines, and every line that names one of the gids
    // above (a busy service's tail has scrolled past their story).
    const NAMING_LINES: usize = 200;
    let gids: Vec<&str> = evidence.keys().map(String::as_str).collect();
    let mut logs = BTreeMap::new();
    for node in Node::ALL {
        logs.insert(node.to_string(), cluster.logs(node).await);
        if !gids.is_empty() {
            logs.insert(
                format!("{node} (lines naming the gids above)"),
                cluster.log_lines_naming(node, &gids, NAMING_LINES).await,
            );
        }
    }
    (evidence, logs)
}

fn told_name(told: &workload::Told) -> String {
    match told {
        workload::Told::Settled(status) => status.to_string(),
        workload::Told::Unsettled => "unsettled".into(),
        workload::Told::Refused(code) => format!("http_{code}"),
        workload::Told::NoAnswer => "no_answer".into(),
    }
}

fn count(
    pairs: impl Iterator<Item = (String, String)>,
) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (outer, inner) in pairs {
        *counts.entry(outer).or_default().entry(inner).or_default() += 1;
    }
    counts
}
