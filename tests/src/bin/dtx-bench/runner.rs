//! Runs one scenario: raw, then dtx, then the peer, back to back, each
//! coordinator as a fresh process on a fresh store; and the soak run.
//!
//! Measuring the three in a row, rather than all of dtx and then all of
//! the peer, keeps each ratio's parts a few seconds apart: on a shared
//! 2-core machine the absolute numbers drift over minutes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::dtx::DtxTarget;
use crate::load::{self, Sequence, Stop, Target};
use crate::noop::NoopParticipants;
use crate::peer::{self, PeerTarget};
use crate::procstat;
use crate::raw::RawTarget;
use crate::report::{CpuUse, Ratios, ScenarioResult, SoakResult, SystemResult};
use crate::scenario::{Scenario, Store, Workload};
use crate::stores::Stores;

/// Everything the scenarios share.
pub struct Bench {
    /// One client for every request of the run, keeping connections alive.
    pub client: reqwest::Client,
    /// The no-op participants.
    pub participants: NoopParticipants,
    /// Fresh stores.
    pub stores: Stores,
    /// The dtx binary.
    pub dtx_bin: PathBuf,
    /// The peer's binary; `None` skips the peer.
    pub peer_bin: Option<PathBuf>,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Each measured window.
    pub duration: Duration,
    /// Numbers every transaction of the run.
    pub sequence: Arc<Sequence>,
    /// Where the peer's output goes.
    pub logs: PathBuf,
}

