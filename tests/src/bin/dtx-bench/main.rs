//! `dtx-bench`: throughput, latency, CPU and memory of the dtx coordinator,
//! next to two references measured in the same run (issue 4).
//!
//! ```sh
//! cargo run --release -p dtx-tests --bin dtx-bench -- [--quick] [--out target/bench]
//! ```
//!
//! `docs/performance.md` explains what is measured and how, and holds the
//! figures. No threshold is asserted: people judge the results.
//!
//! # Layout
//!
//! * [`scenario`]: workloads, stores and the matrix (and how to add a
//!   protocol).
//! * [`binaries`]: builds the release `dtx`; finds or installs dtmrs.
//! * [`stores`]: a fresh SQLite file or PostgreSQL database per coordinator.
//! * [`noop`]: the no-op participants.
//! * [`load`]: the closed-loop load generator and its HDR histograms.
//! * [`dtx`], [`peer`], [`raw`]: the three things measured.
//! * [`procstat`]: CPU time and peak memory from `/proc`.
//! * [`runner`]: one scenario (raw, dtx, peer back to back) and the soak.
//! * [`report`]: the JSON and the tables; [`chart`]: the PNG.

mod binaries;
mod chart;
mod dtx;
mod load;
mod noop;
mod peer;
mod procstat;
mod raw;
mod report;
mod runner;
mod scenario;
mod stores;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::report::{Machine, Report, Settings};
use crate::runner::Bench;
use crate::scenario::{Store, Workload, matrix};

/// Measures dtx against raw participant calls and against dtmrs.
#[derive(Debug, Parser)]
#[command(name = "dtx-bench", about, long_about = None)]
struct Args {
    /// A smoke run in under two minutes: saga-2, tcc-2 and 2pc-2 at
    /// concurrency 16 and 64, 2-second windows, no soak; skips the peer if
    /// it is not installed and PostgreSQL if Docker is unavailable, with a
    /// note.
    #[arg(long)]
    quick: bool,
    /// Workloads, comma-separated: saga-N, tcc-N, 2pc-N (the peer has no
    /// 2PC) [default: saga-1,saga-2,saga-8,tcc-2,2pc-2; quick: saga-2,tcc-2,2pc-2]
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Stores, comma-separated: sqlite, postgres [default: both]
    #[arg(long, value_delimiter = ',')]
    stores: Option<Vec<String>>,
    /// Concurrent clients, comma-separated [default: 1,16,64; quick: 16,64]
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Seconds of each measured window [default: 8; quick: 2]
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up before each window [default: 2; quick: 0.5]
    #[arg(long)]
    warmup: Option<f64>,
    /// Where bench.json, bench.png and the peer's logs go [default: target/bench]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure this dtx binary instead of building the release one.
    #[arg(long, env = "DTX_BENCH_DTX_BIN")]
    dtx_bin: Option<PathBuf>,
    /// Use this dtmrs binary instead of the installed one.
    #[arg(long, env = "DTX_BENCH_PEER_BIN")]
    peer_bin: Option<PathBuf>,
    /// Do not measure the peer.
    #[arg(long, conflicts_with = "peer_bin")]
    no_peer: bool,
    /// After the matrix, run saga-2 on SQLite at concurrency 64 through this
    /// many transactions and measure throughput and memory before and
    /// after; 0 skips it [default: 100000; quick: 0]
    #[arg(long)]
    soak: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let finished = runtime.block_on(async {
        tokio::select! {
            result = run(args) => Some(result),
            signal = interrupted() => {
                eprintln!("dtx-bench: {signal}: stopping; bench.json holds the scenarios finished so far");
                None
            }
        }
    });
    // By now an interrupted run has been dropped inside the runtime: its
    // coordinators are killed and its PostgreSQL container removed.
    finished.unwrap_or_else(|| std::process::exit(130))
}

