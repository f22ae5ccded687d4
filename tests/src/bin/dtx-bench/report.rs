//! The results: what the JSON holds (`<out>/bench.json`), and the tables
//! printed during and after the run.
//!
//! Ratios are dtx divided by the reference, measured back to back in the
//! same run: a throughput ratio above 1 and a p99 ratio below 1 favour dtx.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::load::Measurement;

/// Everything one run measured, as written to `bench.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// When the run started, Unix seconds.
    pub started_unix: u64,
    /// The command line.
    pub command: String,
    /// What ran where.
    pub machine: Machine,
    /// Quick mode or not, window lengths, what was skipped and why.
    pub settings: Settings,
    /// One entry per scenario, in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// Throughput on an empty store and after many finished transactions,
    /// and memory then; absent unless `--soak` was given.
    pub soak: Option<SoakResult>,
}

/// The machine and the binaries.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// `uname -r`-like kernel release.
    pub kernel: String,
    /// The dtx binary that was measured.
    pub dtx_binary: String,
    /// `git describe --always --dirty` of the workspace: which code it was.
    pub revision: String,
    /// The peer's binary, if it ran.
    pub peer_binary: Option<String>,
}

/// How the run was set up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    /// `--quick` was given.
    pub quick: bool,
    /// Seconds of warm-up before each measured window.
    pub warmup_s: f64,
    /// Seconds of each measured window.
    pub duration_s: f64,
    /// Anything a reader must know: skipped references or stores, and why.
    pub notes: Vec<String>,
}

/// One scenario: the three systems measured back to back, and the ratios.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// `saga-2 sqlite c64`.
    pub name: String,
    /// `saga-2`.
    pub workload: String,
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// No coordinator: the same calls straight to the participants.
    pub raw: Option<SystemResult>,
    /// dtx.
    pub dtx: Option<SystemResult>,
    /// dtmrs.
    pub peer: Option<SystemResult>,
    /// Why the peer has no figures here when the workload is one it cannot
    /// run (2PC); absent when it ran, or when it was skipped for the whole
    /// run (see the settings' notes).
    #[serde(default)]
    pub peer_absent: Option<String>,
    /// dtx over raw and over the peer.
    pub ratios: Ratios,
}

/// dtx divided by a reference; absent when either side is missing.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// dtx throughput / raw throughput.
    pub tps_dtx_over_raw: Option<f64>,
    /// dtx throughput / peer throughput.
    pub tps_dtx_over_peer: Option<f64>,
    /// dtx p99 latency / raw p99 latency.
    pub p99_dtx_over_raw: Option<f64>,
    /// dtx p99 latency / peer p99 latency.
    pub p99_dtx_over_peer: Option<f64>,
    /// dtx p99 latency / peer p50 latency (issue 4 wants it below 1 at
    /// concurrency 16).
    pub p99_dtx_over_peer_p50: Option<f64>,
}

impl Ratios {
    /// Computes the ratios of whatever was measured.
    pub fn of(
        raw: Option<&SystemResult>,
        dtx: Option<&SystemResult>,
        peer: Option<&SystemResult>,
    ) -> Ratios {
        let div = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let Some(dtx) = dtx else {
            return Ratios::default();
        };
        Ratios {
            tps_dtx_over_raw: raw.and_then(|r| div(dtx.tps, r.tps)),
            tps_dtx_over_peer: peer.and_then(|p| div(dtx.tps, p.tps)),
            p99_dtx_over_raw: raw.and_then(|r| div(dtx.latency_ms.p99, r.latency_ms.p99)),
            p99_dtx_over_peer: peer.and_then(|p| div(dtx.latency_ms.p99, p.latency_ms.p99)),
            p99_dtx_over_peer_p50: peer.and_then(|p| div(dtx.latency_ms.p99, p.latency_ms.p50)),
        }
    }
}

