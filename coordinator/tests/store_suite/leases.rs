//! Cases on ownership: takeover, claiming expired leases (also by two
//! coordinators at once), renewal and release. Every lease is timed by the
//! store's clock; a case reads that clock around a call ([`TestDb::now_ms`])
//! to check a lease runs from the moment of the call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dtx_coordinator::store::{Fence, StoreError, Update};
use dtx_protocol::Status;

use super::{LEASE, T0, TestDb, assert_lease_from, create, saga, saga_leased, touch};

/// Makes `fence`'s transaction final.
async fn finish(db: &TestDb, fence: &Fence) {
    let update = Update {
        status: Some(Status::Committed),
        ..touch(fence, T0 + 1)
    };
    db.store.update(update).await.unwrap();
}

/// Creates `gid` owned by `owner` with a lease that ends at once, and waits
/// until it has expired.
async fn create_expired(db: &TestDb, gid: &str, owner: &str) -> Fence {
    let fence = create(&*db.store, saga_leased(gid, owner, 1, Duration::ZERO)).await;
    db.wait_past(db.lease_of(gid).await).await;
    fence
}

pub async fn take_over_bumps_the_epoch_and_fences_out_the_previous_owner(db: TestDb) {
    let old = create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    let before = db.now_ms().await;
    let (new, tx) = db
        .store
        .take_over("g1", "coord-b", LEASE)
        .await
        .unwrap()
        .expect("a live transaction is taken over");
    let after = db.now_ms().await;
    assert_eq!(
        new,
        Fence {
            gid: "g1".into(),
            owner: "coord-b".into(),
            epoch: 2
        }
    );
    assert_eq!((tx.owner.as_deref(), tx.epoch), (Some("coord-b"), 2));
    assert_lease_from(tx.lease_expires_at_ms, before, after, LEASE);
    assert_eq!(tx.branches.len(), 2, "the record comes with its branches");

    // The old owner woke up from a long pause: every write of it is refused.
    let late = Update {
        status: Some(Status::Aborting),
        ..touch(&old, T0 + 6)
    };
    assert!(matches!(
        db.store.update(late).await,
        Err(StoreError::Fenced)
    ));
    db.store
        .update(touch(&new, T0 + 7))
        .await
        .expect("the new owner writes");
    let last = db.store.events("g1").await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "takeover");
    assert!(
        (before..=after).contains(&last.at_ms),
        "the takeover is logged at the store's time: {last:?}"
    );
}

pub async fn take_over_of_a_final_transaction_is_none_and_of_a_missing_one_not_found(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    finish(&db, &fence).await;
    let taken = db.store.take_over("g1", "coord-b", LEASE).await.unwrap();
    assert!(taken.is_none());
    assert_eq!(
        db.store.get("g1").await.unwrap().unwrap().epoch,
        1,
        "a final transaction keeps its epoch"
    );
    let missing = db.store.take_over("nowhere", "coord-b", LEASE).await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

pub async fn claim_expired_takes_only_expired_leases_of_live_transactions(db: TestDb) {
    let finished = create(
        &*db.store,
        saga_leased("finished", "coord-a", 1, Duration::ZERO),
    )
    .await;
    finish(&db, &finished).await;
    create(&*db.store, saga("fresh", "coord-a", T0, 1)).await;
    let expired = create_expired(&db, "expired", "coord-a").await;
    db.wait_past(db.lease_of("finished").await).await;

    let before = db.now_ms().await;
    let claimed = db.store.claim_expired("coord-b", LEASE, 100).await.unwrap();
    let after = db.now_ms().await;
    let gids: Vec<&str> = claimed
        .iter()
        .map(|(fence, _)| fence.gid.as_str())
        .collect();
    assert_eq!(gids, ["expired"]);
    let (fence, tx) = &claimed[0];
    assert_eq!((fence.owner.as_str(), fence.epoch), ("coord-b", 2));
    assert_eq!((tx.owner.as_deref(), tx.epoch), (Some("coord-b"), 2));
    assert_lease_from(tx.lease_expires_at_ms, before, after, LEASE);
    assert_eq!(tx.branches.len(), 1);
    assert_eq!(
        db.store
            .events("expired")
            .await
            .unwrap()
            .last()
            .unwrap()
            .kind,
        "takeover"
    );
    assert!(matches!(
        db.store.update(touch(&expired, T0 + 2)).await,
        Err(StoreError::Fenced)
    ));
    // The claim gave it a lease of its own: nothing is left to claim.
    let again = db.store.claim_expired("coord-c", LEASE, 100).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
}

pub async fn claim_expired_takes_the_oldest_leases_first_up_to_the_limit(db: TestDb) {
    // Each lease ends after the one before it.
    for i in 0..5 {
        create_expired(&db, &format!("g{i}"), "coord-a").await;
    }
    let first = db.store.claim_expired("coord-b", LEASE, 2).await.unwrap();
    let gids: BTreeSet<String> = first.into_iter().map(|(fence, _)| fence.gid).collect();
    assert_eq!(gids, BTreeSet::from(["g0".to_owned(), "g1".to_owned()]));
}

pub async fn concurrent_claims_never_return_the_same_transaction(db: TestDb) {
    const TOTAL: usize = 60;
    for i in 0..TOTAL {
        let new = saga_leased(&format!("g{i:02}"), "coord-dead", 1, Duration::ZERO);
        create(&*db.store, new).await;
    }
    db.wait_past(db.lease_of(&format!("g{:02}", TOTAL - 1)).await)
        .await;
    // Four coordinators, each with a store (a connection pool) of its own,
    // claim in small bites until nothing is left.
    let mut claimers = Vec::new();
    for c in 0..4 {
        let store = if c == 0 {
            Arc::clone(&db.store)
        } else {
            db.open_another().await
        };
        claimers.push(tokio::spawn(async move {
            let owner = format!("coord-{c}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_expired(&owner, LEASE, 7).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for (fence, tx) in batch {
                    assert_eq!(
                        (fence.epoch, tx.owner.as_deref()),
                        (2, Some(owner.as_str()))
                    );
                    mine.push(fence.gid);
                }
            }
        }));
    }
    let mut seen = BTreeSet::new();
    for claimer in claimers {
        for gid in claimer.await.unwrap() {
            assert!(seen.insert(gid.clone()), "{gid} was claimed twice");
        }
    }
    assert_eq!(seen.len(), TOTAL, "every expired transaction was claimed");
}

