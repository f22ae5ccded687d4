//! Cases on many concurrent writes, which both backends commit together
//! (SQLite in one transaction of its writer, PostgreSQL as one statement
//! per batch): each write must still get its own answer, be applied whole
//! or not at all, and keep its transaction's history in order; and writes
//! racing the lease renewal of their owner must neither fail nor stall.

use std::sync::Arc;

use dtx_coordinator::store::{
    BranchUpdate, Created, Event, Fence, NewTransaction, Store, StoreError, Update,
};
use dtx_protocol::{BranchStatus, Status};
use tokio::task::JoinSet;

use super::{LEASE, T0, TestDb, create, saga, touch};

fn event(at_ms: i64, kind: String) -> Event {
    Event {
        at_ms,
        kind,
        branch_id: None,
        detail: "x".into(),
    }
}

fn succeeded(index: u32) -> BranchUpdate {
    BranchUpdate {
        index,
        status: BranchStatus::Succeeded,
        attempts: 1,
        last_http_status: Some(200),
        last_error: None,
        refusal: None,
        failing_since_ms: None,
    }
}

fn kinds(events: Vec<Event>) -> Vec<String> {
    events.into_iter().map(|e| e.kind).collect()
}

/// What a create should answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Inserted,
    SameRequest,
    AnotherRequest,
    /// One of the racers inserts; any other gets `Exists`, same request or
    /// not as its hash says.
    Race,
}

pub async fn concurrent_creates_each_get_their_own_answer(db: TestDb) {
    let mut before = Vec::new();
    for i in 0..10 {
        let gid = format!("old-{i:02}");
        create(&*db.store, saga(&gid, "coord-a", T0, 2)).await;
        before.push(db.store.get(&gid).await.unwrap().unwrap());
    }
    let mut creates: Vec<(Expect, NewTransaction)> = Vec::new();
    for i in 0..30 {
        creates.push((
            Expect::Inserted,
            saga(&format!("new-{i:02}"), "coord-a", T0 + 1, 2),
        ));
    }
    for i in 0..10 {
        let gid = format!("old-{i:02}");
        creates.push((Expect::SameRequest, saga(&gid, "coord-b", T0 + 1, 2)));
        let mut other = saga(&gid, "coord-b", T0 + 1, 1);
        other.request_hash = "another request".into();
        creates.push((Expect::AnotherRequest, other));
    }
    for j in 0..5 {
        // Four retries of one registration, through four coordinators.
        for c in 0..4 {
            creates.push((
                Expect::Race,
                saga(&format!("dup-{j}"), &format!("coord-{c}"), T0, 2),
            ));
        }
        // Two requests under one gid.
        for c in 0..2 {
            let mut new = saga(&format!("clash-{j}"), &format!("coord-{c}"), T0, c + 1);
            new.request_hash = format!("request {c}");
            creates.push((Expect::Race, new));
        }
    }

    let mut tasks = JoinSet::new();
    for (expect, new) in creates {
        let store = Arc::clone(&db.store);
        tasks.spawn(async move { (expect, new.clone(), store.create(new).await) });
    }
    let mut winners = std::collections::BTreeMap::new();
    let mut racers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (expect, new, answer) = joined.unwrap();
        match (expect, answer.expect("a create answers")) {
            (Expect::Inserted | Expect::Race, Created::Inserted(fence)) => {
                assert_eq!((fence.gid.as_str(), fence.epoch), (new.gid.as_str(), 1));
                assert_eq!(fence.owner, new.owner);
                if expect == Expect::Race {
                    assert!(
                        winners.insert(new.gid.clone(), new).is_none(),
                        "inserted twice"
                    );
                }
            }
            (
                Expect::SameRequest,
                Created::Exists {
                    same_request,
                    existing,
                },
            ) => {
                assert!(same_request);
                assert_eq!(existing.owner.as_deref(), Some("coord-a"));
            }
            (Expect::AnotherRequest, Created::Exists { same_request, .. }) => {
                assert!(!same_request);
            }
            (
                Expect::Race,
                Created::Exists {
                    same_request,
                    existing,
                },
            ) => {
                racers.push((new, same_request, existing));
            }
            (expect, answer) => panic!("{}: expected {expect:?}, got {answer:?}", new.gid),
        }
    }
    assert_eq!(winners.len(), 10, "each raced gid is inserted once");
    for (new, same_request, existing) in racers {
        let winner = &winners[&new.gid];
        assert_eq!(same_request, winner.request_hash == new.request_hash);
        assert_eq!(existing.owner.as_deref(), Some(winner.owner.as_str()));
    }

    for i in 0..30 {
        let gid = format!("new-{i:02}");
        let tx = db.store.get(&gid).await.unwrap().expect("inserted");
        assert_eq!((tx.branches.len(), tx.created_at_ms), (2, T0 + 1));
        assert_eq!(kinds(db.store.events(&gid).await.unwrap()), ["registered"]);
    }
    for (gid, winner) in &winners {
        let tx = db.store.get(gid).await.unwrap().unwrap();
        assert_eq!(tx.branches.len(), winner.branches.len());
        assert_eq!(tx.owner.as_deref(), Some(winner.owner.as_str()));
        assert_eq!(db.store.events(gid).await.unwrap().len(), 1);
    }
    for old in before {
        assert_eq!(db.store.get(&old.gid).await.unwrap().as_ref(), Some(&old));
        assert_eq!(db.store.events(&old.gid).await.unwrap().len(), 1);
    }
}

