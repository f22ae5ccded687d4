//! The store's test suite, written once and run against both backends:
//! SQLite on a temporary file and PostgreSQL on a fresh database of the
//! shared test server (`dtx_tests::postgres::fresh_database`, which needs
//! Docker and `bash tests/images/build-images.sh`).
//!
//! Each case is an `async fn(TestDb)` in one of the modules below; the
//! [`suite!`] macro at the bottom makes a `sqlite::<case>` and a
//! `postgres::<case>` test of each. Case names state the rule they check.
//!
//! No case sleeps: history times are plain numbers handed to the store, and
//! races are real concurrent calls whose every outcome is checked. Leases are
//! timed by the store's own clock (the database server's on PostgreSQL, the
//! process clock on SQLite): a case that needs a lease to run out gives it a
//! length of zero and waits until that clock has passed its end
//! ([`TestDb::wait_past`]), which takes a millisecond.
//!
//! The cases of [`clock`] are about whose clock times the leases, and run on
//! tokio's current-thread runtime, whose clock they move.

#[path = "store_suite/batching.rs"]
mod batching;
#[path = "store_suite/branches.rs"]
mod branches;
#[path = "store_suite/clock.rs"]
mod clock;
#[path = "store_suite/leases.rs"]
mod leases;
#[path = "store_suite/lifecycle.rs"]
mod lifecycle;
#[path = "store_suite/listing.rs"]
mod listing;
#[path = "store_suite/text.rs"]
mod text;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dtx_coordinator::store::{self, Created, Fence, NewTransaction, Store, Update};
use dtx_protocol::{BranchSpec, Mode, Op, Status, TxOptions};
use tempfile::TempDir;

/// A plausible wall-clock time, in Unix milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// The lease coordinators take in these tests.
pub const LEASE: Duration = Duration::from_secs(30);

/// [`LEASE`] in milliseconds.
pub const LEASE_MS: i64 = 30_000;

