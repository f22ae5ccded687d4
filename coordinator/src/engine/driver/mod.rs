//! The driver of one transaction: the only code that changes a transaction's
//! state. It feeds inputs and the passing of time to the protocol core,
//! writes what the core says must be durable (fenced by owner and epoch),
//! then makes the calls, and sleeps until the next answer or the instant the
//! core asked to be woken. It loops until the transaction is final, its
//! ownership is lost, or the coordinator shuts down.
//!
//! Every decision about time (deadline, backoff, polling, the operator flag)
//! is the core's; the driver only moves data. Participant calls run as tasks
//! in the driver's `JoinSet`, which is reaped as they finish (so a call
//! retried for days holds one task, not one per attempt), and report back
//! through the driver's mailbox.

mod history_budget;
mod writes;

use super::{Progress, Shared, now_ms};
use crate::store::text::storable;
use crate::store::{Fence, StoreError, TransactionRecord};
use crate::transport::ERROR_BODY_LIMIT;
use crate::transport::{CallOutcome, CallRequest};
use dtx_protocol::spec::saga_graph;
use dtx_protocol::wire::RefusedTry;
use dtx_protocol::{
    Action, BranchSpec, Input, Mode, Now, Op, Reply, Status, Step, Timing, Transaction, Verdict,
};
use history_budget::HistoryBudget;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// What reaches a driver's mailbox.
pub(crate) enum Mail {
    /// A call finished.
    Replied {
        branch: usize,
        op: Op,
        outcome: CallOutcome,
    },
    /// The initiator asks for a verdict (TCC). The answer is the status once
    /// the request was handled.
    Decide {
        verdict: Verdict,
        /// Who asked, and why (for the history and the branches).
        asked: super::Asked,
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
    /// The store failed in a way retrying does not fix, or the stored
    /// transaction cannot be driven.
    Failed(String),
}

/// What caused a TCC decision: the initiator's verdict, or the deadline.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Verdict(Verdict),
    Deadline,
}

