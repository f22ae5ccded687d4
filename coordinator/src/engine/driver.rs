//! The driver of one transaction: the only code that changes a transaction's
//! state. It feeds inputs to the protocol core, writes what the core says must
//! be durable (fenced by owner and epoch), then makes the calls, and loops
//! until the transaction is final, its ownership is lost, or the coordinator
//! shuts down.
//!
//! Participant calls and retry timers run as tasks in the driver's `JoinSet`
//! and report back through its mailbox, so the driver itself never waits on a
//! participant.

use super::{Progress, Shared, Verdict, now_ms};
use crate::store::{
    BranchRecord, BranchUpdate, Event, Fence, StoreError, TransactionRecord, Update,
};
use crate::transport::{CallOutcome, CallRequest};
use dtx_protocol::machine::HistoryRecord;
use dtx_protocol::spec::saga_dependencies;
use dtx_protocol::{Action, BranchSpec, Input, Mode, Op, Reply, Status, Step, Transaction};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What reaches a driver's mailbox.
pub(crate) enum Mail {
    /// A call finished.
    Replied {
        branch: usize,
        op: Op,
        outcome: CallOutcome,
    },
    /// A retry's backoff elapsed.
    RetryDue { branch: usize, op: Op },
    /// The initiator asks to commit or abort (TCC). The answer is the
    /// status once the request was handled.
    Decide {
        verdict: Verdict,
        done: oneshot::Sender<Result<Status, StoreError>>,
    },
    /// Lease renewal did not renew this driver's lease: another coordinator
    /// took the transaction over (see `LiveDrivers::lease_lost`).
    LeaseLost,
}

/// How a driver's run ended, as far as the engine must act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Final, fenced out by another coordinator, or shut down: nothing for
    /// this coordinator to do.
    Settled,
    /// Stopped on a store failure (the error, for the operator) while this
    /// coordinator still owns the transaction; the engine restarts it,
    /// backing off (see `engine::ownership`).
    Failed(String),
}

/// Why a driver stopped before its transaction was final.
#[derive(Debug)]
enum Stop {
    /// Another coordinator owns the transaction now.
    Fenced,
    /// The coordinator is shutting down; recovery resumes the transaction.
    Shutdown,
    /// The store failed in a way retrying does not fix.
    Failed(String),
}

/// Per-branch facts the protocol core does not keep.
#[derive(Default, Clone)]
struct Bookkeeping {
    attempts: u32,
    last_http_status: Option<u16>,
    last_error: Option<String>,
    /// Failures in a row of the current operation; sets the backoff.
    failures_in_a_row: u32,
    /// When the current phase-two operation first failed.
    failing_since: Option<Instant>,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    fence: Fence,
    mode: Mode,
    options: dtx_protocol::TxOptions,
    deadline: Instant,
    specs: Vec<Arc<BranchSpec>>,
    tx: Transaction,
    books: Vec<Bookkeeping>,
    /// Branches whose row must be written with the next update.
    dirty: BTreeSet<usize>,
    /// Events to append with the next update, besides the core's history.
    pending_events: Vec<Event>,
    /// The operator flag; `flag_written` tells whether the store has it.
    attention: Option<String>,
    flag_written: bool,
    persisted_status: Status,
    seen_lapses: u64,
    mail_tx: mpsc::UnboundedSender<Mail>,
    mail_rx: mpsc::UnboundedReceiver<Mail>,
    tasks: JoinSet<()>,
    status_tx: watch::Sender<Progress>,
    /// The record's fields that only the store changes (times, lease), as
    /// loaded, without branches: the base of the record handed to waiters
    /// once the transaction is final.
    base: TransactionRecord,
}

