//! The 3PC participant helper on SQLite and PostgreSQL: [`ThreePhase`]
//! carries a branch through `can_commit`, `pre_commit`, `do_commit` and
//! `abort`, persisting its state in the participant's own database, and its
//! [watchdog](ThreePhase::tick) applies the 3PC timeout rules to branches
//! that hear nothing more.
//!
//! # State
//! One row per (gid, branch) in `dtx_three_phase` (migration
//! `migrations/{sqlite,postgres}/0003_three_phase.sql`), changed in the same
//! local transaction as the business hook of each step, so the state and
//! the business data never disagree:
//!
//! | call | no row | `voted_yes` | `pre_committed` | `committed` | `aborted` |
//! |---|---|---|---|---|---|
//! | `can_commit` | hook; yes → `voted_yes`, no → `aborted` | yes | yes | yes | 409 |
//! | `pre_commit` | 409 (never voted here) | hook → `pre_committed` | 200 | 200 | 409 (suspension) |
//! | `do_commit` | 409 (violation) | 409 (violation) | hook → `committed` | 200 | 409 (violation) |
//! | `abort` | `aborted` (null abort) | `aborted` | hook → `aborted` | 409 (violation) | 200 |
//!
//! Repeated calls answer as the first did. A refusal of `can_commit` or
//! `pre_commit` by the business aborts the branch here (the coordinator
//! aborts the transaction on it). A 409 in phase two (the violations) makes
//! the coordinator retry and flag the transaction for an operator; nothing
//! the participant could do would be right, so it logs an error and changes
//! nothing. `abort` of a `voted_yes` branch runs no hook: `can_commit` holds
//! nothing.
//!
//! # The timeout rules
//! A branch that voted yes, or pre-committed, and then hears nothing is in
//! doubt. [`ThreePhase::tick`] (run every [`ThreePhaseConfig::check_interval`]
//! by [`ThreePhase::spawn_watchdog`]) finds rows unchanged in `voted_yes`
//! for [`uncertain_timeout`](ThreePhaseConfig::uncertain_timeout) and in
//! `pre_committed` for [`precommit_timeout`](ThreePhaseConfig::precommit_timeout),
//! asks the coordinator (the termination query), and does what the pure
//! function [`timeout_rule`] says:
//!
//! - `commit` → commit (from `voted_yes`, the pre-commit hook runs first);
//!   `abort` → abort.
//! - The coordinator answered without a decision: `pending`, 503 (its
//!   database is down), 425, any other status, or an answer that failed
//!   verification against the coordinator's keys
//!   ([`ClientBuilder::coordinator_keys`](crate::client::ClientBuilder::coordinator_keys))
//!   → keep waiting and ask again on the next pass. An answer proves the coordinator is there; deciding
//!   alone then is how one participant commits while another aborts with no
//!   partition at all.
//! - No answer at all (connection refused, timeout, DNS failure:
//!   [`ClientError::is_unreachable`](crate::ClientError::is_unreachable)):
//!   `voted_yes` → **abort** (nobody can have committed: the coordinator
//!   commits only after every pre-commit ack); `pre_committed` → **commit**
//!   (everyone voted yes), or keep waiting with [`OnUnreachable::Wait`].
//!
//! Every decision is logged and stored in the row's `decided_by`
//! (`coordinator` or `timeout_rule`). The commit-on-unreachable rule is
//! what makes 3PC non-blocking, and what makes it diverge under a network
//! partition (`docs/two-and-three-phase.md`): `decided_by = 'timeout_rule'`
//! is how a checker finds those branches.
//!
//! # Choosing the timeouts
//! Both timeouts must be longer than the time the coordinator may take to
//! log its own decision: the transaction's `deadline_ms` (which bounds the
//! votes *and* the pre-commit acks; past it the coordinator aborts), plus,
//! if that coordinator crashed, the time another one needs to take its
//! transactions over (the coordinator's `--lease-ms` plus
//! `--claim-interval-ms`). A shorter timeout lets a pre-committed branch
//! commit by its rule during a coordinator's restart while the coordinator
//! then aborts at the deadline. [`CoordinatorTimings`] holds those three
//! settings and [`ThreePhaseConfig::follows_rule`] checks a configuration
//! against them.
//!
//! The defaults (90 s each) assume the coordinator's defaults: `deadline_ms`
//! 60 000, `--lease-ms` 10 000 and `--claim-interval-ms` 2 000, i.e. more
//! than 72 s, with margin for the clocks of the participant and the
//! coordinator to differ. Raise them if you raise any of those.