/// What the driver keeps of each branch's calls for the log and the API; the
/// core keeps what decides.
#[derive(Default, Clone)]
struct CallRecord {
    attempts: u32,
    last_http_status: Option<u16>,
    last_error: Option<String>,
    /// The participant's reason for its refusal, kept when later calls
    /// (the refused branch's own compensation, say) succeed.
    refusal: Option<String>,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    fence: Fence,
    mode: Mode,
    request_timeout: Duration,
    specs: Vec<Arc<BranchSpec>>,
    tx: Transaction,
    calls: Vec<CallRecord>,
    /// Branches whose row must be written with the next update.
    dirty: BTreeSet<usize>,
    /// The operator flag's sentence; `flag_written` tells whether the store
    /// has it.
    attention: Option<String>,
    flag_written: bool,
    persisted_status: Status,
    seen_lapses: u64,
    mail_tx: mpsc::UnboundedSender<Mail>,
    mail_rx: mpsc::UnboundedReceiver<Mail>,
    /// Participant calls in flight; each reports through the mailbox.
    in_flight: JoinSet<()>,
    /// Set as soon as the core leaves phase one, before the decision is
    /// written: a phase-one call queued earlier but not yet sent is then not
    /// sent at all (it reports an unknown outcome, and the branch is undone
    /// like any that may have run). Without it a call spawned just before a
    /// deadline, or held while the lease or the store was away, left after
    /// `aborting` was logged (found by the engine-level simulation).
    decided: Arc<AtomicBool>,
    /// The token that asked for the verdict being written, named in the
    /// status event that records it.
    requested_by: Option<String>,
    /// The refused Try behind the abort being written, if the initiator
    /// said so: its reason goes on the branch and in the status event.
    refused_try: Option<RefusedTry>,
    status_tx: watch::Sender<Progress>,
    /// How many more events the transaction's history may take.
    history: HistoryBudget,
    /// The record the driver starts from, until `drive` loads it.
    initial: Option<TransactionRecord>,
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
        let seen_lapses = shared.lease.lapses();
        // The registration's event; a driver that took the transaction over
        // reads the count when it starts (`drive`).
        let history = HistoryBudget::new(shared.settings.max_history_events, 1);
        Driver {
            shared,
            fence,
            mode: record.mode,
            request_timeout: Duration::from_millis(record.options.request_timeout_ms),
            specs: vec![],
            tx: Transaction::new_tcc(),
            calls: vec![],
            dirty: BTreeSet::new(),
            attention: record.attention.clone(),
            flag_written: record.attention.is_some(),
            persisted_status: record.status,
            seen_lapses,
            mail_tx: mail.0,
            mail_rx: mail.1,
            in_flight: JoinSet::new(),
            decided: Arc::new(AtomicBool::new(!record.status.is_phase_one())),
            requested_by: None,
            refused_try: None,
            history,
            status_tx,
            base: TransactionRecord {
                branches: Vec::new(),
                ..record.clone()
            },
            initial: Some(record),
        }
    }

    /// Rebuilds the core and the call records from a stored record. A saga
    /// whose stored branches no longer form a valid graph cannot be driven:
    /// registration validated them, so this is corruption, and guessing ("no
    /// dependencies") could run an action before the one it depends on.
    fn load(&mut self, record: TransactionRecord) -> Result<(), Stop> {
        let statuses = record.branches.iter().map(|b| b.status).collect();
        self.specs = record
            .branches
            .iter()
            .map(|b| Arc::new(b.spec.clone()))
            .collect();
        let deps = match record.mode {
            Mode::Saga => {
                let specs: Vec<_> = record.branches.iter().map(|b| b.spec.clone()).collect();
                saga_graph(&specs).map_err(|e| {
                    Stop::Failed(format!(
                        "the stored branches of this saga cannot be driven: {e}"
                    ))
                })?
            }
            Mode::Tcc | Mode::TwoPhase | Mode::ThreePhase => vec![],
        };
        self.calls = record
            .branches
            .iter()
            .map(|b| CallRecord {
                attempts: b.attempts,
                last_http_status: b.last_http_status,
                last_error: b.last_error.clone(),
                refusal: b.refusal.clone(),
            })
            .collect();
        let failing_since: Vec<_> = record.branches.iter().map(|b| b.failing_since_ms).collect();
        self.tx = Transaction::recover(record.mode, record.status, statuses, deps)
            .with_timing(Timing::from_options(&record.options, record.deadline_at_ms))
            .with_attention_state(record.attention.is_some(), &failing_since);
        self.persisted_status = record.status;
        Ok(())
    }

    /// Drives the transaction until it is final or the driver must stop.
    pub(crate) async fn run(mut self) -> Ended {
        let gid = self.fence.gid.clone();
        let outcome = self.drive().await;
        self.in_flight.shutdown().await;
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
        let record = self.initial.take().expect("a driver runs once");
        self.load(record)?;
        if self.fence.epoch > 1 {
            // Taken over: earlier drivers wrote an unknown number of events.
            let held = self
                .retry_store(|s, gid| async move { s.events(&gid).await.map(|e| e.len()) })
                .await?;
            self.history = HistoryBudget::new(self.shared.settings.max_history_events, held);
        }
        let step = self.tx.start();
        self.carry_out(step).await?;
        let shutdown = self.shared.shutdown.clone();
        while !self.tx.status().is_final() {
            let wake = self.tx.poll_timeout().map(instant_of);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                // Reap finished calls, so the set holds only calls in flight.
                Some(_) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {}
                mail = self.mail_rx.recv() => match mail {
                    Some(mail) => self.on_mail(mail).await?,
                    None => return Err(Stop::Shutdown),
                },
                _ = sleep_until(wake), if wake.is_some() => self.on_timeout().await?,
            }
        }
        Ok(())
    }

    /// The instant an input is handled at, with a jitter sample from the
    /// engine's seeded generator.
    fn now(&self) -> Now {
        use rand::Rng;
        let jitter = self.shared.rng.lock().expect("rng poisoned").random();
        Now {
            ms: now_ms(),
            jitter,
        }
    }

    async fn on_timeout(&mut self) -> Result<(), Stop> {
        if self.mode == Mode::Tcc && self.tx.status() == Status::Open {
            // An open TCC transaction waits for nothing but its initiator:
            // this is its deadline.
            return self.decide(Trigger::Deadline).await;
        }
        let step = self.tx.handle_timeout(self.now());
        self.carry_out(step).await
    }

    async fn on_mail(&mut self, mail: Mail) -> Result<(), Stop> {
        match mail {
            Mail::Replied {
                branch,
                op,
                outcome,
            } => {
                self.record_outcome(branch, op, &outcome);
                let now = self.now();
                let step = self.tx.handle(
                    now,
                    Input::Replied {
                        branch,
                        op,
                        reply: outcome.reply,
                    },
                );
                self.carry_out(step).await
            }
            Mail::Decide {
                verdict,
                asked,
                done,
            } => {
                self.requested_by = asked.by;
                // Kept as a participant's own reason is (`transport`).
                self.refused_try = asked.refused_try.map(|t| RefusedTry {
                    reason: storable(&t.reason, ERROR_BODY_LIMIT).into_owned(),
                    ..t
                });
                let result = self.decide(Trigger::Verdict(verdict)).await;
                self.requested_by = None;
                self.refused_try = None;
                let answer = match &result {
                    Ok(()) => Ok(self.tx.status()),
                    Err(Stop::Fenced) => Err(StoreError::Fenced),
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

    /// A TCC decision. Branches may have been registered through any
    /// coordinator, so the branch list is read from the store and the
    /// decision is written only if no branch arrived in between.
    async fn decide(&mut self, trigger: Trigger) -> Result<(), Stop> {
        if self.tx.status() != Status::Open {
            return Ok(()); // decided already: the answer is the status
        }
        // Not `while open`: a refused write leaves the core's status at the
        // decision it could not log; the next turn's `load` puts it back.
        loop {
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
            self.load(record)?;
            if matches!(trigger, Trigger::Verdict(Verdict::Abort)) {
                self.note_refused_try();
            }
            let now = self.now();
            let step = match trigger {
                Trigger::Verdict(verdict) => self.tx.handle(now, Input::Decide(verdict)),
                Trigger::Deadline => self.tx.handle_timeout(now),
            };
            if self.tx.status() == Status::Open {
                return Ok(()); // not due yet (a deadline moved by a reload)
            }
            self.note_decision();
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
    }

    fn record_outcome(&mut self, branch: usize, op: Op, outcome: &CallOutcome) {
        self.shared.metrics.call(op, outcome.reply);
        let call = &mut self.calls[branch];
        call.attempts = call.attempts.saturating_add(1);
        call.last_http_status = outcome.http_status;
        call.last_error = outcome.error.clone();
        if let Some(reason) = &outcome.refusal {
            tracing::info!(gid = %self.base.gid, branch = %self.specs[branch].id, %op, reason, "refused");
            call.refusal = Some(reason.clone());
        }
        self.dirty.insert(branch);
    }

    /// Writes the step's history (and whatever else is pending), then makes
    /// its calls.
    async fn carry_out(&mut self, step: Step) -> Result<(), Stop> {
        self.note_decision();
        if let Err(e) = self.persist(&step.history, None).await {
            return Err(self.stop_for(e));
        }
        self.dispatch(step.actions).await
    }

    /// Raises `decided` once the core has left phase one.
    fn note_decision(&self) {
        if !self.tx.status().is_phase_one() {
            self.decided.store(true, Ordering::SeqCst);
        }
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

    /// Makes the calls of a step.
    async fn dispatch(&mut self, actions: Vec<Action>) -> Result<(), Stop> {
        if actions.is_empty() {
            return Ok(());
        }
        self.check_ownership().await?;
        for Action::Call { branch, op } in actions {
            self.spawn_call(branch, op);
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

    fn spawn_call(&mut self, branch: usize, op: Op) {
        let spec = self.specs[branch].clone();
        let shared = self.shared.clone();
        let mail = self.mail_tx.clone();
        let gid = self.fence.gid.clone();
        let mode = self.mode;
        let timeout = self.request_timeout;
        let decided = (!op.is_phase_two()).then(|| self.decided.clone());
        self.in_flight.spawn(async move {
            let Some(url) = spec.urls.get(&op) else {
                // Registration checked every URL the mode calls; a stored
                // spec without one is corruption, not a participant's answer.
                panic!("branch `{}` has no {op} URL", spec.id);
            };
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
            let outcome = if decided.is_some_and(|d| d.load(Ordering::SeqCst)) {
                CallOutcome {
                    reply: Reply::Unknown,
                    http_status: None,
                    error: Some("not sent: the transaction was decided first".into()),
                    refusal: None,
                }
            } else {
                shared.transport.call(request).await
            };
            let _ = mail.send(Mail::Replied {
                branch,
                op,
                outcome,
            });
        });
    }
}

/// The tokio instant of a Unix-millisecond time on the coordinator's clock.
fn instant_of(at_ms: i64) -> tokio::time::Instant {
    let from_now = Duration::from_millis((at_ms - now_ms()).max(0) as u64);
    tokio::time::Instant::now() + from_now
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