impl Bench {
    fn window(&self) -> Stop {
        Stop::Window {
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    /// Measures `scenario` on raw, dtx and (if installed, and if it can run
    /// the workload) the peer.
    pub async fn scenario(&mut self, scenario: Scenario) -> Result<ScenarioResult, String> {
        let participants = self.participants.base_url();
        let workload = scenario.workload;
        let c = scenario.concurrency;

        let raw = RawTarget::new(workload, self.client.clone(), &participants);
        let raw = self.measure(Arc::new(raw), None, c, false).await;

        let db = self.stores.fresh(scenario.store, "dtx").await?;
        let dtx = DtxTarget::start(
            &self.dtx_bin,
            &db.url,
            workload,
            self.client.clone(),
            &participants,
        )
        .await
        .map_err(|e| format!("{scenario}: start dtx: {e}"))?;
        let pid = dtx.pid();
        let dtx = Arc::new(dtx);
        let on_postgres = scenario.store == Store::Postgres;
        let dtx_result = self.measure(dtx.clone(), Some(pid), c, on_postgres).await;
        if dtx_result.errors > 0 && dtx_result.completed == 0 {
            eprintln!(
                "dtx-bench: {scenario}: dtx finished nothing; its output:\n{}",
                dtx.log()
            );
        }
        drop(dtx);
        drop(db);

        // A workload the peer cannot run gets a reason instead of figures.
        let peer_absent = peer::unsupported(workload).map(str::to_owned);
        let peer = match self.peer_bin.clone().filter(|_| peer_absent.is_none()) {
            Some(binary) => {
                let db = self.stores.fresh(scenario.store, "peer").await?;
                let log = self.logs.join(format!(
                    "peer-{}-{}-c{c}.log",
                    workload.name(),
                    scenario.store.name()
                ));
                let peer = PeerTarget::start(
                    &binary,
                    &db.url,
                    &log,
                    workload,
                    self.client.clone(),
                    &participants,
                    self.participants.completions(),
                )
                .await
                .map_err(|e| format!("{scenario}: start the peer: {e}"))?;
                let pid = peer.pid();
                let peer = Arc::new(peer);
                let mut result = self.measure(peer.clone(), Some(pid), c, on_postgres).await;
                result.queries_per_tx = peer.queries_per_tx();
                if result.errors > 0 {
                    eprintln!(
                        "dtx-bench: {scenario}: the peer had errors; its output is in {}",
                        peer.log_path().display()
                    );
                }
                Some(result)
            }
            None => None,
        };

        Ok(ScenarioResult {
            name: scenario.to_string(),
            workload: workload.name(),
            store: scenario.store.name().to_owned(),
            concurrency: c,
            ratios: Ratios::of(Some(&raw), Some(&dtx_result), peer.as_ref()),
            raw: Some(raw),
            dtx: Some(dtx_result),
            peer,
            peer_absent,
        })
    }

    /// Runs `target` for one window and reads, over exactly that window,
    /// the CPU time of `pid` (the coordinator), of the bench itself, of the
    /// database server if `postgres`, and of the whole machine.
    async fn measure<T: Target>(
        &self,
        target: Arc<T>,
        pid: Option<u32>,
        concurrency: usize,
        postgres: bool,
    ) -> SystemResult {
        let read = || CpuReadings {
            coordinator: pid.and_then(procstat::cpu_seconds),
            bench: procstat::own_cpu_seconds(),
            // On SQLite the database's work is inside the coordinator.
            db: postgres
                .then(|| self.stores.postgres_cpu_seconds())
                .flatten(),
            machine: procstat::machine_busy_seconds(),
            switches: pid.and_then(procstat::context_switches),
        };
        // Read on the load generator's schedule: it starts counting after
        // the warm-up and stops after the window.
        let readings = async {
            tokio::time::sleep(self.warmup).await;
            let before = read();
            tokio::time::sleep(self.duration).await;
            (before, read())
        };
        let (m, (before, after)) = tokio::join!(
            load::run(target, concurrency, self.window(), self.sequence.clone()),
            readings
        );
        let delta = |f: fn(&CpuReadings) -> Option<f64>| Some(f(&after)? - f(&before)?);
        let coordinator = delta(|r| r.coordinator);
        let bench = delta(|r| r.bench);
        let db = delta(|r| r.db);
        let peak = pid.and_then(procstat::peak_rss_mib);
        let mut result = SystemResult::from_measurement(&m, coordinator, peak, bench);
        result.db_cpu = db.map(|seconds| CpuUse::new(seconds, m.completed));
        if m.completed > 0 {
            result.context_switches_per_tx = delta(|r| r.switches).map(|n| n / m.completed as f64);
        }
        // Whatever else ran on the machine meanwhile (other people's builds
        // and tests on a shared machine): the noise behind these figures.
        result.other_cpu_s = delta(|r| r.machine)
            .map(|all| all - coordinator.unwrap_or(0.0) - bench.unwrap_or(0.0) - db.unwrap_or(0.0))
            .map(|other| other.max(0.0));
        result
    }

    /// Saga-2 at concurrency 64 on `store`: a window on an empty store,
    /// `count` more transactions, then a window again, and memory.
    pub async fn soak(&mut self, store: Store, count: u64) -> Result<SoakResult, String> {
        let workload = Workload::Saga { branches: 2 };
        let concurrency = 64;
        let name = format!("{} {} c{concurrency}", workload.name(), store.name());
        let filled_db = self.stores.fresh(store, "soak").await?;
        let filled_dtx = Arc::new(self.start_dtx(&filled_db.url, workload).await?);
        let pid = filled_dtx.pid();
        let sequence = self.sequence.clone();
        eprintln!("dtx-bench: soak {name}: filling the store with {count} transactions");
        let filled = load::run(
            filled_dtx.clone(),
            concurrency,
            Stop::Count(count),
            sequence.clone(),
        )
        .await;
        eprintln!(
            "dtx-bench: soak: {} transactions in {:.0} s; now {SOAK_ROUNDS} windows on it, \
             each after one on a new empty store",
            filled.completed,
            filled.window.as_secs_f64()
        );
        // One window before the filling and one after could not tell a 10%
        // change from this machine's drift (docs/performance.md). So the
        // windows alternate, each on the filled store after one on an empty
        // store (a new database and process each time, so it stays empty),
        // and the medians are compared.
        let (mut empty_tps, mut after_tps, mut errors) = (vec![], vec![], filled.errors);
        for round in 0..SOAK_ROUNDS {
            let empty_db = self
                .stores
                .fresh(store, &format!("soak_empty_{round}"))
                .await?;
            let empty_dtx = Arc::new(self.start_dtx(&empty_db.url, workload).await?);
            let empty = load::run(empty_dtx, concurrency, self.window(), sequence.clone()).await;
            let after = load::run(
                filled_dtx.clone(),
                concurrency,
                self.window(),
                sequence.clone(),
            )
            .await;
            eprintln!(
                "dtx-bench: soak round {}: {:.0} tx/s empty, {:.0} tx/s filled",
                round + 1,
                empty.throughput(),
                after.throughput()
            );
            empty_tps.push(empty.throughput());
            after_tps.push(after.throughput());
            errors += empty.errors + after.errors;
        }
        let (tps_empty, tps_after) = (median(&empty_tps), median(&after_tps));
        Ok(SoakResult {
            scenario: name,
            filled: filled.completed,
            tps_empty,
            tps_after,
            ratio: if tps_empty > 0.0 {
                tps_after / tps_empty
            } else {
                0.0
            },
            empty_windows: empty_tps,
            after_windows: after_tps,
            rss_mib_after: procstat::rss_mib(pid),
            peak_rss_mib: procstat::peak_rss_mib(pid),
            errors,
        })
    }

    /// Starts a coordinator of the measured binary on `db_url`.
    async fn start_dtx(&self, db_url: &str, workload: Workload) -> Result<DtxTarget, String> {
        let participants = self.participants.base_url();
        DtxTarget::start(
            &self.dtx_bin,
            db_url,
            workload,
            self.client.clone(),
            &participants,
        )
        .await
        .map_err(|e| format!("soak: start dtx: {e}"))
    }
}

/// Soak windows on each side (empty, filled).
const SOAK_ROUNDS: usize = 3;

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// CPU seconds used so far, read at one instant.
struct CpuReadings {
    coordinator: Option<f64>,
    bench: Option<f64>,
    db: Option<f64>,
    machine: Option<f64>,
    /// The coordinator's context switches (a count, not seconds).
    switches: Option<f64>,
}
