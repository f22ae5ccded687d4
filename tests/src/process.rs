//! Control of a real `dtx` coordinator process for end-to-end tests.
//!
//! [`DtxProcess::spawn`] starts the binary (normally with
//! `--listen 127.0.0.1:0`) and returns once it has printed
//! `dtx: listening on http://ADDR`, the one line the coordinator writes when
//! its listener is bound; no test sleeps to wait for it. The rest of its
//! stdout and stderr is kept for failure messages ([`DtxProcess::log`]).
//! Signals let a test crash it (SIGKILL), stop it politely (SIGTERM) or
//! freeze it past its lease (SIGSTOP/SIGCONT), which is how a long GC-like
//! stall is simulated. [`Http`] is a small JSON client for the API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The line prefix the coordinator prints once its HTTP listener is bound.
pub const LISTENING_PREFIX: &str = "dtx: listening on http://";

/// How long [`DtxProcess::spawn`] waits for the listening line. Generous
/// because a cold CI machine may run migrations before binding.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the process printed, shared with the reader tasks.
#[derive(Debug, Default)]
struct Output {
    text: Mutex<String>,
    /// Bumped after every line, so `wait_for_log` wakes without polling.
    lines: watch::Sender<u64>,
}

impl Output {
    fn push_line(&self, line: &str) {
        {
            let mut text = self.text.lock().unwrap_or_else(|e| e.into_inner());
            text.push_str(line);
            text.push('\n');
        }
        self.lines.send_modify(|n| *n += 1);
    }

    fn snapshot(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running coordinator process. Dropping it kills the process (SIGKILL).
#[derive(Debug)]
pub struct DtxProcess {
    child: Child,
    pid: Pid,
    addr: SocketAddr,
    output: Arc<Output>,
    /// The stdout and stderr readers; they end at EOF and are aborted on drop.
    readers: Vec<JoinHandle<()>>,
}

impl DtxProcess {
    /// Starts `binary` with `args` and extra environment `envs`, and waits
    /// (at most [`SPAWN_TIMEOUT`]) until it prints the listening line.
    ///
    /// Errors, with everything the process printed, if it cannot start,
    /// exits first, prints an address that does not parse, or times out (it
    /// is then killed).
    pub async fn spawn(
        binary: &Path,
        args: &[String],
        envs: &[(String, String)],
    ) -> Result<DtxProcess, String> {
        let mut child = Command::new(binary)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let raw_pid = child
            .id()
            .ok_or("the process exited before it could be inspected")?;
        let pid = Pid::from_raw(i32::try_from(raw_pid).map_err(|e| format!("pid {raw_pid}: {e}"))?);

        let output = Arc::new(Output::default());
        let (listening_tx, listening_rx) = oneshot::channel();
        let stdout = child.stdout.take().ok_or("stdout was not captured")?;
        let stderr = child.stderr.take().ok_or("stderr was not captured")?;
        let readers = vec![
            tokio::spawn(read_lines(stdout, output.clone(), Some(listening_tx))),
            tokio::spawn(read_lines(stderr, output.clone(), None)),
        ];
        let mut process = DtxProcess {
            child,
            pid,
            // Replaced below once the listening line arrives.
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            output,
            readers,
        };

        let announced = match tokio::time::timeout(SPAWN_TIMEOUT, listening_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                // stdout closed without the line: the process has (almost
                // certainly) exited; wait for it so the status is accurate.
                let status = process.wait_exit(Duration::from_secs(5)).await;
                process.drain_readers().await;
                return Err(format!(
                    "{} closed stdout without printing `{LISTENING_PREFIX}ADDR` (exit status: {}); output:\n{}",
                    binary.display(),
                    describe(status),
                    process.log()
                ));
            }
            Err(_) => {
                process.kill9().await;
                process.drain_readers().await;
                return Err(format!(
                    "{} did not print `{LISTENING_PREFIX}ADDR` within {SPAWN_TIMEOUT:?}; it was killed. Output:\n{}",
                    binary.display(),
                    process.log()
                ));
            }
        };
        process.addr = announced.parse().map_err(|e| {
            format!(
                "cannot parse the announced address {announced:?}: {e}; output:\n{}",
                process.log()
            )
        })?;
        Ok(process)
    }

    /// The address the coordinator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `base_url()` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Everything the process has printed so far, stdout and stderr
    /// interleaved by arrival; meant for failure messages.
    pub fn log(&self) -> String {
        self.output.snapshot()
    }

    /// Waits until the output contains `needle` (a line already printed
    /// counts). Wakes on each new line; errors with the log on timeout.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let mut lines = self.output.lines.subscribe();
        let seen = lines.wait_for(|_| self.output.snapshot().contains(needle));
        match tokio::time::timeout(timeout, seen).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "the output did not contain {needle:?} within {timeout:?}; output:\n{}",
                self.log()
            )),
        }
    }

    /// Crashes the process with SIGKILL and waits for it to exit. If it
    /// has already exited, returns that status.
    ///
    /// # Panics
    /// If waiting for the child fails, which the OS only reports for a
    /// child that is not ours.
    pub async fn kill9(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        // Ignore the result: the process may exit between the check above
        // and the signal, and `wait` below reports how it ended either way.
        let _ = kill(self.pid, Signal::SIGKILL);
        self.child
            .wait()
            .await
            .unwrap_or_else(|e| panic!("wait for pid {} after SIGKILL: {e}", self.pid))
    }

    /// Asks the process to shut down (SIGTERM); follow with
    /// [`wait_exit`](Self::wait_exit).
    ///
    /// # Panics
    /// If the signal cannot be sent, e.g. the process was already reaped.
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets and leases but
    /// does nothing, like a long GC pause. Undo with [`resume`](Self::resume).
    ///
    /// # Panics
    /// If the signal cannot be sent.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets a paused process run again (SIGCONT).
    ///
    /// # Panics
    /// If the signal cannot be sent.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still
    /// running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        // `Child::wait` is cancel safe, so timing out loses nothing.
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => panic!("wait for pid {}: {e}", self.pid),
            Err(_) => None,
        }
    }

    /// Polls `GET {base}/readyz` until it answers 200, at most `timeout`.
    /// Polling is acceptable here: the readiness lives in another process
    /// and there is nothing to subscribe to.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("build HTTP client: {e}"))?;
        let url = self.url("/readyz");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().as_u16() == 200 => return Ok(()),
                Ok(response) => format!("status {}", response.status()),
                Err(e) => format!("error {e}"),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{url} was not ready within {timeout:?} (last answer: {last}); output:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: Signal) {
        if let Err(e) = kill(self.pid, signal) {
            panic!(
                "cannot send {signal} to pid {}: {e}; output:\n{}",
                self.pid,
                self.log()
            );
        }
    }

    /// Lets the readers copy the last output into the log (bounded, since a
    /// grandchild may still hold the pipes open).
    async fn drain_readers(&mut self) {
        for reader in &mut self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
    }
}

