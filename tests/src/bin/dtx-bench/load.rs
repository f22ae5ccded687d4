//! The load generator: N clients (tokio tasks) run one [`Target`]'s
//! transactions back to back, each waiting for its outcome before it starts
//! the next (a closed loop), and the run is measured in a window after a
//! warm-up.
//!
//! A transaction is counted when it *finishes* inside the window, so the
//! throughput is exactly "finished in the window / window length", and its
//! latency (start to outcome) goes into an HDR histogram in microseconds.
//! Errors are counted over the whole run, warm-up included, because a
//! failure during the warm-up is still a failure a person should see.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// How many error messages are kept as examples.
const ERROR_SAMPLES: usize = 5;

/// Pause after a failed transaction, so that a coordinator that is down
/// (connection refused at once) does not turn the run into a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Highest latency the histogram holds: two minutes, in microseconds.
/// Longer ones are clamped to it (and are errors anyway: every wait the
/// bench asks for is 30 s).
const MAX_LATENCY_US: u64 = 120_000_000;

/// Something the load generator can run one transaction against: dtx, the
/// peer, or the raw calls with no coordinator.
pub trait Target: Send + Sync + 'static {
    /// Runs one transaction, numbered `seq` (unique in the bench run, so it
    /// can name the gid), and returns once its outcome is known. `Err` says
    /// why it did not end as it should (non-2xx, non-final outcome, ...).
    fn run_one(&self, seq: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// When the clients stop.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After a warm-up, measure for a fixed time.
    Window {
        /// Transactions run but not counted first, so that connections,
        /// caches and the store settle.
        warmup: Duration,
        /// The measured window.
        duration: Duration,
    },
    /// Run exactly this many transactions (no warm-up); the window runs
    /// from the start to the last outcome.
    Count(u64),
}

/// What one run measured.
#[derive(Debug)]
pub struct Measurement {
    /// Transactions that finished well inside the window.
    pub completed: u64,
    /// Transactions that failed, over the whole run.
    pub errors: u64,
    /// A few of the error messages.
    pub error_samples: Vec<String>,
    /// The window's length.
    pub window: Duration,
    /// Latency of the counted transactions, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Measurement {
    /// Transactions finished per second in the window.
    pub fn throughput(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 {
            self.completed as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Numbers the transactions of the whole bench run, so gids never repeat,
/// even when one store sees several runs (the soak test).
#[derive(Debug, Default)]
pub struct Sequence(AtomicU64);

impl Sequence {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// What each client task reports back.
struct ClientResult {
    completed: u64,
    errors: u64,
    error_samples: Vec<String>,
    latency_us: Histogram<u64>,
    /// When this client's last counted transaction finished.
    last_finish: Option<Instant>,
}

/// Runs `concurrency` clients against `target` until `stop`.
pub async fn run<T: Target>(
    target: Arc<T>,
    concurrency: usize,
    stop: Stop,
    sequence: Arc<Sequence>,
) -> Measurement {
    let start = Instant::now();
    let (measure_from, end) = match stop {
        Stop::Window { warmup, duration } => (start + warmup, Some(start + warmup + duration)),
        Stop::Count(_) => (start, None),
    };
    // In count mode, each transaction takes a ticket first; none is started
    // past the count.
    let tickets = Arc::new(AtomicU64::new(0));
    let limit = match stop {
        Stop::Count(count) => count,
        Stop::Window { .. } => u64::MAX,
    };

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let target = target.clone();
        let sequence = sequence.clone();
        let tickets = tickets.clone();
        clients.spawn(async move {
            let mut result = ClientResult {
                completed: 0,
                errors: 0,
                error_samples: Vec::new(),
                latency_us: new_histogram(),
                last_finish: None,
            };
            loop {
                let began = Instant::now();
                if end.is_some_and(|end| began >= end) {
                    break;
                }
                if tickets.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
                let outcome = target.run_one(sequence.next()).await;
                let finished = Instant::now();
                match outcome {
                    Ok(()) => {
                        let in_window =
                            finished >= measure_from && end.is_none_or(|end| finished <= end);
                        if in_window {
                            result.completed += 1;
                            let micros = u64::try_from((finished - began).as_micros())
                                .unwrap_or(u64::MAX)
                                .clamp(1, MAX_LATENCY_US);
                            result.latency_us.saturating_record(micros);
                            result.last_finish = Some(finished);
                        }
                    }
                    Err(message) => {
                        result.errors += 1;
                        if result.error_samples.len() < ERROR_SAMPLES {
                            result.error_samples.push(message);
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
            result
        });
    }

    let mut total = Measurement {
        completed: 0,
        errors: 0,
        error_samples: Vec::new(),
        window: Duration::ZERO,
        latency_us: new_histogram(),
    };
    let mut last_finish = measure_from;
    while let Some(joined) = clients.join_next().await {
        let Ok(client) = joined else {
            total.errors += 1;
            total
                .error_samples
                .push("a client task panicked".to_owned());
            continue;
        };
        total.completed += client.completed;
        total.errors += client.errors;
        for message in client.error_samples {
            if total.error_samples.len() < ERROR_SAMPLES {
                total.error_samples.push(message);
            }
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = total.latency_us.add(&client.latency_us);
        if let Some(finish) = client.last_finish {
            last_finish = last_finish.max(finish);
        }
    }
    total.window = match end {
        Some(end) => end - measure_from,
        None => last_finish - measure_from,
    };
    total
}

fn new_histogram() -> Histogram<u64> {
    // Three significant digits: 0.1% resolution at every magnitude.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}
