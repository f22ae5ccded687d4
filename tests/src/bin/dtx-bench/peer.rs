//! The peer as a load target: dtmrs (a coordinator that speaks DTM's HTTP
//! protocol) as a child process on a fresh store, driven with DTM's saga
//! and TCC API.
//!
//! 2PC is not measured on the peer: DTM runs 2PC as XA, where each
//! participant prepares a real XA transaction in its own database and the
//! coordinator commits it there; the no-op participants have no database
//! (see [`unsupported`]).
//!
//! # Waiting for the outcome the same way as dtx
//!
//! dtx's client waits inside the coordinator for the final status. DTM's
//! `submit` returns as soon as the transaction is stored (DTM has a
//! `wait_result` option; dtmrs 0.13 has none and drives the transaction in
//! the background). So, per transaction, the bench:
//! 1. points the last call of the transaction at a `/notify/` path of the
//!    no-op participants (a saga's last action; every TCC confirm), and
//!    registers a waiter for it before submitting;
//! 2. submits, then waits until the participants have seen those calls;
//! 3. asks `GET /api/dtmsvr/query?gid=` for the status until it reads
//!    `succeed`, polling after 1, 1, 2, 2, 4, 4, 8, 10, 10... ms.
//!
//! The latency is therefore "first request sent" to "final status read", as
//! for dtx, with at most a few milliseconds of polling granularity on top
//! of the peer's last write. The queries are counted (`queries_per_tx`) so
//! that the extra load they put on the peer can be judged.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::dtx::{PAYLOAD, post};
use crate::load::Target;
use crate::noop::Completions;
use crate::scenario::Workload;

/// How long a transaction may take before the bench gives up on it, the
/// same as dtx's `wait_ms`.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the peer may take to answer `/health` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest pause between two status queries.
const MAX_POLL: Duration = Duration::from_millis(10);

/// A running dtmrs and how to drive it.
pub struct PeerTarget {
    child: Child,
    pid: u32,
    base: String,
    client: reqwest::Client,
    workload: Workload,
    participants: String,
    completions: Arc<Completions>,
    /// Status queries sent, to report how much polling cost the peer.
    queries: AtomicU64,
    /// Transactions that reached the polling stage, the divisor of `queries`.
    polled: AtomicU64,
    log: PathBuf,
}

impl PeerTarget {
    /// Starts dtmrs from `binary` on `db_url` (`sqlite:<file>` or a
    /// PostgreSQL URL) on a free port of 127.0.0.1, logging at `warn` into
    /// `log`, and waits until `/health` answers.
    pub async fn start(
        binary: &Path,
        db_url: &str,
        log: &Path,
        workload: Workload,
        client: reqwest::Client,
        participants: &str,
        completions: Arc<Completions>,
    ) -> Result<PeerTarget, String> {
        let [port, grpc_port] = free_ports()?;
        let log_file =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("clone {}: {e}", log.display()))?;
        let child = Command::new(binary)
            .env("DTMRS_ADDR", format!("127.0.0.1:{port}"))
            // Only used by builds with the grpc feature; set so that two
            // peers never fight over the default port.
            .env("DTMRS_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("DTMRS_DB", db_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("dtmrs exited at once")?;
        let mut peer = PeerTarget {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            client,
            workload,
            participants: participants.to_owned(),
            completions,
            queries: AtomicU64::new(0),
            polled: AtomicU64::new(0),
            log: log.to_owned(),
        };
        peer.wait_healthy().await?;
        Ok(peer)
    }

    /// The peer's process id, for CPU and memory readings.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Status queries per transaction polled so far (warm-up included).
    pub fn queries_per_tx(&self) -> Option<f64> {
        let polled = self.polled.load(Ordering::Relaxed);
        (polled > 0).then(|| self.queries.load(Ordering::Relaxed) as f64 / polled as f64)
    }

