//! Cases on ownership: takeover, claiming expired leases (also by two
//! coordinators at once), renewal and release.

use std::collections::BTreeSet;
use std::sync::Arc;

use dtx_coordinator::store::{Fence, StoreError, Update};
use dtx_protocol::Status;

use super::{LEASE_MS, T0, TestDb, create, saga, touch};

/// Makes `fence`'s transaction final.
async fn finish(db: &TestDb, fence: &Fence) {
    let update = Update {
        status: Some(Status::Committed),
        ..touch(fence, T0 + 1)
    };
    db.store.update(update).await.unwrap();
}

pub async fn take_over_bumps_the_epoch_and_fences_out_the_previous_owner(db: TestDb) {
    let old = create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    let (new, tx) = db
        .store
        .take_over("g1", "coord-b", T0 + 5, T0 + 5 + LEASE_MS)
        .await
        .unwrap()
        .expect("a live transaction is taken over");
    assert_eq!(
        new,
        Fence {
            gid: "g1".into(),
            owner: "coord-b".into(),
            epoch: 2
        }
    );
    assert_eq!((tx.owner.as_deref(), tx.epoch), (Some("coord-b"), 2));
    assert_eq!(tx.lease_expires_at_ms, T0 + 5 + LEASE_MS);
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
}

pub async fn take_over_of_a_final_transaction_is_none_and_of_a_missing_one_not_found(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    finish(&db, &fence).await;
    let taken = db
        .store
        .take_over("g1", "coord-b", T0 + 5, T0 + 5 + LEASE_MS)
        .await
        .unwrap();
    assert!(taken.is_none());
    assert_eq!(
        db.store.get("g1").await.unwrap().unwrap().epoch,
        1,
        "a final transaction keeps its epoch"
    );
    let missing = db
        .store
        .take_over("nowhere", "coord-b", T0, T0 + LEASE_MS)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

pub async fn claim_expired_takes_only_expired_leases_of_live_transactions(db: TestDb) {
    let expired = create(&*db.store, saga("expired", "coord-a", T0, 1)).await;
    let finished = create(&*db.store, saga("finished", "coord-a", T0, 1)).await;
    finish(&db, &finished).await;
    create(&*db.store, saga("fresh", "coord-a", T0 + LEASE_MS, 1)).await;

    let now = T0 + LEASE_MS + 1;
    let claimed = db
        .store
        .claim_expired("coord-b", now, now + LEASE_MS, 100)
        .await
        .unwrap();
    let gids: Vec<&str> = claimed
        .iter()
        .map(|(fence, _)| fence.gid.as_str())
        .collect();
    assert_eq!(gids, ["expired"]);
    let (fence, tx) = &claimed[0];
    assert_eq!((fence.owner.as_str(), fence.epoch), ("coord-b", 2));
    assert_eq!(
        (tx.owner.as_deref(), tx.epoch, tx.lease_expires_at_ms),
        (Some("coord-b"), 2, now + LEASE_MS)
    );
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
        db.store.update(touch(&expired, now)).await,
        Err(StoreError::Fenced)
    ));
    // A lease that ends exactly now has not expired yet.
    let again = db
        .store
        .claim_expired("coord-c", T0 + 2 * LEASE_MS, now, 100)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

pub async fn claim_expired_takes_the_oldest_leases_first_up_to_the_limit(db: TestDb) {
    for i in 0..5 {
        create(
            &*db.store,
            saga(&format!("g{i}"), "coord-a", T0 + i * 10, 1),
        )
        .await;
    }
    let now = T0 + 10 * LEASE_MS;
    let first = db
        .store
        .claim_expired("coord-b", now, now + LEASE_MS, 2)
        .await
        .unwrap();
    let gids: BTreeSet<String> = first.into_iter().map(|(fence, _)| fence.gid).collect();
    assert_eq!(gids, BTreeSet::from(["g0".to_owned(), "g1".to_owned()]));
}

pub async fn concurrent_claims_never_return_the_same_transaction(db: TestDb) {
    const TOTAL: usize = 60;
    for i in 0..TOTAL {
        create(&*db.store, saga(&format!("g{i:02}"), "coord-dead", T0, 1)).await;
    }
    // Four coordinators, each with a store (a connection pool) of its own,
    // claim in small bites until nothing is left.
    let now = T0 + 2 * LEASE_MS;
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
                let batch = store
                    .claim_expired(&owner, now, now + LEASE_MS, 7)
                    .await
                    .unwrap();
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
    let named = ["mine", "mine-done", "theirs", "unknown"].map(String::from);

    let renewed = db
        .store
        .renew_leases("coord-a", &named, T0 + 3 * LEASE_MS)
        .await
        .unwrap();
    assert_eq!(renewed, 1);
    let lease =
        |tx: Option<dtx_coordinator::store::TransactionRecord>| tx.unwrap().lease_expires_at_ms;
    assert_eq!(
        lease(db.store.get("mine").await.unwrap()),
        T0 + 3 * LEASE_MS
    );
    assert_eq!(
        lease(db.store.get("mine-done").await.unwrap()),
        T0 + LEASE_MS
    );
    assert_eq!(lease(db.store.get("theirs").await.unwrap()), T0 + LEASE_MS);
    assert_eq!(
        lease(db.store.get("mine-undriven").await.unwrap()),
        T0 + LEASE_MS
    );
    assert_eq!(
        db.store.get("mine").await.unwrap().unwrap().epoch,
        1,
        "renewal keeps the epoch"
    );

    // After a takeover the old owner's renewal no longer reaches it.
    db.store
        .take_over("mine", "coord-b", T0 + 1, T0 + 1 + LEASE_MS)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .renew_leases("coord-a", &named, T0 + 9 * LEASE_MS)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        lease(db.store.get("mine").await.unwrap()),
        T0 + 1 + LEASE_MS
    );
}

pub async fn release_ends_the_owners_live_leases_so_others_claim_them_at_once(db: TestDb) {
    create(&*db.store, saga("a1", "coord-a", T0, 1)).await;
    create(&*db.store, saga("a2", "coord-a", T0, 1)).await;
    create(&*db.store, saga("b1", "coord-b", T0, 1)).await;
    let now = T0 + 100;
    assert_eq!(db.store.release_leases("coord-a", now).await.unwrap(), 2);
    assert_eq!(
        db.store
            .get("a1")
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at_ms,
        now
    );
    assert_eq!(
        db.store
            .get("b1")
            .await
            .unwrap()
            .unwrap()
            .lease_expires_at_ms,
        T0 + LEASE_MS
    );

    // Well before the leases would have expired, another coordinator claims.
    let claimed = db
        .store
        .claim_expired("coord-c", now + 1, now + 1 + LEASE_MS, 100)
        .await
        .unwrap();
    let gids: Vec<String> = claimed.into_iter().map(|(fence, _)| fence.gid).collect();
    assert_eq!(gids, ["a1", "a2"]);
    assert_eq!(
        db.store.release_leases("coord-a", now + 2).await.unwrap(),
        0,
        "nothing is held any more"
    );
}