pub async fn renew_extends_only_the_named_live_leases_of_the_owner(db: TestDb) {
    create(&*db.store, saga("mine", "coord-a", T0, 1)).await;
    let done = create(&*db.store, saga("mine-done", "coord-a", T0, 1)).await;
    finish(&db, &done).await;
    create(&*db.store, saga("theirs", "coord-b", T0, 1)).await;
    // Owned, but not driven: its owner does not name it.
    create(&*db.store, saga("mine-undriven", "coord-a", T0, 1)).await;
    let untouched = ["mine-done", "theirs", "mine-undriven"];
    let mut leases = Vec::new();
    for gid in untouched {
        leases.push(db.lease_of(gid).await);
    }
    let named = ["mine", "mine-done", "theirs", "unknown"].map(String::from);

    let before = db.now_ms().await;
    let lost = db
        .store
        .renew_leases("coord-a", &named, LEASE * 3)
        .await
        .unwrap();
    let after = db.now_ms().await;
    assert_eq!(
        lost,
        ["mine-done", "theirs", "unknown"],
        "in the order named"
    );
    assert_lease_from(db.lease_of("mine").await, before, after, LEASE * 3);
    for (gid, lease) in untouched.into_iter().zip(leases) {
        assert_eq!(db.lease_of(gid).await, lease, "{gid} was renewed");
    }
    assert_eq!(
        db.store.get("mine").await.unwrap().unwrap().epoch,
        1,
        "renewal keeps the epoch"
    );
}

pub async fn renew_reports_the_gids_another_coordinator_took_over(db: TestDb) {
    create(&*db.store, saga("kept", "coord-a", T0, 1)).await;
    create(&*db.store, saga("taken", "coord-a", T0, 1)).await;
    db.open_another()
        .await
        .take_over("taken", "coord-b", LEASE)
        .await
        .unwrap()
        .expect("coord-b takes it over");
    let taken_lease = db.lease_of("taken").await;
    let named = ["kept", "taken"].map(String::from);
    let lost = db
        .store
        .renew_leases("coord-a", &named, LEASE * 9)
        .await
        .unwrap();
    assert_eq!(lost, ["taken"]);
    assert_eq!(
        db.lease_of("taken").await,
        taken_lease,
        "the new owner's lease stands"
    );
}

pub async fn release_ends_the_owners_live_leases_so_others_claim_them_at_once(db: TestDb) {
    create(&*db.store, saga("a1", "coord-a", T0, 1)).await;
    create(&*db.store, saga("a2", "coord-a", T0, 1)).await;
    create(&*db.store, saga("b1", "coord-b", T0, 1)).await;
    let b1_lease = db.lease_of("b1").await;
    let before = db.now_ms().await;
    assert_eq!(db.store.release_leases("coord-a").await.unwrap(), 2);
    let after = db.now_ms().await;
    let released = db.lease_of("a1").await;
    assert!(
        (before..=after).contains(&released),
        "a released lease ends at the release: {released} not in [{before}, {after}]"
    );
    assert_eq!(db.lease_of("b1").await, b1_lease);

    // Well before the leases would have expired, another coordinator claims.
    db.wait_past(released.max(db.lease_of("a2").await)).await;
    let claimed = db.store.claim_expired("coord-c", LEASE, 100).await.unwrap();
    let gids: Vec<String> = claimed.into_iter().map(|(fence, _)| fence.gid).collect();
    assert_eq!(gids, ["a1", "a2"]);
    assert_eq!(
        db.store.release_leases("coord-a").await.unwrap(),
        0,
        "nothing is held any more"
    );
}