impl Driver {
    /// A driver for a transaction this coordinator owns under `fence`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        fence: Fence,
        record: TransactionRecord,
        mail: (mpsc::UnboundedSender<Mail>, mpsc::UnboundedReceiver<Mail>),
        status_tx: watch::Sender<Progress>,
    ) -> Driver {
        let remaining = Duration::from_millis((record.deadline_at_ms - now_ms()).max(0) as u64);
        let seen_lapses = shared.lease.lapses();
        let mut driver = Driver {
            shared,
            fence,
            mode: record.mode,
            options: record.options.clone(),
            deadline: Instant::now() + remaining,
            specs: vec![],
            tx: Transaction::new_tcc(),
            books: vec![],
            dirty: BTreeSet::new(),
            pending_events: vec![],
            attention: record.attention.clone(),
            flag_written: record.attention.is_some(),
            persisted_status: record.status,
            seen_lapses,
            mail_tx: mail.0,
            mail_rx: mail.1,
            tasks: JoinSet::new(),
            status_tx,
            base: TransactionRecord {
                branches: Vec::new(),
                ..record.clone()
            },
        };
        driver.load(record);
        driver
    }

    /// Rebuilds the core and the bookkeeping from a stored record.
    fn load(&mut self, record: TransactionRecord) {
        let statuses = record.branches.iter().map(|b| b.status).collect();
        self.specs = record
            .branches
            .iter()
            .map(|b| Arc::new(b.spec.clone()))
            .collect();
        let deps = match record.mode {
            // Registration validated the graph, so this cannot fail.
            Mode::Saga => saga_dependencies(
                &record
                    .branches
                    .iter()
                    .map(|b| b.spec.clone())
                    .collect::<Vec<_>>(),
            )
            .unwrap_or_default(),
            Mode::Tcc | Mode::TwoPhase | Mode::ThreePhase => vec![],
        };
        self.books = record
            .branches
            .iter()
            .map(|b| Bookkeeping {
                attempts: b.attempts,
                last_http_status: b.last_http_status,
                last_error: b.last_error.clone(),
                ..Default::default()
            })
            .collect();
        self.tx = Transaction::recover(record.mode, record.status, statuses, deps);
        self.persisted_status = record.status;
    }

    /// Drives the transaction until it is final or the driver must stop.
    pub(crate) async fn run(mut self) -> Ended {
        let gid = self.fence.gid.clone();
        let outcome = self.drive().await;
        self.tasks.shutdown().await;
        match outcome {
            Ok(()) => tracing::debug!(gid, status = %self.tx.status(), "transaction finished"),
            Err(Stop::Fenced) => tracing::warn!(
                gid,
                "another coordinator took this transaction over; stopped driving it"
            ),
            Err(Stop::Shutdown) => tracing::debug!(gid, "left to recovery at shutdown"),
            Err(Stop::Failed(e)) => {
                tracing::error!(
                    gid,
                    error = e,
                    "stopped driving; restarting it from the log"
                );
                return Ended::Failed(e);
            }
        }
        Ended::Settled
    }

    async fn drive(&mut self) -> Result<(), Stop> {
        let step = self.tx.start();
        self.carry_out(step).await?;
        let shutdown = self.shared.shutdown.clone();
        while !self.tx.status().is_final() {
            let before_deadline = self.tx.status().is_phase_one();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                mail = self.mail_rx.recv() => match mail {
                    Some(mail) => self.on_mail(mail).await?,
                    None => return Err(Stop::Shutdown),
                },
                _ = tokio::time::sleep_until(self.deadline), if before_deadline => {
                    if self.mode == Mode::Tcc {
                        self.decide(Input::DeadlinePassed).await?;
                    } else {
                        let step = self.tx.handle(Input::DeadlinePassed);
                        self.carry_out(step).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_mail(&mut self, mail: Mail) -> Result<(), Stop> {
        match mail {
            Mail::Replied {
                branch,
                op,
                outcome,
            } => {
                let failed = !outcome.reply.is_success();
                self.record_outcome(branch, op, &outcome);
                let step = self.tx.handle(Input::Replied {
                    branch,
                    op,
                    reply: outcome.reply,
                });
                if failed && step.history.is_empty() {
                    // A failed attempt decides nothing, but an operator
                    // looking at a stuck transaction needs to see it.
                    self.pending_events.push(self.event(
                        "call_failed",
                        Some(branch),
                        describe_failure(op, &outcome),
                    ));
                }
                self.carry_out(step).await
            }
            Mail::RetryDue { branch, op } => {
                let step = self.tx.handle(Input::RetryDue { branch, op });
                self.carry_out(step).await
            }
            Mail::Decide { verdict, done } => {
                let result = self
                    .decide(match verdict {
                        Verdict::Commit => Input::Commit,
                        Verdict::Abort => Input::Abort,
                    })
                    .await;
                let answer = match &result {
                    Ok(()) => Ok(self.tx.status()),
                    Err(Stop::Fenced) => Err(StoreError::Conflict(
                        "another coordinator took the transaction over".into(),
                    )),
                    Err(Stop::Shutdown) => Err(StoreError::Unavailable(
                        "the coordinator is shutting down".into(),
                    )),
                    Err(Stop::Failed(e)) => Err(StoreError::Other(e.clone().into())),
                };
                let _ = done.send(answer);
                result
            }
            Mail::LeaseLost => Err(Stop::Fenced),
        }
    }

    /// A TCC decision: `input` is the initiator's commit or abort, or the
    /// deadline. Branches may have been registered through any coordinator,
    /// so the branch list is read from the store and the decision is written
    /// only if no branch arrived in between.
    async fn decide(&mut self, input: Input) -> Result<(), Stop> {
        while self.tx.status() == Status::Open {
            let record = self
                .retry_store(|s, gid| async move { s.get(&gid).await })
                .await?;
            let Some(record) = record else {
                return Err(Stop::Failed("transaction vanished".into()));
            };
            if record.status != Status::Open {
                // Another coordinator decided (and so fenced us).
                return Err(Stop::Fenced);
            }
            self.load(record);
            let step = self.tx.handle(input.clone());
            match self
                .persist(&step.history, Some(self.specs.len() as u32))
                .await
            {
                Ok(()) => return self.dispatch(step.actions).await,
                Err(StoreError::Conflict(_)) => {
                    tracing::debug!(
                        gid = self.fence.gid,
                        "a branch arrived during the decision; reloading"
                    );
                }
                Err(e) => return Err(self.stop_for(e)),
            }
        }
        Ok(())
    }

    fn record_outcome(&mut self, branch: usize, op: Op, outcome: &CallOutcome) {
        self.shared.metrics.call(op, outcome.reply);
        let now = Instant::now();
        let books = &mut self.books[branch];
        books.attempts += 1;
        books.last_http_status = outcome.http_status;
        books.last_error = outcome.error.clone();
        self.dirty.insert(branch);
        if outcome.reply.is_success() {
            books.failures_in_a_row = 0;
            books.failing_since = None;
            return;
        }
        books.failures_in_a_row += 1;
        if !op.is_phase_two() {
            return;
        }
        let since = *books.failing_since.get_or_insert(now);
        let window = Duration::from_millis(self.options.attention_after_ms);
        let id = &self.specs[branch].id;
        let reason = if outcome.reply == Reply::Refused {
            Some(format!(
                "branch `{id}` refused its {op} (HTTP 409); a {op} must succeed, so dtx keeps retrying: fix the participant"
            ))
        } else if now.duration_since(since) >= window {
            Some(format!(
                "branch `{id}`: {op} has failed for over {} s (last: {}); dtx keeps retrying",
                window.as_secs(),
                outcome.error.as_deref().unwrap_or("unknown")
            ))
        } else {
            None
        };
        if let (Some(reason), None) = (reason, &self.attention) {
            tracing::warn!(
                gid = self.fence.gid,
                reason,
                "transaction needs an operator"
            );
            self.shared.metrics.flagged();
            self.pending_events
                .push(self.event("attention", Some(branch), reason.clone()));
            self.attention = Some(reason);
        }
    }

    /// Writes the step's history (and whatever else is pending), then makes
    /// its calls.
    async fn carry_out(&mut self, step: Step) -> Result<(), Stop> {
        if let Err(e) = self.persist(&step.history, None).await {
            return Err(self.stop_for(e));
        }
        self.dispatch(step.actions).await
    }

    fn stop_for(&self, e: StoreError) -> Stop {
        match e {
            StoreError::Fenced => {
                self.shared.metrics.fenced();
                Stop::Fenced
            }
            StoreError::Unavailable(_) => Stop::Shutdown,
            other => Stop::Failed(other.to_string()),
        }
    }

    /// Writes history, dirty branches, events and the flag in one fenced
    /// update, retrying while the database is unavailable.
    async fn persist(
        &mut self,
        history: &[HistoryRecord],
        expect_branch_count: Option<u32>,
    ) -> Result<(), StoreError> {
        let flag_pending = self.attention.is_some() && !self.flag_written;
        if history.is_empty() && self.pending_events.is_empty() && !flag_pending {
            return Ok(());
        }
        let mut events = std::mem::take(&mut self.pending_events);
        for record in history {
            events.push(self.history_event(record));
            if let HistoryRecord::Branch { branch, .. } = record {
                self.dirty.insert(*branch);
            }
        }
        let statuses: Vec<_> = self.tx.branch_statuses().collect();
        let branches = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|i| BranchUpdate {
                index: i as u32,
                status: statuses[i],
                attempts: self.books[i].attempts,
                last_http_status: self.books[i].last_http_status,
                last_error: self.books[i].last_error.clone(),
            })
            .collect();
        let status = self.tx.status();
        let written_at_ms = now_ms();
        let update = Update {
            fence: self.fence.clone(),
            now_ms: written_at_ms,
            status: (status != self.persisted_status).then_some(status),
            expect_branch_count,
            attention: if flag_pending {
                self.attention.clone()
            } else {
                None
            },
            branches,
            events,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.shared.store.update(update.clone()).await {
                Ok(()) => break,
                Err(StoreError::Unavailable(e)) => {
                    self.shared.metrics.store_retry();
                    tracing::warn!(
                        gid = self.fence.gid,
                        error = %e,
                        "database unavailable; retrying the write"
                    );
                    tokio::select! {
                    biased;
                            _ = self.shared.shutdown.cancelled() => return Err(StoreError::Unavailable(e)),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        self.persisted_status = status;
        self.flag_written |= flag_pending;
        let finished = status
            .is_final()
            .then(|| Arc::new(self.written_record(written_at_ms)));
        self.status_tx.send_replace(Progress { status, finished });
        if status.is_final() {
            self.shared.metrics.finished(self.mode, status);
        }
        Ok(())
    }

    /// Runs a read against the store, retrying while it is unavailable.
    async fn retry_store<T, F, Fut>(&self, read: F) -> Result<T, Stop>
    where
        F: Fn(Arc<dyn crate::store::Store>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match read(self.shared.store.clone(), self.fence.gid.clone()).await {
                Ok(v) => return Ok(v),
                Err(StoreError::Unavailable(_)) => {
                    tokio::select! {
                    biased;
                            _ = self.shared.shutdown.cancelled() => return Err(Stop::Shutdown),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(self.stop_for(e)),
            }
        }
    }

    /// Makes the calls and arms the retry timers of a step.
    async fn dispatch(&mut self, actions: Vec<Action>) -> Result<(), Stop> {
        if actions.is_empty() {
            return Ok(());
        }
        self.check_ownership().await?;
        for action in actions {
            match action {
                Action::Call { branch, op } => self.spawn_call(branch, op),
                Action::Retry { branch, op } => {
                    let delay = self
                        .options
                        .retry
                        .delay(self.books[branch].failures_in_a_row, self.jitter());
                    let mail = self.mail_tx.clone();
                    self.tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = mail.send(Mail::RetryDue { branch, op });
                    });
                }
            }
        }
        Ok(())
    }

    /// Before acting, makes sure the lease still holds; after a lapse (a
    /// stall past the lease), reads the store to learn whether another
    /// coordinator took over meanwhile.
    async fn check_ownership(&mut self) -> Result<(), Stop> {
        self.shared.lease.wait_valid().await;
        let lapses = self.shared.lease.lapses();
        if lapses == self.seen_lapses {
            return Ok(());
        }
        let record = self
            .retry_store(|s, gid| async move { s.get(&gid).await })
            .await?;
        match record {
            Some(r)
                if r.owner.as_deref() == Some(self.fence.owner.as_str())
                    && r.epoch == self.fence.epoch =>
            {
                self.seen_lapses = lapses;
                Ok(())
            }
            _ => {
                self.shared.metrics.fenced();
                Err(Stop::Fenced)
            }
        }
    }

    /// A jitter sample in `[0, 1)` from the engine's seeded generator.
    fn jitter(&self) -> f64 {
        use rand::Rng;
        self.shared.rng.lock().expect("rng poisoned").random()
    }

    fn spawn_call(&mut self, branch: usize, op: Op) {
        let spec = self.specs[branch].clone();
        let shared = self.shared.clone();
        let mail = self.mail_tx.clone();
        let gid = self.fence.gid.clone();
        let mode = self.mode;
        let timeout = Duration::from_millis(self.options.request_timeout_ms);
        self.tasks.spawn(async move {
            let url = spec.urls.get(&op).map(String::as_str).unwrap_or_default();
            let request = CallRequest {
                url,
                gid: &gid,
                branch_id: &spec.id,
                op,
                mode,
                payload: &spec.payload,
                headers: &spec.headers,
                timeout,
            };
            let outcome = shared.transport.call(request).await;
            let _ = mail.send(Mail::Replied {
                branch,
                op,
                outcome,
            });
        });
    }

    fn event(&self, kind: &str, branch: Option<usize>, detail: String) -> Event {
        Event {
            at_ms: now_ms(),
            kind: kind.to_owned(),
            branch_id: branch.map(|b| self.specs[b].id.clone()),
            detail,
        }
    }

    /// The transaction as the store holds it after a write at
    /// `written_at_ms`: what a read would return, without the read. The
    /// lease expiry is the one this driver loaded; renewals since then moved
    /// it in the store, and it means nothing once the transaction is final.
    fn written_record(&self, written_at_ms: i64) -> TransactionRecord {
        let branches = self
            .tx
            .branch_statuses()
            .zip(&self.specs)
            .zip(&self.books)
            .enumerate()
            .map(|(index, ((status, spec), books))| BranchRecord {
                index: index as u32,
                spec: BranchSpec::clone(spec),
                status,
                attempts: books.attempts,
                last_http_status: books.last_http_status,
                last_error: books.last_error.clone(),
            })
            .collect();
        TransactionRecord {
            status: self.tx.status(),
            updated_at_ms: written_at_ms,
            owner: Some(self.fence.owner.clone()),
            epoch: self.fence.epoch,
            attention: self.attention.clone(),
            branches,
            ..self.base.clone()
        }
    }

    fn history_event(&self, record: &HistoryRecord) -> Event {
        match record {
            HistoryRecord::Status { to, reason, cause } => {
                self.event("status", *cause, format!("{to}: {reason}"))
            }
            HistoryRecord::Branch { branch, op, to } => {
                self.event("branch", Some(*branch), format!("{op} → {to}"))
            }
        }
    }
}

fn describe_failure(op: Op, outcome: &CallOutcome) -> String {
    let what = match outcome.reply {
        Reply::Refused => "refused",
        Reply::StillWorking => "still working",
        Reply::Unknown | Reply::Success | Reply::ReadOnly => "unknown outcome",
    };
    format!(
        "{op}: {what} ({}); will retry",
        outcome.error.as_deref().unwrap_or("no detail")
    )
}
