//! Helpers shared by the end-to-end tests: start a real `dtx serve` process,
//! build registration bodies, wait for outcomes.
#![allow(dead_code)] // each test file uses its own subset

use dtx_tests::participant::FakeParticipant;
use dtx_tests::process::{DtxProcess, Http};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A coordinator process with its own temporary SQLite file.
pub struct Coordinator {
    pub process: DtxProcess,
    pub db: String,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
}

/// Arguments every test coordinator gets: a free port and short leases so
/// that recovery tests finish quickly.
fn base_args(db: &str, node_id: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db,
        "--node-id",
        node_id,
        "--lease-ms",
        "1500",
        "--claim-interval-ms",
        "200",
        "--log",
        "info,dtx_coordinator=debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dtx"))
}

pub async fn spawn(db: &str, node_id: &str, extra: &[&str]) -> DtxProcess {
    let process = DtxProcess::spawn(&binary(), &base_args(db, node_id, extra), &[])
        .await
        .expect("dtx serve starts");
    process
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("dtx becomes ready");
    process
}

impl Coordinator {
    /// A coordinator on a new SQLite file.
    pub async fn sqlite(extra: &[&str]) -> Coordinator {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite:{}", dir.path().join("dtx.db").display());
        let process = spawn(&db, "node-a", extra).await;
        Coordinator {
            process,
            db,
            _dir: Some(dir),
        }
    }

    /// A coordinator on an existing database.
    pub async fn on(db: &str, node_id: &str, extra: &[&str]) -> Coordinator {
        Coordinator {
            process: spawn(db, node_id, extra).await,
            db: db.to_owned(),
            _dir: None,
        }
    }

    /// Starts the process again on the same database (after a kill).
    pub async fn restart(&mut self, node_id: &str, extra: &[&str]) {
        self.process = spawn(&self.db, node_id, extra).await;
    }

    pub fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    pub fn db_path(&self) -> &Path {
        Path::new(self.db.trim_start_matches("sqlite:"))
    }
}

/// A saga branch calling `/{id}/action` and `/{id}/compensate` on `p`.
pub fn saga_branch(p: &FakeParticipant, id: &str) -> Value {
    json!({
        "id": id,
        "action": p.url(&format!("/{id}/action")),
        "compensate": p.url(&format!("/{id}/compensate")),
        "payload": {"branch": id}
    })
}

/// A TCC branch calling `/{id}/confirm` and `/{id}/cancel` on `p`.
pub fn tcc_branch(p: &FakeParticipant, id: &str) -> Value {
    json!({
        "id": id,
        "confirm": p.url(&format!("/{id}/confirm")),
        "cancel": p.url(&format!("/{id}/cancel")),
        "payload": {"branch": id}
    })
}

/// A 2PC branch calling `/{id}/prepare`, `/{id}/commit` and `/{id}/rollback` on `p`.
pub fn two_phase_branch(p: &FakeParticipant, id: &str) -> Value {
    branch_with_ops(p, id, &["prepare", "commit", "rollback"])
}

/// A 3PC branch calling `/{id}/can_commit`, `/{id}/pre_commit`,
/// `/{id}/do_commit` and `/{id}/abort` on `p`.
pub fn three_phase_branch(p: &FakeParticipant, id: &str) -> Value {
    branch_with_ops(p, id, &["can_commit", "pre_commit", "do_commit", "abort"])
}

fn branch_with_ops(p: &FakeParticipant, id: &str, ops: &[&str]) -> Value {
    let mut branch = json!({"id": id, "payload": {"branch": id}});
    for op in ops {
        branch[*op] = json!(p.url(&format!("/{id}/{op}")));
    }
    branch
}

/// The paths `p` was called on, in order of arrival.
pub fn paths(p: &FakeParticipant) -> Vec<String> {
    p.calls().into_iter().map(|c| c.path).collect()
}

/// The status of every branch, in registration order.
pub fn branch_statuses(t: &Value) -> Vec<String> {
    t["branches"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| b["status"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The transaction statuses its history went through, oldest first.
pub fn status_history(t: &Value) -> Vec<String> {
    t["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["kind"] == "status")
                .filter_map(|e| e["detail"].as_str())
                .map(|d| d.split(':').next().unwrap_or(d).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Fast retries so that tests of retries finish quickly.
pub fn fast_options() -> Value {
    json!({"request_timeout_ms": 1000, "retry": {"initial_ms": 20, "max_ms": 200, "multiplier": 2.0}})
}

/// Polls a transaction until `done` holds for it, or panics with its last
/// state after `timeout`.
pub async fn wait_until(
    c: &Coordinator,
    gid: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let http = Http::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (code, body) = http
            .get_json(&c.url(&format!("/v1/transactions/{gid}?wait_ms=200")))
            .await;
        if code == 200 && done(&body) {
            return body;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "transaction {gid} did not get there in {timeout:?}: {code} {body:#}\n--- log ---\n{}",
                c.process.log()
            );
        }
    }
}

/// Waits for a final status and returns the transaction.
pub async fn wait_final(c: &Coordinator, gid: &str) -> Value {
    wait_until(c, gid, Duration::from_secs(30), |t| {
        matches!(t["status"].as_str(), Some("committed" | "aborted"))
    })
    .await
}

pub fn status(t: &Value) -> &str {
    t["status"].as_str().unwrap_or("?")
}