mod router;
mod rule;
mod store;
mod timings;
mod transition;
mod watchdog;

pub use rule::{CoordinatorReply, TimeoutVerdict, WaitReason, timeout_rule};
pub use timings::CoordinatorTimings;
pub use watchdog::{Watchdog, WatchdogAction, WatchdogOutcome};

use crate::barrier::{BarrierDatabase, BarrierError};
use crate::context::BranchContext;
use crate::db::Conn;
use crate::refusal::WorkError;
use crate::signature::SignatureKeys;
use serde_json::Value;
use sqlx::Pool;
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A database the 3PC helper runs on: `Sqlite` or `Postgres` (each with its
/// cargo feature). Sealed.
pub trait ThreePhaseDatabase: BarrierDatabase + store::Store {}
#[cfg(feature = "sqlite")]
impl ThreePhaseDatabase for Sqlite {}
#[cfg(feature = "postgres")]
impl ThreePhaseDatabase for Postgres {}

/// The business side of a 3PC branch, implemented by the service, once for
/// every database: each hook receives the helper's connection as a
/// [`Conn`], whichever backend the [`ThreePhase`] runs on, and runs its
/// statements with [`on_conn!`](crate::on_conn). Every hook runs inside the
/// helper's local transaction, which also changes the state row: do not
/// commit or roll it back yourself.
///
/// A hook ends with `Ok(())` or a [`WorkError`]. A refusal
/// ([`WorkError::Refused`]) of `can_commit` or `pre_commit` undoes the
/// hook's changes, aborts the branch here and answers 409 (a no vote); of
/// `do_commit` or `abort`, which must succeed, it answers 409 and changes
/// nothing: the coordinator retries and flags the transaction for an
/// operator. Any other error rolls everything back and answers 500; the
/// retry runs anew.
///
/// `payload` is the branch payload the coordinator sent with `can_commit`
/// (stored in the state row, so the watchdog can run hooks without a call).
pub trait ThreePhaseHooks: Send + Sync + 'static {
    /// The vote: can this branch commit? Check, hold nothing. `Ok` is yes,
    /// [`WorkError::Refused`] is no.
    fn can_commit(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;

    /// Everyone voted yes: do the work and hold it so that `do_commit` can
    /// only succeed and `abort` can undo it.
    fn pre_commit(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;

    /// Make the held work final. Must succeed eventually.
    fn do_commit(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;

    /// Undo the held work of a `pre_commit`. Must succeed eventually. Only
    /// called for a pre-committed branch.
    fn abort(
        &self,
        conn: Conn<'_>,
        ctx: &BranchContext,
        payload: &Value,
    ) -> impl Future<Output = Result<(), WorkError>> + Send;
}

/// What the watchdog does with a pre-committed branch when the coordinator
/// cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnreachable {
    /// Commit (the classic 3PC rule: everyone voted yes). Never blocks;
    /// diverges under a network partition.
    #[default]
    Commit,
    /// Keep waiting for the coordinator, as 2PC would: blocks, never
    /// diverges.
    Wait,
}

/// The watchdog's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreePhaseConfig {
    /// How long a `voted_yes` branch waits for `pre_commit` or `abort`
    /// before it asks the coordinator, and then aborts if the coordinator
    /// does not answer (default 90 s). Choose it longer than the
    /// coordinator's `deadline_ms` plus its takeover time; see [Choosing
    /// the timeouts](self#choosing-the-timeouts).
    pub uncertain_timeout: Duration,
    /// How long a `pre_committed` branch waits for `do_commit` or `abort`
    /// before it asks the coordinator, and then commits if the coordinator
    /// does not answer (default 90 s). The same rule as
    /// `uncertain_timeout`.
    pub precommit_timeout: Duration,
    /// What a pre-committed branch does when the coordinator cannot be
    /// reached (default [`OnUnreachable::Commit`]).
    pub on_unreachable: OnUnreachable,
    /// How often [`ThreePhase::spawn_watchdog`] runs a pass (default 5 s).
    pub check_interval: Duration,
}

impl Default for ThreePhaseConfig {
    fn default() -> Self {
        ThreePhaseConfig {
            // Longer than the coordinator's defaults allow it to take to
            // decide (60 s deadline + 10 s lease + 2 s claim interval); see
            // `CoordinatorTimings::default` and the module docs.
            uncertain_timeout: Duration::from_secs(90),
            precommit_timeout: Duration::from_secs(90),
            on_unreachable: OnUnreachable::Commit,
            check_interval: Duration::from_secs(5),
        }
    }
}

impl ThreePhaseConfig {
    /// With this `uncertain_timeout`.
    #[must_use]
    pub fn uncertain_timeout(mut self, timeout: Duration) -> Self {
        self.uncertain_timeout = timeout;
        self
    }

    /// With this `precommit_timeout`.
    #[must_use]
    pub fn precommit_timeout(mut self, timeout: Duration) -> Self {
        self.precommit_timeout = timeout;
        self
    }

    /// With this rule for an unreachable coordinator.
    #[must_use]
    pub fn on_unreachable(mut self, rule: OnUnreachable) -> Self {
        self.on_unreachable = rule;
        self
    }

    /// With this interval between watchdog passes.
    #[must_use]
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Whether both timeouts are longer than a coordinator with these
    /// settings may take to log its decision
    /// ([`CoordinatorTimings::longest_decision_delay`]); see [Choosing the
    /// timeouts](self#choosing-the-timeouts).
    pub fn follows_rule(&self, coordinator: &CoordinatorTimings) -> bool {
        let longest = coordinator.longest_decision_delay();
        self.uncertain_timeout > longest && self.precommit_timeout > longest
    }
}

/// Where a branch stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchState {
    /// `can_commit` answered yes; nothing is held.
    VotedYes,
    /// `pre_commit` ran: the work is done and held.
    PreCommitted,
    /// Final: committed.
    Committed,
    /// Final: aborted (or never voted yes).
    Aborted,
}