/// What an update should come to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Applied,
    StaleEpoch,
    UnknownBranch,
    WrongCount,
    Missing,
}

pub async fn concurrent_updates_each_get_their_own_outcome(db: TestDb) {
    const OUTCOMES: [Outcome; 5] = [
        Outcome::Applied,
        Outcome::StaleEpoch,
        Outcome::UnknownBranch,
        Outcome::WrongCount,
        Outcome::Missing,
    ];
    let mut writes = Vec::new();
    for i in 0..60 {
        let outcome = OUTCOMES[i % OUTCOMES.len()];
        let gid = format!("g{i:02}");
        let mut fence = match outcome {
            Outcome::Missing => Fence {
                gid: gid.clone(),
                owner: "coord-a".into(),
                epoch: 1,
            },
            _ => create(&*db.store, saga(&gid, "coord-a", T0, 2)).await,
        };
        if outcome == Outcome::StaleEpoch {
            // The same coordinator took it over again: only the epoch moved.
            let (new, _) = db
                .store
                .take_over(&gid, "coord-a", LEASE)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(new.epoch, 2);
            fence.epoch = 1;
        }
        let mut update = Update {
            status: Some(Status::Committed),
            branches: vec![succeeded(0), succeeded(1)],
            events: vec![
                event(T0 + 2, format!("{gid}-a")),
                event(T0 + 2, format!("{gid}-b")),
            ],
            ..touch(&fence, T0 + 2)
        };
        match outcome {
            Outcome::UnknownBranch => update.branches.push(succeeded(5)),
            Outcome::WrongCount => update.expect_branch_count = Some(3),
            _ => {}
        }
        let before = db.store.get(&gid).await.unwrap();
        let history = db.store.events(&gid).await.unwrap();
        writes.push((outcome, update, before, history));
    }

    let mut tasks = JoinSet::new();
    for (outcome, update, before, history) in writes {
        let store = Arc::clone(&db.store);
        tasks.spawn(async move {
            let gid = update.fence.gid.clone();
            let result = store.update(update).await;
            (outcome, gid, result, before, history)
        });
    }
    let mut applied = 0;
    while let Some(joined) = tasks.join_next().await {
        let (outcome, gid, result, before, history) = joined.unwrap();
        match (outcome, result) {
            (Outcome::Applied, Ok(())) => applied += 1,
            (Outcome::StaleEpoch, Err(StoreError::Fenced)) => {}
            (Outcome::UnknownBranch, Err(StoreError::Conflict(why))) => {
                assert_eq!(
                    why.to_string(),
                    format!("transaction `{gid}` has no branch at index 5")
                );
            }
            (Outcome::WrongCount, Err(StoreError::Conflict(why))) => {
                assert!(why.to_string().contains("expected 3"), "{why}");
            }
            (Outcome::Missing, Err(StoreError::NotFound)) => {}
            (outcome, result) => panic!("{gid}: expected {outcome:?}, got {result:?}"),
        }
        let tx = db.store.get(&gid).await.unwrap();
        let events = kinds(db.store.events(&gid).await.unwrap());
        if outcome == Outcome::Applied {
            let tx = tx.unwrap();
            assert_eq!((tx.status, tx.updated_at_ms), (Status::Committed, T0 + 2));
            assert!(
                tx.branches
                    .iter()
                    .all(|b| b.status == BranchStatus::Succeeded)
            );
            let a = format!("{gid}-a");
            let b = format!("{gid}-b");
            assert_eq!(events, ["registered", a.as_str(), b.as_str()]);
        } else {
            assert_eq!(tx, before, "{gid}: a refused write changed the transaction");
            assert_eq!(
                events,
                kinds(history),
                "{gid}: a refused write added events"
            );
        }
    }
    assert_eq!(applied, 12);
}

