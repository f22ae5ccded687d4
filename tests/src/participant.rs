//! A scriptable fake participant: a real HTTP server for integration tests.
//!
//! Integration tests point the coordinator at a [`FakeParticipant`] instead of
//! a real service. Every path answers every method; what a path answers is a
//! script: a queue of [`Answer`]s used one per call, then that path's default
//! (200 with `{}` unless changed). Every call is recorded with its headers,
//! JSON body and arrival time, so a test can assert exactly which branch
//! phases the coordinator called, in which order and how often.
//!
//! The server binds `127.0.0.1:0` before [`FakeParticipant::start`] returns,
//! so the coordinator can call it at once: no test ever sleeps to wait for it.
//!
//! # Layout
//! - this file: the script ([`Answer`]), the record ([`Call`]) and the
//!   handle tests use ([`FakeParticipant`]);
//! - `server`: the HTTP server that records calls and carries out answers.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use server::{Running, serve};

mod server;

/// How long [`FakeParticipant::stop`] lets open connections finish before it
/// cuts them. Every waiting answer already gives up on stop, so this only
/// bounds a client that stalls in the middle of sending a request.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What the fake answers to one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// This status with the body `{}` (e.g. 200, 409 to refuse, 425 for
    /// "still working", 500 for an unknown outcome).
    Status(u16),
    /// This status with this JSON body.
    Json(u16, Value),
    /// The inner answer, after this delay. Used to make the coordinator's
    /// per-request timeout fire. Build it with [`Answer::delayed`].
    Delay(Duration, Box<Answer>),
    /// 200 `{}` with `dtx-vote: read-only`: a 2PC participant's read-only vote.
    ReadOnlyVote,
    /// Never answer; the connection is closed when the server stops.
    Hang,
    /// Close the connection without writing any response.
    Drop,
}

impl Answer {
    /// `answer`, given after `delay`.
    pub fn delayed(delay: Duration, answer: Answer) -> Answer {
        Answer::Delay(delay, Box::new(answer))
    }

    /// Panics on a status code HTTP cannot carry, so a typo in a test's
    /// script fails where it is written rather than as a puzzling 500 later.
    fn validate(&self) {
        match self {
            Answer::Status(code) | Answer::Json(code, _) => {
                assert!(
                    StatusCode::from_u16(*code).is_ok(),
                    "Answer with invalid HTTP status {code}"
                );
            }
            Answer::Delay(_, inner) => inner.validate(),
            Answer::ReadOnlyVote | Answer::Hang | Answer::Drop => {}
        }
    }
}

/// One call the fake received, recorded when it arrived (before answering).
#[derive(Clone, Debug)]
pub struct Call {
    /// The HTTP method (the coordinator always POSTs).
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The query string, if there was one.
    pub query: Option<String>,
    /// Every request header, including the `dtx-*` branch context.
    pub headers: HeaderMap,
    /// The body parsed as JSON; `Value::Null` if it was empty or not JSON.
    pub body: Value,
    /// The body exactly as received.
    pub raw_body: Bytes,
    /// When the request arrived.
    pub at: Instant,
}

impl Call {
    /// The value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `dtx-gid` header: the global transaction id.
    pub fn gid(&self) -> Option<&str> {
        self.header("dtx-gid")
    }

    /// The `dtx-branch` header: the branch id.
    pub fn branch(&self) -> Option<&str> {
        self.header("dtx-branch")
    }

    /// The `dtx-op` header: the phase (action, compensate, try, confirm, ...).
    pub fn op(&self) -> Option<&str> {
        self.header("dtx-op")
    }

    /// The `dtx-mode` header: saga, tcc, 2pc or 3pc.
    pub fn mode(&self) -> Option<&str> {
        self.header("dtx-mode")
    }

    /// The W3C `traceparent` header.
    pub fn traceparent(&self) -> Option<&str> {
        self.header("traceparent")
    }
}

/// What one path answers: the scripted queue, then its default.
#[derive(Debug, Default)]
struct PathScript {
    queue: VecDeque<Answer>,
    default: Option<Answer>,
}

/// Everything the handler and the test share; kept across restarts.
#[derive(Debug)]
struct Shared {
    /// Scripts, calls and the fallback, behind one lock so that picking an
    /// answer and recording the call happen in the same order.
    state: Mutex<ScriptState>,
    /// Counts arrivals; `wait_for_calls` waits on it instead of polling.
    arrivals: watch::Sender<u64>,
    /// When the fake was created; failure messages show times relative to it.
    started: Instant,
}