impl BranchState {
    /// The name stored in `dtx_three_phase.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchState::VotedYes => "voted_yes",
            BranchState::PreCommitted => "pre_committed",
            BranchState::Committed => "committed",
            BranchState::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            BranchState::VotedYes,
            BranchState::PreCommitted,
            BranchState::Committed,
            BranchState::Aborted,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// Who decided a branch's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// The coordinator: by a call, or by its answer to the termination query.
    Coordinator,
    /// The watchdog's timeout rule, because the coordinator gave no answer
    /// at all.
    TimeoutRule,
    /// This participant: it refused `can_commit` or `pre_commit`.
    Participant,
}

impl DecidedBy {
    /// The name stored in `dtx_three_phase.decided_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Coordinator => "coordinator",
            DecidedBy::TimeoutRule => "timeout_rule",
            DecidedBy::Participant => "participant",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            DecidedBy::Coordinator,
            DecidedBy::TimeoutRule,
            DecidedBy::Participant,
        ]
        .into_iter()
        .find(|d| d.as_str() == text)
    }
}

/// A branch's state row, for inspection (tests, checkers, operators).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BranchRecord {
    /// Where the branch stands.
    pub state: BranchState,
    /// Who decided, once final.
    pub decided_by: Option<DecidedBy>,
    /// The payload stored by `can_commit`.
    pub payload: Option<Value>,
    /// Why it was refused or aborted, if it was.
    pub detail: Option<String>,
    /// Unix milliseconds of the last state change.
    pub updated_at_ms: i64,
}

/// What the 3PC helper can fail with. As a response it is an unknown
/// outcome (500, or 503 when a statement gave up waiting for a lock,
/// [`crate::db::is_lock_timeout`]): the coordinator retries, and the retry
/// finds the state as it was before the failed attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThreePhaseError {
    /// A statement failed (the helper's or a hook's).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A hook failed for a reason other than the database
    /// ([`WorkError::Failed`]); everything was rolled back.
    #[error("a 3PC hook failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The SDK's migrations could not be applied.
    #[error("cannot apply the SDK migrations: {0}")]
    Migrate(#[from] BarrierError),
    /// The state table holds something this SDK did not write.
    #[error("the 3PC state table is inconsistent: {0}")]
    Corrupt(String),
}

