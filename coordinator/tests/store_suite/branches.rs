//! Cases on registering TCC branches: every outcome of `register_branch`,
//! and its atomicity against concurrent registrations and decisions.

use std::collections::BTreeSet;
use std::sync::Arc;

use dtx_coordinator::store::{BranchRegistered, Store, StoreError, Update};
use dtx_protocol::{BranchStatus, Mode, Status};

use super::{T0, TestDb, create, spec, tcc, touch};

pub async fn register_branch_adds_each_branch_at_the_next_index(db: TestDb) {
    create(&*db.store, tcc("g1", "coord-a", T0)).await;
    let a = db
        .store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    let b = db
        .store
        .register_branch("g1", spec(Mode::Tcc, "b"), T0 + 2, None)
        .await
        .unwrap();
    assert_eq!(
        (a, b),
        (BranchRegistered::Added(0), BranchRegistered::Added(1))
    );

    let tx = db.store.get("g1").await.unwrap().unwrap();
    let ids: Vec<(u32, &str)> = tx
        .branches
        .iter()
        .map(|b| (b.index, b.spec.id.as_str()))
        .collect();
    assert_eq!(ids, [(0, "a"), (1, "b")]);
    assert!(
        tx.branches
            .iter()
            .all(|b| b.status == BranchStatus::Pending)
    );
    assert_eq!((tx.status, tx.updated_at_ms), (Status::Open, T0 + 2));
    let history = db.store.events("g1").await.unwrap();
    let logged: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|e| (e.kind.as_str(), e.branch_id.as_deref()))
        .collect();
    assert_eq!(
        logged,
        [
            ("registered", None),
            ("branch", Some("a")),
            ("branch", Some("b"))
        ]
    );
}

pub async fn registering_the_same_branch_again_answers_its_first_index(db: TestDb) {
    create(&*db.store, tcc("g1", "coord-a", T0)).await;
    db.store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    db.store
        .register_branch("g1", spec(Mode::Tcc, "b"), T0 + 2, None)
        .await
        .unwrap();
    let retry = db
        .store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 3, None)
        .await
        .unwrap();
    assert_eq!(retry, BranchRegistered::AlreadyRegistered(0));
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.branches.len(), 2, "a retry adds nothing");
    assert_eq!(tx.updated_at_ms, T0 + 2, "a retry writes nothing");
    // The next new branch still gets the next index.
    let c = db
        .store
        .register_branch("g1", spec(Mode::Tcc, "c"), T0 + 4, None)
        .await
        .unwrap();
    assert_eq!(c, BranchRegistered::Added(2));
}

pub async fn same_branch_id_with_another_spec_is_an_id_conflict(db: TestDb) {
    create(&*db.store, tcc("g1", "coord-a", T0)).await;
    db.store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    let mut other = spec(Mode::Tcc, "a");
    other.payload = serde_json::json!({ "amount": 4 });
    let answer = db
        .store
        .register_branch("g1", other, T0 + 2, None)
        .await
        .unwrap();
    assert_eq!(answer, BranchRegistered::IdConflict);
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.branches.len(), 1);
    assert_eq!(
        tx.branches[0].spec,
        spec(Mode::Tcc, "a"),
        "the first registration stands"
    );
}

pub async fn register_branch_on_a_missing_transaction_is_not_found(db: TestDb) {
    let answer = db
        .store
        .register_branch("nowhere", spec(Mode::Tcc, "a"), T0, None)
        .await;
    assert!(matches!(answer, Err(StoreError::NotFound)), "{answer:?}");
}

pub async fn register_branch_on_a_decided_transaction_is_refused_with_its_status(db: TestDb) {
    let fence = create(&*db.store, tcc("g1", "coord-a", T0)).await;
    db.store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    for status in [Status::Aborting, Status::Aborted] {
        let decision = Update {
            status: Some(status),
            ..touch(&fence, T0 + 2)
        };
        db.store.update(decision).await.unwrap();
        let answer = db
            .store
            .register_branch("g1", spec(Mode::Tcc, "late"), T0 + 3, None)
            .await
            .unwrap();
        assert_eq!(answer, BranchRegistered::NotOpen(status));
        // A retry of a branch registered before the decision is refused
        // too: the initiator must not call Try on a decided transaction.
        let retry = db
            .store
            .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 3, None)
            .await
            .unwrap();
        assert_eq!(retry, BranchRegistered::NotOpen(status));
    }
    assert_eq!(db.store.get("g1").await.unwrap().unwrap().branches.len(), 1);
}

pub async fn concurrent_registrations_get_unique_consecutive_indices(db: TestDb) {
    const N: usize = 24;
    create(&*db.store, tcc("g1", "coord-a", T0)).await;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&db.store);
            tokio::spawn(async move {
                store
                    .register_branch("g1", spec(Mode::Tcc, &format!("b{i}")), T0 + 1, None)
                    .await
            })
        })
        .collect();
    let mut indices = BTreeSet::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            BranchRegistered::Added(idx) => assert!(indices.insert(idx), "index {idx} given twice"),
            other => panic!("a new branch was not added: {other:?}"),
        }
    }
    assert_eq!(indices, (0..N as u32).collect());
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.branches.len(), N);
    let stored: BTreeSet<u32> = tx.branches.iter().map(|b| b.index).collect();
    assert_eq!(stored, indices);
}

/// The engine's TCC commit: read the branches, then decide expecting that
/// many; on a conflict (a branch came in meanwhile) read again. Returns the
/// branch count the decision was taken with.
async fn decide(store: &dyn Store, fence: &dtx_coordinator::store::Fence, now: i64) -> u32 {
    loop {
        let count = store.get(&fence.gid).await.unwrap().unwrap().branches.len() as u32;
        let decision = Update {
            status: Some(Status::Committing),
            expect_branch_count: Some(count),
            ..touch(fence, now)
        };
        match store.update(decision).await {
            Ok(()) => return count,
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => panic!("decision failed: {e}"),
        }
    }
}

pub async fn a_registration_racing_a_decision_never_lands_on_the_decided_transaction(db: TestDb) {
    const ROUNDS: usize = 12;
    const RACERS: usize = 6;
    for round in 0..ROUNDS {
        let gid = format!("g{round}");
        let fence = create(&*db.store, tcc(&gid, "coord-a", T0)).await;
        let registrations: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, gid) = (Arc::clone(&db.store), gid.clone());
                tokio::spawn(async move {
                    store
                        .register_branch(&gid, spec(Mode::Tcc, &format!("b{i}")), T0 + 1, None)
                        .await
                })
            })
            .collect();
        let decided_with = decide(&*db.store, &fence, T0 + 2).await;
        let mut added = BTreeSet::new();
        for registration in registrations {
            match registration.await.unwrap().unwrap() {
                BranchRegistered::Added(idx) => {
                    added.insert(idx);
                }
                BranchRegistered::NotOpen(status) => assert_eq!(status, Status::Committing),
                other => panic!("unexpected answer {other:?}"),
            }
        }
        let tx = db.store.get(&gid).await.unwrap().unwrap();
        assert_eq!(tx.status, Status::Committing);
        // Every branch acknowledged is in the log, and the decision covered
        // exactly the branches in the log: none slipped in after it.
        assert_eq!(tx.branches.len(), added.len(), "round {round}");
        assert_eq!(decided_with as usize, added.len(), "round {round}");
    }
}