impl Drop for DtxProcess {
    fn drop(&mut self) {
        // The child itself is killed by `kill_on_drop`; a stopped process
        // dies from SIGKILL too, so a paused coordinator does not linger.
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Copies `stream` line by line into `output`; on stdout, also reports the
/// address of the first listening line through `listening`.
async fn read_lines(
    stream: impl AsyncRead + Unpin,
    output: Arc<Output>,
    mut listening: Option<oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    // A read error (e.g. invalid UTF-8) ends the copy; what came before is kept.
    while let Ok(Some(line)) = lines.next_line().await {
        output.push_line(&line);
        if let Some(addr) = line.trim_end().strip_prefix(LISTENING_PREFIX)
            && let Some(tx) = listening.take()
        {
            let _ = tx.send(addr.trim_end_matches('/').to_owned());
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "still running".to_owned(), |s| s.to_string())
}

/// A small JSON client for tests; transport failures panic with the URL,
/// since a test cannot go on without the answer.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with a 30 s request timeout, long enough for calls that
    /// wait for a transaction's outcome.
    pub fn new() -> Http {
        Http::with_timeout(Duration::from_secs(30))
    }

    /// A client whose every request gives up after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Http {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("build reqwest client");
        Http { client }
    }

    /// POSTs `body` as JSON; returns the status, the body as JSON and the
    /// `content-type` header ("" if absent). The body is `Value::Null` if
    /// empty and a JSON string holding the text if it is not JSON.
    pub async fn post_json(&self, url: &str, body: &Value) -> (u16, Value, String) {
        let response = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        read_json(url, response).await
    }

    /// GETs `url`; returns the status and the body as in
    /// [`post_json`](Self::post_json).
    pub async fn get_json(&self, url: &str) -> (u16, Value) {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let (status, body, _) = read_json(url, response).await;
        (status, body)
    }
}

async fn read_json(url: &str, response: reqwest::Response) -> (u16, Value, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("read the body from {url}: {e}"));
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body, content_type)
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