#[derive(Debug)]
struct ScriptState {
    paths: HashMap<String, PathScript>,
    fallback: Answer,
    calls: Vec<Call>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        // A panicking test thread must not hide the calls from the next
        // assertion, so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call` and returns the answer its path gives now: the next
    /// scripted one, else the path's default, else the fallback.
    fn record(&self, call: Call) -> Answer {
        let answer = {
            let mut state = self.lock();
            let fallback = state.fallback.clone();
            let script = state.paths.entry(call.path.clone()).or_default();
            let answer = script
                .queue
                .pop_front()
                .or_else(|| script.default.clone())
                .unwrap_or(fallback);
            state.calls.push(call);
            answer
        };
        // Announce the arrival only after the lock is released, so a waiter
        // woken here can read the calls at once.
        self.arrivals.send_modify(|n| *n += 1);
        answer
    }
}

/// A fake participant service listening on `127.0.0.1`.
///
/// Dropping it aborts the server task and every connection; call
/// [`FakeParticipant::stop`] to stop gracefully and wait for it.
#[derive(Debug)]
pub struct FakeParticipant {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl FakeParticipant {
    /// Binds `127.0.0.1:0` and starts serving; calls are accepted as soon as
    /// this returns.
    ///
    /// # Panics
    /// If no local port can be bound, which leaves the test nothing to do.
    pub async fn start() -> FakeParticipant {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake participant");
        let addr = listener
            .local_addr()
            .expect("local address of a bound listener");
        let shared = Arc::new(Shared {
            state: Mutex::new(ScriptState {
                paths: HashMap::new(),
                fallback: Answer::Status(200),
                calls: Vec::new(),
            }),
            arrivals: watch::Sender::new(0),
            started: Instant::now(),
        });
        let running = Some(serve(listener, shared.clone()));
        FakeParticipant {
            addr,
            shared,
            running,
        }
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` on this fake, e.g. `url("/inv/action")`; a missing
    /// leading slash is added.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), normalize(path))
    }

    /// Appends `answers` to the script of `path`; each call to the path
    /// uses the next one, and once they are used up the path's default.
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        let answers: Vec<Answer> = answers.into_iter().collect();
        answers.iter().for_each(Answer::validate);
        let mut state = self.shared.lock();
        let script = state.paths.entry(normalize(path)).or_default();
        script.queue.extend(answers);
    }

    /// Sets what `path` answers once its script is used up.
    pub fn set_default(&self, path: &str, answer: Answer) {
        answer.validate();
        let mut state = self.shared.lock();
        state.paths.entry(normalize(path)).or_default().default = Some(answer);
    }

    /// Sets what every path without its own default answers once its script
    /// is used up (initially `Answer::Status(200)`).
    pub fn set_fallback(&self, answer: Answer) {
        answer.validate();
        self.shared.lock().fallback = answer;
    }

    /// Every call received so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls received so far on `path`, in arrival order.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        let path = normalize(path);
        let state = self.shared.lock();
        state
            .calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// How many calls `path` has received.
    pub fn count(&self, path: &str) -> usize {
        let path = normalize(path);
        let state = self.shared.lock();
        state.calls.iter().filter(|c| c.path == path).count()
    }

    /// Waits until `path` has received at least `n` calls. Wakes on each
    /// arrival (no polling). On timeout the error lists every call that did
    /// arrive, so the failure message explains itself.
    pub async fn wait_for_calls(
        &self,
        path: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let path = normalize(path);
        let mut arrivals = self.shared.arrivals.subscribe();
        // `wait_for` checks the condition before it first waits, so calls
        // that arrived before this line are counted too.
        let waited =
            tokio::time::timeout(timeout, arrivals.wait_for(|_| self.count(&path) >= n)).await;
        if matches!(waited, Ok(Ok(_))) {
            return Ok(());
        }
        let calls = self.calls();
        let mut msg = format!(
            "expected at least {n} call(s) to {path} within {timeout:?}, got {}; all {} call(s) received:",
            self.count(&path),
            calls.len()
        );
        for call in &calls {
            let since = call.at.saturating_duration_since(self.shared.started);
            let _ = write!(
                msg,
                "\n  +{since:?} {} {} gid={} branch={} op={} body={}",
                call.method,
                call.path,
                call.gid().unwrap_or("-"),
                call.branch().unwrap_or("-"),
                call.op().unwrap_or("-"),
                call.body
            );
        }
        Err(msg)
    }

    /// Stops gracefully: new connections are refused, idle ones closed,
    /// hanging and delayed answers drop their connection. Scripts and
    /// recorded calls are kept. Does nothing if already stopped.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.shutdown.send_replace(true);
        let mut task = running.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Starts serving again on the same port after [`stop`](Self::stop),
    /// keeping scripts and recorded calls; simulates a participant that was
    /// down and came back.
    pub async fn restart(&mut self) -> Result<(), String> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| format!("rebind {} for the fake participant: {e}", self.addr))?;
        self.running = Some(serve(listener, self.shared.clone()));
        Ok(())
    }
}

impl Drop for FakeParticipant {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.send_replace(true);
            running.task.abort();
        }
    }
}

fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

#[cfg(test)]
#[path = "participant_tests.rs"]
mod tests;
