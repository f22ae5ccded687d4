//! Whose clock times the leases. On PostgreSQL, shared by coordinators whose
//! clocks may disagree, the database server's: this process's clock (the
//! coordinator's, `dtx_coordinator::clock::now_ms`) moved an hour ahead
//! changes nothing. On SQLite, one machine, the process clock: moving it is
//! time passing.
//!
//! The process clock follows tokio's; [`move_clock_ahead`] pauses tokio's
//! clock, advances it and resumes it, which needs the current-thread runtime
//! (`#[tokio::test]`'s default) and leaves every later reading ahead.

use std::time::Duration;

use super::{LEASE, T0, TestDb, assert_lease_from, create, saga};

const AN_HOUR: Duration = Duration::from_secs(3600);

/// Moves this process's clock `by` ahead for the rest of the test.
async fn move_clock_ahead(by: Duration) {
    // Anchor the clock first: it is read relative to its first reading.
    dtx_coordinator::clock::now_ms();
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn postgres_a_claimer_whose_clock_is_an_hour_ahead_does_not_claim_a_live_transaction() {
    let db = TestDb::postgres().await;
    create(&*db.store, saga("live", "coord-a", T0, 1)).await;
    let lease = db.lease_of("live").await;
    move_clock_ahead(AN_HOUR).await;
    let claimer = db.open_another().await;
    let claimed = claimer.claim_expired("coord-b", LEASE, 100).await.unwrap();
    assert!(claimed.is_empty(), "{claimed:?}");
    let live = db.store.get("live").await.unwrap().unwrap();
    assert_eq!((live.owner.as_deref(), live.epoch), (Some("coord-a"), 1));
    assert_eq!(live.lease_expires_at_ms, lease);
}

#[tokio::test]
async fn postgres_a_renewal_after_the_clock_jumped_ahead_writes_no_lease_into_the_future() {
    let db = TestDb::postgres().await;
    create(&*db.store, saga("driven", "coord-a", T0, 1)).await;
    move_clock_ahead(AN_HOUR).await;
    let before = db.now_ms().await;
    let lost = db
        .store
        .renew_leases("coord-a", &["driven".to_owned()], LEASE)
        .await
        .unwrap();
    let after = db.now_ms().await;
    assert!(lost.is_empty(), "{lost:?}");
    assert_lease_from(db.lease_of("driven").await, before, after, LEASE);
}

#[tokio::test]
async fn postgres_a_takeover_and_a_release_after_the_clock_jumped_ahead_use_the_servers_time() {
    let db = TestDb::postgres().await;
    create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    create(&*db.store, saga("g2", "coord-a", T0, 1)).await;
    move_clock_ahead(AN_HOUR).await;
    let before = db.now_ms().await;
    let (_, taken) = db
        .store
        .take_over("g1", "coord-b", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.store.release_leases("coord-a").await.unwrap(), 1);
    let after = db.now_ms().await;
    assert_lease_from(taken.lease_expires_at_ms, before, after, LEASE);
    let released = db.lease_of("g2").await;
    assert!(
        (before..=after).contains(&released),
        "released at {released}, not in [{before}, {after}]"
    );
}

#[tokio::test]
async fn sqlite_leases_follow_the_process_clock() {
    let db = TestDb::sqlite().await;
    create(&*db.store, saga("live", "coord-a", T0, 1)).await;
    move_clock_ahead(AN_HOUR).await;
    // On one machine the process clock is the time: an hour has passed.
    let claimed = db.store.claim_expired("coord-b", LEASE, 100).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
}