impl axum::response::IntoResponse for ThreePhaseError {
    fn into_response(self) -> axum::response::Response {
        if let ThreePhaseError::Database(e) = &self
            && crate::db::is_lock_timeout(e)
        {
            return crate::db::lock_timeout_answer("3PC participant call");
        }
        tracing::error!(error = %self, "3PC participant call failed; answering 500");
        crate::BranchAnswer::unknown(
            "the participant's database failed; nothing was changed, the call will be retried",
        )
        .into_response()
    }
}

/// A 3PC participant: the state machine of its branches over `DB`, with the
/// service's hooks `B`. Cheap to clone (shared). Serve it with
/// [`router`](Self::router) or call [`handle`](Self::handle) from your own
/// handlers; start [`spawn_watchdog`](Self::spawn_watchdog) beside it.
///
/// ```no_run
/// # use dtx_sdk::three_phase::*;
/// # async fn run<B: ThreePhaseHooks>(pool: sqlx::SqlitePool, hooks: B, client: dtx_sdk::Client)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// let participant = ThreePhase::new(pool, hooks);
/// participant.migrate().await?;
/// let _watchdog = participant.spawn_watchdog(client); // stops when dropped
/// let app = axum::Router::new().nest("/stock", participant.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub struct ThreePhase<DB: ThreePhaseDatabase, B> {
    inner: Arc<Inner<DB, B>>,
}

struct Inner<DB: ThreePhaseDatabase, B> {
    pool: Pool<DB>,
    branch: B,
    config: ThreePhaseConfig,
    signature_keys: SignatureKeys,
}

impl<DB: ThreePhaseDatabase, B> Clone for ThreePhase<DB, B> {
    fn clone(&self) -> Self {
        ThreePhase {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<DB: ThreePhaseDatabase, B> std::fmt::Debug for ThreePhase<DB, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreePhase")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<DB: ThreePhaseDatabase, B: ThreePhaseHooks> ThreePhase<DB, B> {
    /// A participant on `pool` with the default [`ThreePhaseConfig`] and no
    /// signature check (the first unsigned call logs a warning).
    pub fn new(pool: Pool<DB>, branch: B) -> Self {
        Self::with_config(
            pool,
            branch,
            ThreePhaseConfig::default(),
            SignatureKeys::disabled(),
        )
    }

    /// A participant with these watchdog settings, checking the signature
    /// of every call against `signature_keys` in [`router`](Self::router).
    pub fn with_config(
        pool: Pool<DB>,
        branch: B,
        config: ThreePhaseConfig,
        signature_keys: SignatureKeys,
    ) -> Self {
        ThreePhase {
            inner: Arc::new(Inner {
                pool,
                branch,
                config,
                signature_keys,
            }),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<DB> {
        &self.inner.pool
    }

    /// The watchdog settings.
    pub fn config(&self) -> &ThreePhaseConfig {
        &self.inner.config
    }

    /// Creates the state table by the SDK's versioned migrations (the same
    /// migrator as [`Barrier::migrate`](crate::barrier::Barrier::migrate),
    /// recorded in `_dtx_sdk_migrations`). Call it at start-up.
    pub async fn migrate(&self) -> Result<(), ThreePhaseError> {
        crate::barrier::Barrier::<DB>::new()
            .migrate(&self.inner.pool)
            .await?;
        Ok(())
    }

    /// The state row of a branch, if there is one.
    pub async fn record(
        &self,
        gid: &str,
        branch_id: &str,
    ) -> Result<Option<BranchRecord>, ThreePhaseError> {
        let Some(row) = DB::read(&self.inner.pool, gid, branch_id).await? else {
            return Ok(None);
        };
        let state = BranchState::parse(&row.state)
            .ok_or_else(|| ThreePhaseError::Corrupt(format!("state `{}`", row.state)))?;
        Ok(Some(BranchRecord {
            state,
            decided_by: row.decided_by.as_deref().and_then(DecidedBy::parse),
            payload: row.payload.and_then(|p| serde_json::from_str(&p).ok()),
            detail: row.detail,
            updated_at_ms: row.updated_at_ms,
        }))
    }
}