/// What one system did in one scenario.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SystemResult {
    /// Transactions finished in the window.
    pub completed: u64,
    /// Failed transactions (warm-up included).
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// The window, seconds.
    pub window_s: f64,
    /// Finished transactions per second.
    pub tps: f64,
    /// Latency summary, milliseconds.
    pub latency_ms: Percentiles,
    /// The latency distribution: `[percentile, milliseconds]` pairs, from
    /// 0 to the maximum, for the chart.
    pub latency_curve: Vec<[f64; 2]>,
    /// The coordinator's CPU time in the window (none for raw).
    pub cpu: Option<CpuUse>,
    /// The coordinator's peak resident memory, MiB (none for raw).
    pub peak_rss_mib: Option<f64>,
    /// The bench's own CPU time in the window (clients and participants).
    pub bench_cpu_s: Option<f64>,
    /// PostgreSQL scenarios: the database server's CPU time in the window.
    pub db_cpu: Option<CpuUse>,
    /// The coordinator's context switches per finished transaction, all
    /// threads: a sign of work handed between threads.
    pub context_switches_per_tx: Option<f64>,
    /// CPU seconds used in the window by everything else on the machine
    /// (other people's work on a shared machine): how noisy the figure is.
    pub other_cpu_s: Option<f64>,
    /// The peer only: status queries per finished transaction.
    pub queries_per_tx: Option<f64>,
}

/// CPU time of a coordinator process.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// User + system seconds in the window.
    pub seconds: f64,
    /// CPU-seconds per 1000 finished transactions.
    pub per_1000_tx: f64,
}