/// A store under test, and what it takes to open it again.
pub struct TestDb {
    /// The store.
    pub store: Arc<dyn Store>,
    url: String,
    /// A connection to the PostgreSQL server, to read its clock; `None` on
    /// SQLite, whose leases follow the process clock.
    server: Option<sqlx::PgPool>,
    /// Keeps the SQLite file alive until the test ends.
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A store on a new SQLite file (which `open` creates).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite:{}", dir.path().join("dtx.db").display());
        let store = store::open(&url).await.expect("open the SQLite store");
        TestDb {
            store,
            url,
            server: None,
            _dir: Some(dir),
        }
    }

    /// A store on a new, empty database of the shared PostgreSQL server.
    pub async fn postgres() -> TestDb {
        let url = dtx_tests::postgres::fresh_database()
            .await
            .expect("a fresh PostgreSQL database (run `bash tests/images/build-images.sh` once)");
        let store = store::open(&url).await.expect("open the PostgreSQL store");
        let server = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to read the server's clock");
        TestDb {
            store,
            url,
            server: Some(server),
            _dir: None,
        }
    }

    /// Drops the store and opens the same database again, as a restarted
    /// coordinator would.
    pub async fn reopen(&mut self) {
        self.store = store::open(&self.url).await.expect("reopen the store");
    }

    /// Opens a second store on the same database, as a second coordinator
    /// (PostgreSQL) or a second process on the same file (SQLite) would.
    pub async fn open_another(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.expect("open a second store")
    }

    /// Now, in Unix milliseconds, by the clock that times this store's
    /// leases: the PostgreSQL server's, or this process's.
    pub async fn now_ms(&self) -> i64 {
        match &self.server {
            Some(server) => sqlx::query_scalar(
                "SELECT floor(extract(epoch from clock_timestamp()) * 1000)::bigint",
            )
            .fetch_one(server)
            .await
            .expect("read the server's clock"),
            None => dtx_coordinator::clock::now_ms(),
        }
    }

    /// Waits until the lease clock has passed `at_ms`, so that a lease that
    /// ends at `at_ms` has expired. Leases here end at most a few ms ahead.
    pub async fn wait_past(&self, at_ms: i64) {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while self.now_ms().await <= at_ms {
            assert!(
                std::time::Instant::now() < give_up,
                "the lease clock did not pass {at_ms}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The lease expiry of `gid` as stored.
    pub async fn lease_of(&self, gid: &str) -> i64 {
        self.store
            .get(gid)
            .await
            .unwrap()
            .expect("the transaction exists")
            .lease_expires_at_ms
    }
}

/// Checks that a lease written between the lease clock's readings `before`
/// and `after` runs for `length` from then.
pub fn assert_lease_from(lease_expires_at_ms: i64, before: i64, after: i64, length: Duration) {
    let length = length.as_millis() as i64;
    assert!(
        (before + length..=after + length).contains(&lease_expires_at_ms),
        "the lease ends at {lease_expires_at_ms}, not {length} ms after a moment in [{before}, {after}]"
    );
}

/// A branch of `mode` with the URLs that mode calls.
pub fn spec(mode: Mode, id: &str) -> BranchSpec {
    let urls: BTreeMap<Op, String> = mode
        .required_ops()
        .iter()
        .map(|op| (*op, format!("http://svc.test/{id}/{op}")))
        .collect();
    BranchSpec {
        id: id.to_owned(),
        urls,
        payload: serde_json::json!({ "branch": id, "amount": 3 }),
        headers: BTreeMap::new(),
        depends_on: None,
    }
}

/// A saga with `branches` branches, registered at `now` by `owner`.
pub fn saga(gid: &str, owner: &str, now: i64, branches: usize) -> NewTransaction {
    NewTransaction {
        gid: gid.to_owned(),
        mode: Mode::Saga,
        status: Status::Running,
        request_hash: format!("hash-of-{gid}"),
        namespace: "default".into(),
        registered_by: None,
        options: TxOptions::default(),
        branches: (0..branches)
            .map(|i| spec(Mode::Saga, &format!("b{i}")))
            .collect(),
        owner: owner.to_owned(),
        now_ms: now,
        lease: LEASE,
        deadline_at_ms: now + 60_000,
    }
}

/// An open TCC transaction without branches, registered at `now` by `owner`.
pub fn tcc(gid: &str, owner: &str, now: i64) -> NewTransaction {
    NewTransaction {
        mode: Mode::Tcc,
        status: Status::Open,
        ..saga(gid, owner, now, 0)
    }
}

/// [`saga`] with a lease of `lease`.
pub fn saga_leased(gid: &str, owner: &str, branches: usize, lease: Duration) -> NewTransaction {
    NewTransaction {
        lease,
        ..saga(gid, owner, T0, branches)
    }
}

/// Creates `new`, which must not exist yet, and returns its fence.
pub async fn create(store: &dyn Store, new: NewTransaction) -> Fence {
    match store.create(new).await.expect("create") {
        Created::Inserted(fence) => fence,
        Created::Exists { existing, .. } => panic!("{} exists already", existing.gid),
    }
}

/// A fenced write that changes nothing but the time.
pub fn touch(fence: &Fence, now: i64) -> Update {
    Update {
        fence: fence.clone(),
        now_ms: now,
        status: None,
        expect_branch_count: None,
        attention: None,
        branches: Vec::new(),
        events: Vec::new(),
    }
}

/// Makes a test per backend of every case named.
macro_rules! suite {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$module::$case(super::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$module::$case(super::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

suite! {
    lifecycle::create_inserts_the_transaction_owned_at_epoch_one,
    lifecycle::create_again_with_the_same_request_returns_the_existing_transaction,
    lifecycle::create_with_another_request_under_a_used_gid_is_reported_and_changes_nothing,
    lifecycle::concurrent_creates_of_one_gid_insert_it_exactly_once,
    lifecycle::update_applies_status_branches_attention_and_events_together,
    lifecycle::update_with_a_stale_epoch_or_another_owner_is_fenced_and_changes_nothing,
    lifecycle::set_attention_flags_and_logs_under_the_fence_only,
    lifecycle::update_of_a_missing_transaction_is_not_found,
    lifecycle::update_expecting_another_branch_count_is_a_conflict_and_changes_nothing,
    lifecycle::update_naming_an_unknown_branch_changes_nothing_at_all,
    lifecycle::a_refused_write_does_not_fail_the_writes_committed_with_it,
    lifecycle::events_come_back_in_the_order_they_were_written,
    lifecycle::missing_transaction_reads_as_none_and_has_no_events,
    lifecycle::acknowledged_writes_survive_reopening_the_store,
    branches::register_branch_adds_each_branch_at_the_next_index,
    branches::registering_the_same_branch_again_answers_its_first_index,
    branches::same_branch_id_with_another_spec_is_an_id_conflict,
    branches::register_branch_on_a_missing_transaction_is_not_found,
    branches::register_branch_on_a_decided_transaction_is_refused_with_its_status,
    branches::concurrent_registrations_get_unique_consecutive_indices,
    branches::a_registration_racing_a_decision_never_lands_on_the_decided_transaction,
    leases::take_over_bumps_the_epoch_and_fences_out_the_previous_owner,
    leases::take_over_of_a_final_transaction_is_none_and_of_a_missing_one_not_found,
    leases::claim_expired_takes_only_expired_leases_of_live_transactions,
    leases::claim_expired_takes_the_oldest_leases_first_up_to_the_limit,
    leases::concurrent_claims_never_return_the_same_transaction,
    leases::renew_extends_only_the_named_live_leases_of_the_owner,
    leases::renew_reports_the_gids_another_coordinator_took_over,
    leases::release_ends_the_owners_live_leases_so_others_claim_them_at_once,
    listing::list_pages_newest_first_without_duplicates_or_gaps,
    listing::list_filters_by_status_mode_and_attention,
    listing::list_refuses_a_cursor_it_did_not_make,
    batching::concurrent_creates_each_get_their_own_answer,
    batching::concurrent_updates_each_get_their_own_outcome,
    batching::concurrent_drivers_keep_each_transactions_history_in_order,
    batching::lease_renewals_racing_updates_neither_fail_nor_deadlock,
    batching::a_create_the_database_refuses_does_not_fail_the_creates_sent_with_it,
    batching::two_coordinators_batches_on_the_same_transactions_keep_their_outcomes,
    text::update_stores_text_with_control_characters_replaced_on_every_backend,
    text::update_cuts_overlong_text_by_characters,
    text::a_refusal_is_stored_cleaned_beside_the_last_error_and_written_like_it,
}
