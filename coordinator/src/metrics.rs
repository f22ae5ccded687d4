//! Prometheus metrics of the coordinator, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    mode: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    op: &'static str,
    reply: &'static str,
}

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    registered: Family<ModeLabel, Counter>,
    finished: Family<FinishedLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    flagged: Counter,
    store_retries: Counter,
    fenced: Counter,
    driven: Gauge,
    driver_restarts: Counter,
    alive_tasks: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dtx");
        let metrics = Metrics {
            registered: Family::default(),
            finished: Family::default(),
            calls: Family::default(),
            flagged: Counter::default(),
            store_retries: Counter::default(),
            fenced: Counter::default(),
            driven: Gauge::default(),
            driver_restarts: Counter::default(),
            alive_tasks: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "transactions_registered",
            "Global transactions registered",
            metrics.registered.clone(),
        );
        registry.register(
            "transactions_finished",
            "Global transactions that reached a final status",
            metrics.finished.clone(),
        );
        registry.register(
            "branch_calls",
            "Participant calls by operation and classified reply",
            metrics.calls.clone(),
        );
        registry.register(
            "transactions_flagged",
            "Transactions flagged for an operator (a phase-two call kept failing)",
            metrics.flagged.clone(),
        );
        registry.register(
            "store_write_retries",
            "Writes retried because the database was unavailable",
            metrics.store_retries.clone(),
        );
        registry.register(
            "fenced_writes",
            "Writes refused because another coordinator took the transaction over",
            metrics.fenced.clone(),
        );
        registry.register(
            "transactions_driven",
            "Transactions this coordinator is driving now",
            metrics.driven.clone(),
        );
        registry.register(
            "driver_restarts",
            "Drivers started again after a store failure stopped them",
            metrics.driver_restarts.clone(),
        );
        registry.register(
            "runtime_alive_tasks",
            "Tasks alive in the coordinator's async runtime, read when scraped: \
             one that only grows is a leak",
            metrics.alive_tasks.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// A transaction was registered.
    pub fn registered(&self, mode: dtx_protocol::Mode) {
        self.registered
            .get_or_create(&ModeLabel {
                mode: mode.as_str(),
            })
            .inc();
    }

    /// A transaction reached a final status.
    pub fn finished(&self, mode: dtx_protocol::Mode, status: dtx_protocol::Status) {
        self.finished
            .get_or_create(&FinishedLabels {
                mode: mode.as_str(),
                status: status.as_str(),
            })
            .inc();
    }

    /// A participant call ended with `reply`.
    pub fn call(&self, op: dtx_protocol::Op, reply: dtx_protocol::Reply) {
        let reply = match reply {
            dtx_protocol::Reply::Success => "success",
            dtx_protocol::Reply::ReadOnly => "read_only",
            dtx_protocol::Reply::Refused => "refused",
            dtx_protocol::Reply::StillWorking => "still_working",
            dtx_protocol::Reply::Unknown => "unknown",
        };
        self.calls
            .get_or_create(&CallLabels {
                op: op.as_str(),
                reply,
            })
            .inc();
    }

    /// A transaction was flagged for an operator.
    pub fn flagged(&self) {
        self.flagged.inc();
    }

    /// A write is retried because the database was unavailable.
    pub fn store_retry(&self) {
        self.store_retries.inc();
    }

    /// A write was fenced out.
    pub fn fenced(&self) {
        self.fenced.inc();
    }

    /// A driver started (`+1`) or stopped (`-1`).
    pub fn driving(&self, delta: i64) {
        self.driven.inc_by(delta);
    }

    /// A driver stopped by a store failure was started again.
    pub fn driver_restarted(&self) {
        self.driver_restarts.inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.alive_tasks
                .set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