/// Resolves on Ctrl-C or SIGTERM, naming which.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let quick = args.quick;
    let workloads: Vec<Workload> = args
        .scenarios
        .unwrap_or_else(|| {
            let names: &[&str] = if quick {
                &["saga-2", "tcc-2", "2pc-2"]
            } else {
                &["saga-1", "saga-2", "saga-8", "tcc-2", "2pc-2"]
            };
            names.iter().map(|s| s.to_string()).collect()
        })
        .iter()
        .map(|s| Workload::parse(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut stores: Vec<Store> = args
        .stores
        .unwrap_or_else(|| vec!["sqlite".into(), "postgres".into()])
        .iter()
        .map(|s| Store::parse(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let concurrency = args
        .concurrency
        .unwrap_or_else(|| if quick { vec![16, 64] } else { vec![1, 16, 64] });
    let duration = seconds(args.duration.unwrap_or(if quick { 2.0 } else { 8.0 }))?;
    let warmup = seconds(args.warmup.unwrap_or(if quick { 0.5 } else { 2.0 }))?;
    let soak = args.soak.unwrap_or(if quick { 0 } else { 100_000 });
    let out = args
        .out
        .unwrap_or_else(|| binaries::workspace_root().join("target/bench"));
    std::fs::create_dir_all(out.join("logs"))
        .with_context(|| format!("create {}", out.display()))?;

    let mut notes = Vec::new();
    let dtx_bin = match args.dtx_bin {
        Some(path) => binaries::check_file(&path, "--dtx-bin"),
        None => binaries::build_dtx(),
    }
    .map_err(anyhow::Error::msg)?;
    let peer_bin = if args.no_peer {
        notes.push("peer not measured: --no-peer".to_owned());
        None
    } else if let Some(path) = args.peer_bin {
        Some(binaries::check_file(&path, "--peer-bin").map_err(anyhow::Error::msg)?)
    } else if quick {
        let found = binaries::installed_peer();
        if found.is_none() {
            notes.push(format!(
                "peer skipped: dtmrs is not installed; run `bash {}` (about 8 minutes, once)",
                binaries::install_script().display()
            ));
        }
        found
    } else {
        Some(binaries::install_peer().map_err(|e| anyhow::anyhow!("{e}; or pass --no-peer"))?)
    };

    let mut store_maker =
        stores::Stores::new(&out.join("stores")).context("create the store folder")?;
    if stores.contains(&Store::Postgres) {
        match store_maker.start_postgres().await {
            Ok(how) => notes.push(how),
            Err(e) if quick => {
                notes.push(format!("PostgreSQL skipped: {e}"));
                stores.retain(|s| *s != Store::Postgres);
            }
            Err(e) => {
                bail!("cannot start PostgreSQL: {e}\n(or measure SQLite only: --stores sqlite)")
            }
        }
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("build the HTTP client")?;
    let participants = noop::NoopParticipants::start()
        .await
        .context("start the no-op participants")?;
    let mut report = Report {
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(&dtx_bin, peer_bin.as_ref()),
        settings: Settings {
            quick,
            warmup_s: warmup.as_secs_f64(),
            duration_s: duration.as_secs_f64(),
            notes,
        },
        ..Report::default()
    };
    for workload in &workloads {
        if let Some(why) = peer::unsupported(*workload) {
            report
                .settings
                .notes
                .push(format!("peer has no {} rows: {why}", workload.name()));
        }
    }
    for note in &report.settings.notes {
        eprintln!("dtx-bench: note: {note}");
    }
    let mut bench = Bench {
        client,
        participants,
        stores: store_maker,
        dtx_bin,
        peer_bin,
        warmup,
        duration,
        sequence: Arc::new(load::Sequence::default()),
        logs: out.join("logs"),
    };

    let json = out.join("bench.json");
    let all = matrix(&workloads, &stores, &concurrency);
    for (i, scenario) in all.iter().enumerate() {
        eprintln!("dtx-bench: [{}/{}] {scenario}", i + 1, all.len());
        let result = bench
            .scenario(*scenario)
            .await
            .map_err(anyhow::Error::msg)?;
        print!("{}", report::scenario_table(&result));
        report.scenarios.push(result);
        // Written after every scenario, so an interrupted run keeps what it measured.
        report
            .write(&json)
            .with_context(|| format!("write {}", json.display()))?;
    }
    if soak > 0 {
        report.soak = Some(
            bench
                .soak(Store::Sqlite, soak)
                .await
                .map_err(anyhow::Error::msg)?,
        );
        report
            .write(&json)
            .with_context(|| format!("write {}", json.display()))?;
    }
    print!("{}", report::summary_table(&report));
    println!("\nJSON: {}", json.display());
    let png = out.join("bench.png");
    match chart::draw(&report, &png) {
        Ok(()) => println!("chart: {}", png.display()),
        Err(e) => println!("chart not drawn: {e}"),
    }
    Ok(())
}

fn seconds(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{value} is not a number of seconds"))
}

/// What ran where, for the report.
fn machine(dtx: &std::path::Path, peer: Option<&PathBuf>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        dtx_binary: dtx.display().to_string(),
        revision: std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(binaries::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        peer_binary: peer.map(|p| p.display().to_string()),
    }
}