    /// Polls `/health` (the peer prints nothing to wait for at `warn`).
    async fn wait_healthy(&mut self) -> Result<(), String> {
        let url = format!("{}/health", self.base);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "dtmrs exited ({status}) before answering; see {}",
                    self.log.display()
                ));
            }
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dtmrs did not answer {url} within {START_TIMEOUT:?}; see {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/dtmsvr/{path}", self.base)
    }

    async fn saga(&self, gid: &str, branches: u32) -> Result<(), String> {
        let p = &self.participants;
        let steps: Vec<_> = (1..=branches)
            .map(|i| {
                // The last action tells the bench it arrived.
                let notify = if i == branches { "/notify" } else { "" };
                json!({
                    "action": format!("{p}{notify}/saga/{i}/action"),
                    "compensate": format!("{p}/saga/{i}/compensate"),
                    "payload": PAYLOAD,
                })
            })
            .collect();
        let body = json!({"gid": gid, "trans_type": "saga", "steps": steps});
        let done = self.completions.expect(gid, 1);
        let submitted = post(&self.client, &self.api("submit"), body.to_string()).await;
        self.finish(gid, submitted, done).await
    }

    async fn tcc(&self, gid: &str, branches: u32) -> Result<(), String> {
        let p = &self.participants;
        let prepare = json!({"gid": gid, "trans_type": "tcc"});
        expect_success(&post(&self.client, &self.api("prepare"), prepare.to_string()).await?)?;
        for i in 1..=branches {
            // dtmrs finds a TCC branch by its two-digit number, as DTM does.
            let branch = json!({
                "gid": gid,
                "branch_id": format!("{i:02}"),
                "trans_type": "tcc",
                "try": format!("{p}/tcc/{i}/try"),
                "confirm": format!("{p}/notify/tcc/{i}/confirm"),
                "cancel": format!("{p}/tcc/{i}/cancel"),
                "data": PAYLOAD,
            });
            let registered = post(
                &self.client,
                &self.api("registerBranch"),
                branch.to_string(),
            )
            .await?;
            expect_success(&registered)?;
            post(
                &self.client,
                &format!("{p}/tcc/{i}/try"),
                PAYLOAD.to_owned(),
            )
            .await?;
        }
        let done = self.completions.expect(gid, branches);
        let submit = json!({"gid": gid, "trans_type": "tcc"});
        let submitted = post(&self.client, &self.api("submit"), submit.to_string()).await;
        self.finish(gid, submitted, done).await
    }

    /// Waits for the notified calls, then for `succeed` in the store.
    async fn finish(
        &self,
        gid: &str,
        submitted: Result<Vec<u8>, String>,
        done: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + OUTCOME_TIMEOUT;
        let waited = async {
            expect_success(&submitted?)?;
            match tokio::time::timeout_at(deadline, done).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(format!(
                    "{gid}: the last participant call did not arrive within {OUTCOME_TIMEOUT:?}"
                )),
            }
        }
        .await;
        if waited.is_err() {
            self.completions.forget(gid);
        }
        waited?;
        let url = format!("{}?gid={gid}", self.api("query"));
        self.polled.fetch_add(1, Ordering::Relaxed);
        let mut round = 0u32;
        loop {
            self.queries.fetch_add(1, Ordering::Relaxed);
            let status = self.status(&url).await?;
            match status.as_str() {
                "succeed" => return Ok(()),
                "failed" => return Err(format!("{gid}: outcome `failed`")),
                _ if Instant::now() >= deadline => {
                    return Err(format!("{gid}: still `{status}` after {OUTCOME_TIMEOUT:?}"));
                }
                _ => {}
            }
            // 1, 1, 2, 2, 4, 4, 8, 8, 10... ms: short at first, since the
            // peer's final write usually follows the last call closely.
            let pause = Duration::from_millis(1 << (round / 2).min(4)).min(MAX_POLL);
            tokio::time::sleep(pause).await;
            round += 1;
        }
    }

    async fn status(&self, url: &str) -> Result<String, String> {
        #[derive(Deserialize)]
        struct View {
            status: String,
        }
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let code = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !code.is_success() {
            return Err(format!(
                "GET {url}: HTTP {code}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        let view: View = serde_json::from_slice(&bytes)
            .map_err(|e| format!("GET {url}: {e}: {}", String::from_utf8_lossy(&bytes)))?;
        Ok(view.status)
    }
}

impl Target for PeerTarget {
    async fn run_one(&self, seq: u64) -> Result<(), String> {
        let gid = format!("bench-{seq}");
        match self.workload {
            Workload::Saga { branches } => self.saga(&gid, branches).await,
            Workload::Tcc { branches } => self.tcc(&gid, branches).await,
            // The runner never starts the peer for these.
            Workload::TwoPc { .. } => Err(unsupported(self.workload)
                .unwrap_or("not supported")
                .to_owned()),
        }
    }
}

/// Why the peer cannot run `workload`, in one line; `None` when it can.
pub fn unsupported(workload: Workload) -> Option<&'static str> {
    match workload {
        Workload::Saga { .. } | Workload::Tcc { .. } => None,
        Workload::TwoPc { .. } => Some(
            "DTM's 2PC is XA: each participant must run real XA transactions \
             against a database, which the no-op participants cannot",
        ),
    }
}

/// DTM answers 200 with `{"dtm_result":"FAILURE"}` for some refusals.
fn expect_success(body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if text.contains("FAILURE") {
        Err(format!("dtmrs refused: {text}"))
    } else {
        Ok(())
    }
}

/// Two ports that were free a moment ago (both held until both are
/// found, so they differ). The peer must be told its address (it cannot
/// report one it chose), so the bench cannot bind first; a clash makes the
/// start fail with the peer's log, not a wrong result.
fn free_ports() -> Result<[u16; 2], String> {
    let bind = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("find a free port: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        Ok::<_, String>((listener, port))
    };
    let (_first, a) = bind()?;
    let (_second, b) = bind()?;
    Ok([a, b])
}