pub async fn concurrent_drivers_keep_each_transactions_history_in_order(db: TestDb) {
    let mut tasks = JoinSet::new();
    for i in 0..24 {
        let gid = format!("g{i:02}");
        let fence = create(&*db.store, saga(&gid, "coord-a", T0, 2)).await;
        let store = Arc::clone(&db.store);
        // One driver per transaction: each write waits for the one before.
        tasks.spawn(async move {
            let mut expected = vec!["registered".to_owned()];
            for round in 0..8 {
                // Later entries carry earlier times: order is write order.
                let at = T0 + 100 - round;
                let written: Vec<String> = (0..3).map(|k| format!("{gid}-{round}-{k}")).collect();
                let update = Update {
                    branches: vec![succeeded(u32::try_from(round % 2).unwrap())],
                    events: written.iter().map(|kind| event(at, kind.clone())).collect(),
                    ..touch(&fence, at)
                };
                store.update(update).await.expect("the driver's write");
                expected.extend(written);
            }
            (gid, expected)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (gid, expected) = joined.unwrap();
        assert_eq!(kinds(db.store.events(&gid).await.unwrap()), expected);
    }
}

/// A renewal changes many rows that batches of updates hold at the same
/// time; in opposite lock orders they would deadlock, which the database
/// resolves by failing one of them after a second.
pub async fn lease_renewals_racing_updates_neither_fail_nor_deadlock(db: TestDb) {
    let mut fences = Vec::new();
    for i in 0..40 {
        fences.push(create(&*db.store, saga(&format!("g{i:02}"), "coord-a", T0, 1)).await);
    }
    // Renewal names them in the reverse of gid order.
    let gids: Vec<String> = fences.iter().rev().map(|f| f.gid.clone()).collect();
    // Queued out of gid order, so that a batch lists its rows out of order.
    fences.sort_by_key(|fence| (fence.gid.as_bytes()[2], fence.gid.as_bytes()[1]));
    let started = std::time::Instant::now();
    let mut drivers = JoinSet::new();
    for fence in fences {
        let store = Arc::clone(&db.store);
        drivers.spawn(async move {
            for round in 0..10 {
                let update = Update {
                    events: vec![event(T0 + round, "step".into())],
                    ..touch(&fence, T0 + round)
                };
                store.update(update).await.expect("a driver's write");
            }
        });
    }
    let renewer = {
        let store: Arc<dyn Store> = Arc::clone(&db.store);
        tokio::spawn(async move {
            let mut renewals = 0;
            for round in 0..30 {
                let lost = store
                    .renew_leases("coord-a", &gids, LEASE * 2)
                    .await
                    .expect("a renewal");
                assert_eq!(lost, Vec::<String>::new(), "round {round}");
                renewals += 1;
                tokio::task::yield_now().await;
            }
            renewals
        })
    };
    while let Some(joined) = drivers.join_next().await {
        joined.unwrap();
    }
    assert_eq!(renewer.await.unwrap(), 30);
    // A deadlock costs the database's deadlock timeout (a second by
    // default) before one side fails; this work takes far less.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    for i in 0..40 {
        let events = db.store.events(&format!("g{i:02}")).await.unwrap();
        assert_eq!(events.len(), 11);
    }
}

pub async fn a_create_the_database_refuses_does_not_fail_the_creates_sent_with_it(db: TestDb) {
    let mut tasks = JoinSet::new();
    for i in 0..40 {
        let mut new = saga(&format!("g{i:02}"), "coord-a", T0, 2);
        let bad = i % 10 == 3;
        if bad {
            // Two branches with one id: the store's uniqueness refuses it.
            new.branches[1].id = new.branches[0].id.clone();
        }
        let store = Arc::clone(&db.store);
        tasks.spawn(async move { (new.gid.clone(), bad, store.create(new).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (gid, bad, answer) = joined.unwrap();
        if bad {
            assert!(
                matches!(answer, Err(StoreError::Conflict(_))),
                "{gid}: {answer:?}"
            );
            assert_eq!(db.store.get(&gid).await.unwrap(), None);
            assert!(db.store.events(&gid).await.unwrap().is_empty());
        } else {
            assert!(
                matches!(answer, Ok(Created::Inserted(_))),
                "{gid}: {answer:?}"
            );
            assert_eq!(db.store.get(&gid).await.unwrap().unwrap().branches.len(), 2);
        }
    }
}

/// Two coordinators write the same transactions at once: the one that took
/// them over, and the one it took them from, whose writes must all be
/// fenced out. Their batches lock the same rows, in whatever order their
/// writes were queued.
pub async fn two_coordinators_batches_on_the_same_transactions_keep_their_outcomes(db: TestDb) {
    let old_owner = db.store.clone();
    let new_owner = db.open_another().await;
    let mut stale = Vec::new();
    let mut current = Vec::new();
    for i in 0..40 {
        let gid = format!("g{i:02}");
        stale.push(create(&*old_owner, saga(&gid, "coord-a", T0, 1)).await);
        let (fence, _) = new_owner
            .take_over(&gid, "coord-b", LEASE)
            .await
            .unwrap()
            .unwrap();
        current.push(fence);
    }
    // Opposite orders, so that the batches list the rows in opposite orders.
    stale.reverse();
    let started = std::time::Instant::now();
    let mut tasks = JoinSet::new();
    for round in 0..5 {
        for (store, fences, owner) in [
            (&old_owner, &stale, "coord-a"),
            (&new_owner, &current, "coord-b"),
        ] {
            for fence in fences {
                let store = Arc::clone(store);
                let update = Update {
                    events: vec![event(T0 + 2, format!("{owner}-{round}"))],
                    ..touch(fence, T0 + 2 + round)
                };
                tasks.spawn(async move { (owner, store.update(update).await) });
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            ("coord-a", result) => assert!(matches!(result, Err(StoreError::Fenced)), "{result:?}"),
            (_, result) => result.expect("the owner's write"),
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    for fence in &current {
        let events = kinds(db.store.events(&fence.gid).await.unwrap());
        assert_eq!(events.len(), 7, "{events:?}");
        assert!(events.iter().all(|kind| !kind.starts_with("coord-a")));
    }
}