impl CpuUse {
    /// `seconds` of CPU time spent on `completed` transactions.
    pub fn new(seconds: f64, completed: u64) -> CpuUse {
        let per_1000_tx = if completed > 0 {
            seconds * 1000.0 / completed as f64
        } else {
            0.0
        };
        CpuUse {
            seconds,
            per_1000_tx,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The soak run: does a store full of finished transactions slow dtx down,
/// and how much memory does it hold then?
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SoakResult {
    /// `saga-2 sqlite c64`.
    pub scenario: String,
    /// Transactions finished between the two measurements.
    pub filled: u64,
    /// Throughput on an empty store: the median of `empty_windows`.
    pub tps_empty: f64,
    /// Throughput after `filled` transactions: the median of
    /// `after_windows`.
    pub tps_after: f64,
    /// `tps_after / tps_empty`.
    pub ratio: f64,
    /// Each window's throughput on a new, empty store.
    pub empty_windows: Vec<f64>,
    /// Each window's throughput on the filled store, each measured right
    /// after the empty window of the same index.
    pub after_windows: Vec<f64>,
    /// Resident memory at the end, MiB.
    pub rss_mib_after: Option<f64>,
    /// Peak resident memory over the whole soak, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Errors over the whole soak.
    pub errors: u64,
}

impl SystemResult {
    /// Summarises a measurement; `cpu` is the coordinator's CPU seconds in
    /// the window, if there is a coordinator.
    pub fn from_measurement(
        m: &Measurement,
        cpu: Option<f64>,
        peak_rss_mib: Option<f64>,
        bench_cpu_s: Option<f64>,
    ) -> SystemResult {
        let h = &m.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = if h.is_empty() {
            Percentiles::default()
        } else {
            Percentiles {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        let tps = m.throughput();
        SystemResult {
            completed: m.completed,
            errors: m.errors,
            error_samples: m.error_samples.clone(),
            window_s: m.window.as_secs_f64(),
            tps,
            latency_ms,
            latency_curve: curve(h),
            cpu: cpu.map(|seconds| CpuUse::new(seconds, m.completed)),
            db_cpu: None,
            context_switches_per_tx: None,
            other_cpu_s: None,
            peak_rss_mib,
            bench_cpu_s,
            queries_per_tx: None,
        }
    }
}

/// Percentiles spaced evenly in "nines" (0, 50, 75, 90, 95, 99, ...), up to
/// the maximum: what an HDR latency chart plots.
fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    // x = -log10(1 - q): 0 at q = 0, 1 at 90%, 2 at 99%, 3 at 99.9%.
    // Beyond log10(count) nines every point would be the maximum.
    let top = (h.len() as f64).log10().clamp(1.0, 5.0);
    let steps = 40;
    for i in 0..=steps {
        let x = top * f64::from(i) / f64::from(steps);
        let q = 1.0 - 10f64.powf(-x);
        points.push([q * 100.0, h.value_at_quantile(q) as f64 / 1000.0]);
    }
    points.push([100.0, h.max() as f64 / 1000.0]);
    points
}

impl Report {
    /// Writes the report as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }
}

/// The table of one scenario, printed as soon as it is measured. "others
/// s" is the CPU time everything else on the machine used in the window.
pub fn scenario_table(s: &ScenarioResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {}", s.name);
    let _ = writeln!(
        out,
        "  {:<5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9} {:>8} {:>8}",
        "",
        "tx/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "errors",
        "cpu s",
        "cpu s/1k",
        "peak MiB",
        "others s"
    );
    for (name, result) in [("raw", &s.raw), ("dtx", &s.dtx), ("peer", &s.peer)] {
        let Some(r) = result else {
            match s.peer_absent.as_deref().filter(|_| name == "peer") {
                Some(why) => {
                    let _ = writeln!(out, "  {name:<5} (not measured: {why})");
                }
                None => {
                    let _ = writeln!(out, "  {name:<5} (not measured)");
                }
            }
            continue;
        };
        let cpu = r.cpu.as_ref();
        let _ = writeln!(
            out,
            "  {:<5} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>7} {:>9} {:>8} {:>8}",
            name,
            r.tps,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.errors,
            opt(cpu.map(|c| c.seconds), 2),
            opt(cpu.map(|c| c.per_1000_tx), 3),
            opt(r.peak_rss_mib, 1),
            opt(r.other_cpu_s, 2),
        );
        if let Some(switches) = r.context_switches_per_tx {
            let _ = writeln!(
                out,
                "        {switches:.1} context switches per transaction"
            );
        }
        if let Some(db) = &r.db_cpu {
            let _ = writeln!(
                out,
                "        + PostgreSQL server: {:.2} cpu s, {:.3} cpu s/1k",
                db.seconds, db.per_1000_tx
            );
        }
        for sample in r.error_samples.iter().take(2) {
            let _ = writeln!(out, "        error: {}", truncate(sample, 200));
        }
    }
    let r = &s.ratios;
    let _ = writeln!(
        out,
        "  dtx/raw: throughput {} p99 {}   dtx/peer: throughput {} p99 {} (dtx p99 / peer p50 {})",
        opt(r.tps_dtx_over_raw, 3),
        opt(r.p99_dtx_over_raw, 2),
        opt(r.tps_dtx_over_peer, 2),
        opt(r.p99_dtx_over_peer, 2),
        opt(r.p99_dtx_over_peer_p50, 2),
    );
    out
}

/// One line per scenario: the figures the targets are read from.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "scenario",
        "raw tx/s",
        "dtx tx/s",
        "peer",
        "dtx/raw",
        "dtx/peer",
        "dtx p99",
        "peer p99",
        "peer p50",
        "p99 ratio"
    );
    for s in &report.scenarios {
        let tps = |r: &Option<SystemResult>| opt(r.as_ref().map(|r| r.tps), 0);
        let lat = |r: &Option<SystemResult>, f: fn(&Percentiles) -> f64| {
            opt(r.as_ref().map(|r| f(&r.latency_ms)), 1)
        };
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>9}",
            s.name,
            tps(&s.raw),
            tps(&s.dtx),
            tps(&s.peer),
            opt(s.ratios.tps_dtx_over_raw, 3),
            opt(s.ratios.tps_dtx_over_peer, 2),
            lat(&s.dtx, |p| p.p99),
            lat(&s.peer, |p| p.p99),
            lat(&s.peer, |p| p.p50),
            opt(s.ratios.p99_dtx_over_peer, 2),
        );
    }
    if let Some(soak) = &report.soak {
        let _ = writeln!(
            out,
            "\nsoak {}: {:.0} tx/s on an empty store, {:.0} tx/s after {} transactions ({:.2}x; medians of {} alternating windows each); RSS {} MiB now, peak {} MiB; {} errors",
            soak.scenario,
            soak.tps_empty,
            soak.tps_after,
            soak.filled,
            soak.ratio,
            soak.after_windows.len(),
            opt(soak.rss_mib_after, 1),
            opt(soak.peak_rss_mib, 1),
            soak.errors,
        );
    }
    for note in &report.settings.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
