//! dtx as a load target: a `dtx serve` child process on a fresh store, and
//! the requests of one transaction of each workload, as the README gives
//! them.
//!
//! Every transaction waits for its outcome inside the coordinator
//! (`?wait_ms=30000`), so the latency is "first request sent" to "final
//! status received", and a transaction counts only if that status is
//! `committed`. A 2PC transaction is registered like a saga, with
//! `"mode": "2pc"` (`docs/two-and-three-phase.md`): the coordinator
//! prepares, decides and commits inside that one request.

use std::path::Path;

use dtx_tests::process::DtxProcess;
use serde::Deserialize;
use serde_json::json;

use crate::load::Target;
use crate::scenario::Workload;

/// How long a request asks the coordinator to wait for the outcome.
const WAIT_MS: u32 = 30_000;

/// The same small business payload on every branch, for dtx, the peer and
/// the raw calls alike.
pub const PAYLOAD: &str = r#"{"amount":1}"#;

/// A running coordinator and how to drive it.
pub struct DtxTarget {
    process: DtxProcess,
    client: reqwest::Client,
    workload: Workload,
    /// Everything of a saga's or a 2PC transaction's registration body
    /// after the gid, serialised once: only the gid changes from one
    /// transaction to the next.
    register_rest: String,
    /// The participants' base URL.
    participants: String,
}

impl DtxTarget {
    /// Starts `dtx serve` from `binary` on `db_url`, listening on a free
    /// port of 127.0.0.1, with its log at `warn` (the peer runs at `warn`
    /// too: neither pays for per-request logging).
    pub async fn start(
        binary: &Path,
        db_url: &str,
        workload: Workload,
        client: reqwest::Client,
        participants: &str,
    ) -> Result<DtxTarget, String> {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db_url,
            "--log",
            "warn",
        ]
        .map(String::from);
        let process = DtxProcess::spawn(binary, &args, &[]).await?;
        process
            .wait_ready(std::time::Duration::from_secs(30))
            .await?;
        Ok(DtxTarget {
            process,
            client,
            workload,
            register_rest: register_rest(workload, participants),
            participants: participants.to_owned(),
        })
    }

    /// The coordinator's process id, for CPU and memory readings.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything the coordinator printed, for error reports.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// A saga or a 2PC transaction: one registration that waits for the
    /// outcome.
    async fn register_and_wait(&self, gid: &str) -> Result<(), String> {
        let body = format!(r#"{{"gid":"{gid}",{}"#, self.register_rest);
        let url = self
            .process
            .url(&format!("/v1/transactions?wait_ms={WAIT_MS}"));
        let answer = post(&self.client, &url, body).await?;
        expect_committed("register", &answer)
    }

    async fn tcc(&self, gid: &str, branches: u32) -> Result<(), String> {
        let open = format!(r#"{{"gid":"{gid}","mode":"tcc"}}"#);
        post(&self.client, &self.process.url("/v1/transactions"), open).await?;
        let register = self
            .process
            .url(&format!("/v1/transactions/{gid}/branches"));
        let p = &self.participants;
        for i in 1..=branches {
            let branch = json!({
                "id": format!("b{i}"),
                "confirm": format!("{p}/tcc/{i}/confirm"),
                "cancel": format!("{p}/tcc/{i}/cancel"),
                "payload": {"amount": 1},
            });
            post(&self.client, &register, branch.to_string()).await?;
            // The initiator calls Try itself, after registering the branch.
            post(
                &self.client,
                &format!("{p}/tcc/{i}/try"),
                PAYLOAD.to_owned(),
            )
            .await?;
        }
        let commit = self
            .process
            .url(&format!("/v1/transactions/{gid}/commit?wait_ms={WAIT_MS}"));
        let answer = post(&self.client, &commit, String::new()).await?;
        expect_committed("commit", &answer)
    }
}

impl Target for DtxTarget {
    async fn run_one(&self, seq: u64) -> Result<(), String> {
        let gid = format!("bench-{seq}");
        match self.workload {
            Workload::Saga { .. } | Workload::TwoPc { .. } => self.register_and_wait(&gid).await,
            Workload::Tcc { branches } => self.tcc(&gid, branches).await,
        }
    }
}

/// `"mode":"saga","branches":[...]}` (or `"2pc"`): the registration body
/// without its opening brace and gid; empty for TCC, which registers its
/// branches one by one.
fn register_rest(workload: Workload, p: &str) -> String {
    let (mode, branches): (&str, Vec<_>) = match workload {
        Workload::Saga { branches } => (
            "saga",
            (1..=branches)
                .map(|i| {
                    json!({
                        "id": format!("b{i}"),
                        "action": format!("{p}/saga/{i}/action"),
                        "compensate": format!("{p}/saga/{i}/compensate"),
                        "payload": {"amount": 1},
                    })
                })
                .collect(),
        ),
        Workload::TwoPc { branches } => (
            "2pc",
            (1..=branches)
                .map(|i| {
                    json!({
                        "id": format!("b{i}"),
                        "prepare": format!("{p}/2pc/{i}/prepare"),
                        "commit": format!("{p}/2pc/{i}/commit"),
                        "rollback": format!("{p}/2pc/{i}/rollback"),
                        "payload": {"amount": 1},
                    })
                })
                .collect(),
        ),
        Workload::Tcc { .. } => return String::new(),
    };
    let body = json!({"mode": mode, "branches": branches}).to_string();
    // Drop the opening `{`: the gid goes there.
    body[1..].to_owned()
}

/// The part of a transaction answer the bench reads.
#[derive(Deserialize)]
struct Answer {
    status: String,
}

/// POSTs a JSON body and returns the answer's body; a transport error or
/// a non-2xx status is an error that names the URL.
pub async fn post(client: &reqwest::Client, url: &str, body: String) -> Result<Vec<u8>, String> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "POST {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok(bytes.to_vec())
}

fn expect_committed(step: &str, body: &[u8]) -> Result<(), String> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{step}: not a transaction ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })?;
    if answer.status == "committed" {
        Ok(())
    } else {
        Err(format!(
            "{step}: outcome `{}`, not committed",
            answer.status
        ))
    }
}
