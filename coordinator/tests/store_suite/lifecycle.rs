//! Cases on creating, updating and reading transactions back: idempotent
//! registration, fencing, atomic updates, history order and durability.

use std::sync::Arc;

use dtx_coordinator::store::{BranchUpdate, Created, Event, Fence, StoreError, Update};
use dtx_protocol::{BranchStatus, Mode, Status, TxOptions};

use super::{LEASE, T0, TestDb, assert_lease_from, create, saga, spec, tcc, touch};

fn event(at_ms: i64, kind: &str, branch_id: Option<&str>, detail: &str) -> Event {
    Event {
        at_ms,
        kind: kind.to_owned(),
        branch_id: branch_id.map(str::to_owned),
        detail: detail.to_owned(),
    }
}

fn branch_update(
    index: u32,
    status: BranchStatus,
    attempts: u32,
    http: Option<u16>,
) -> BranchUpdate {
    BranchUpdate {
        index,
        status,
        attempts,
        last_http_status: http,
        last_error: http.filter(|s| *s >= 500).map(|s| format!("HTTP {s}")),
        refusal: None,
        // A failing phase-two call keeps the start of its failure run.
        failing_since_ms: http.filter(|s| *s >= 500).map(|_| T0 + 1),
    }
}

pub async fn create_inserts_the_transaction_owned_at_epoch_one(db: TestDb) {
    let mut new = saga("g1", "coord-a", T0, 3);
    new.options = TxOptions {
        deadline_ms: 5_000,
        ..TxOptions::default()
    };
    let before = db.now_ms().await;
    let fence = create(&*db.store, new.clone()).await;
    let after = db.now_ms().await;
    assert_eq!(
        fence,
        Fence {
            gid: "g1".into(),
            owner: "coord-a".into(),
            epoch: 1
        }
    );

    let tx = db.store.get("g1").await.unwrap().expect("stored");
    assert_eq!((tx.mode, tx.status), (Mode::Saga, Status::Running));
    assert_eq!(tx.options, new.options);
    assert_eq!((tx.created_at_ms, tx.updated_at_ms), (T0, T0));
    assert_eq!(tx.deadline_at_ms, T0 + 60_000);
    assert_eq!(tx.owner.as_deref(), Some("coord-a"));
    assert_eq!(tx.epoch, 1);
    // The lease is timed by the store's clock, from the moment of the insert.
    assert_lease_from(tx.lease_expires_at_ms, before, after, LEASE);
    assert_eq!(tx.attention, None);
    assert_eq!(tx.branches.len(), 3);
    for (i, branch) in tx.branches.iter().enumerate() {
        assert_eq!(branch.index, i as u32);
        assert_eq!(branch.spec, new.branches[i]);
        assert_eq!((branch.status, branch.attempts), (BranchStatus::Pending, 0));
        assert_eq!(
            (
                branch.last_http_status,
                branch.last_error.as_deref(),
                branch.refusal.as_deref()
            ),
            (None, None, None)
        );
    }
    let events = db.store.events("g1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].at_ms),
        ("registered", T0)
    );
}

pub async fn create_again_with_the_same_request_returns_the_existing_transaction(db: TestDb) {
    create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    // A retry, possibly through another coordinator, later.
    let retry = saga("g1", "coord-b", T0 + 500, 2);
    match db.store.create(retry).await.unwrap() {
        Created::Exists {
            same_request,
            existing,
        } => {
            assert!(same_request);
            assert_eq!(existing.owner.as_deref(), Some("coord-a"));
            assert_eq!((existing.created_at_ms, existing.epoch), (T0, 1));
            assert_eq!(existing.branches.len(), 2);
        }
        other => panic!("a retry inserted again: {other:?}"),
    }
    assert_eq!(
        db.store.events("g1").await.unwrap().len(),
        1,
        "one registration, one event"
    );
}

pub async fn create_with_another_request_under_a_used_gid_is_reported_and_changes_nothing(
    db: TestDb,
) {
    create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    let before = db.store.get("g1").await.unwrap();
    let mut other = tcc("g1", "coord-a", T0 + 1);
    other.request_hash = "another request".into();
    match db.store.create(other).await.unwrap() {
        Created::Exists { same_request, .. } => assert!(!same_request),
        other => panic!("a reused gid inserted: {other:?}"),
    }
    assert_eq!(db.store.get("g1").await.unwrap(), before);
}

pub async fn concurrent_creates_of_one_gid_insert_it_exactly_once(db: TestDb) {
    let attempts = (0..8).map(|i| {
        let store = Arc::clone(&db.store);
        tokio::spawn(async move { store.create(saga("g1", &format!("coord-{i}"), T0, 2)).await })
    });
    let mut inserted = 0;
    for attempt in attempts {
        match attempt.await.unwrap().unwrap() {
            Created::Inserted(_) => inserted += 1,
            Created::Exists { same_request, .. } => assert!(same_request),
        }
    }
    assert_eq!(inserted, 1);
    assert_eq!(db.store.get("g1").await.unwrap().unwrap().branches.len(), 2);
    assert_eq!(db.store.events("g1").await.unwrap().len(), 1);
}

pub async fn update_applies_status_branches_attention_and_events_together(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 3)).await;
    let update = Update {
        status: Some(Status::Aborting),
        attention: Some("compensation of b1 keeps failing".into()),
        branches: vec![
            branch_update(0, BranchStatus::Succeeded, 1, Some(200)),
            branch_update(1, BranchStatus::RollingBack, 7, Some(503)),
        ],
        events: vec![
            event(T0 + 10, "branch", Some("b1"), "action refused"),
            event(T0 + 10, "status", None, "aborting"),
        ],
        ..touch(&fence, T0 + 10)
    };
    db.store.update(update).await.unwrap();

    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Aborting);
    assert_eq!(tx.updated_at_ms, T0 + 10);
    assert_eq!(
        tx.attention.as_deref(),
        Some("compensation of b1 keeps failing")
    );
    let b = &tx.branches;
    assert_eq!(
        (b[0].status, b[0].attempts, b[0].last_http_status),
        (BranchStatus::Succeeded, 1, Some(200))
    );
    assert_eq!((b[1].status, b[1].attempts), (BranchStatus::RollingBack, 7));
    assert_eq!(
        (b[1].last_http_status, b[1].last_error.as_deref()),
        (Some(503), Some("HTTP 503"))
    );
    assert_eq!(
        (b[0].failing_since_ms, b[1].failing_since_ms),
        (None, Some(T0 + 1)),
        "the failure window is logged with the branch"
    );
    assert_eq!(
        b[2].status,
        BranchStatus::Pending,
        "branches not named are left alone"
    );
    let kinds: Vec<String> = db
        .store
        .events("g1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["registered", "branch", "status"]);

    // `None` leaves status and attention as they are.
    db.store.update(touch(&fence, T0 + 20)).await.unwrap();
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!((tx.status, tx.updated_at_ms), (Status::Aborting, T0 + 20));
    assert!(tx.attention.is_some());
}

pub async fn update_with_a_stale_epoch_or_another_owner_is_fenced_and_changes_nothing(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    let before = db.store.get("g1").await.unwrap();
    let stale = Fence {
        epoch: 0,
        ..fence.clone()
    };
    let stranger = Fence {
        owner: "coord-b".into(),
        ..fence.clone()
    };
    for fence in [stale, stranger] {
        let write = Update {
            status: Some(Status::Committed),
            events: vec![event(T0 + 1, "status", None, "committed")],
            ..touch(&fence, T0 + 1)
        };
        assert!(matches!(
            db.store.update(write).await,
            Err(StoreError::Fenced)
        ));
    }
    assert_eq!(db.store.get("g1").await.unwrap(), before);
    assert_eq!(db.store.events("g1").await.unwrap().len(), 1);
}

pub async fn set_attention_flags_and_logs_under_the_fence_only(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    let stale = Fence {
        epoch: 0,
        ..fence.clone()
    };
    assert!(matches!(
        db.store.set_attention(&stale, "stale", T0 + 1).await,
        Err(StoreError::Fenced)
    ));
    let missing = Fence {
        gid: "nowhere".into(),
        ..fence.clone()
    };
    assert!(matches!(
        db.store.set_attention(&missing, "gone", T0 + 1).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(db.store.get("g1").await.unwrap().unwrap().attention, None);

    db.store
        .set_attention(&fence, "the write keeps failing", T0 + 2)
        .await
        .unwrap();
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.attention.as_deref(), Some("the write keeps failing"));
    assert_eq!((tx.status, tx.updated_at_ms), (Status::Running, T0 + 2));
    let last = db.store.events("g1").await.unwrap().pop().unwrap();
    assert_eq!(
        last,
        event(T0 + 2, "attention", None, "the write keeps failing")
    );
}

pub async fn update_of_a_missing_transaction_is_not_found(db: TestDb) {
    let fence = Fence {
        gid: "nowhere".into(),
        owner: "coord-a".into(),
        epoch: 1,
    };
    assert!(matches!(
        db.store.update(touch(&fence, T0)).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn update_expecting_another_branch_count_is_a_conflict_and_changes_nothing(db: TestDb) {
    let fence = create(&*db.store, tcc("g1", "coord-a", T0)).await;
    db.store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    let before = db.store.get("g1").await.unwrap();
    // A decision taken without the branch registered meanwhile.
    let decision = Update {
        status: Some(Status::Committing),
        expect_branch_count: Some(0),
        ..touch(&fence, T0 + 2)
    };
    assert!(matches!(
        db.store.update(decision.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(db.store.get("g1").await.unwrap(), before);
    let decision = Update {
        expect_branch_count: Some(1),
        ..decision
    };
    db.store.update(decision).await.unwrap();
    assert_eq!(
        db.store.get("g1").await.unwrap().unwrap().status,
        Status::Committing
    );
}

pub async fn update_naming_an_unknown_branch_changes_nothing_at_all(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    let before = db.store.get("g1").await.unwrap();
    let update = Update {
        status: Some(Status::Committed),
        branches: vec![
            branch_update(0, BranchStatus::Succeeded, 1, Some(200)),
            branch_update(5, BranchStatus::Succeeded, 1, Some(200)),
        ],
        events: vec![event(T0 + 1, "status", None, "committed")],
        ..touch(&fence, T0 + 1)
    };
    match db.store.update(update).await {
        Err(StoreError::Conflict(why)) => {
            assert_eq!(why.to_string(), "transaction `g1` has no branch at index 5");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        db.store.get("g1").await.unwrap(),
        before,
        "the status and branch 0 were rolled back"
    );
    assert_eq!(db.store.events("g1").await.unwrap().len(), 1);
}

/// On SQLite concurrent writes share one commit; each must still get its
/// own answer.
pub async fn a_refused_write_does_not_fail_the_writes_committed_with_it(db: TestDb) {
    let mut fences = Vec::new();
    for i in 0..20 {
        fences.push(create(&*db.store, saga(&format!("g{i:02}"), "coord-a", T0, 1)).await);
    }
    let writes = fences.iter().flat_map(|fence| {
        let good = Update {
            status: Some(Status::Committed),
            ..touch(fence, T0 + 1)
        };
        let stale = Update {
            status: Some(Status::Aborting),
            ..touch(
                &Fence {
                    epoch: 7,
                    ..fence.clone()
                },
                T0 + 1,
            )
        };
        [(true, good), (false, stale)]
    });
    let tasks: Vec<_> = writes
        .map(|(good, update)| {
            let store = Arc::clone(&db.store);
            tokio::spawn(async move { (good, store.update(update).await) })
        })
        .collect();
    for task in tasks {
        match task.await.unwrap() {
            (true, result) => result.expect("a valid write succeeds"),
            (false, result) => assert!(matches!(result, Err(StoreError::Fenced)), "{result:?}"),
        }
    }
    for fence in &fences {
        assert_eq!(
            db.store.get(&fence.gid).await.unwrap().unwrap().status,
            Status::Committed
        );
    }
}

pub async fn events_come_back_in_the_order_they_were_written(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    // Another transaction's history interleaves in the table.
    let other = create(&*db.store, saga("g2", "coord-a", T0, 1)).await;
    let mut expected = vec!["registered".to_owned()];
    for round in 0..10 {
        // Later entries carry earlier times: order is write order, not time.
        let at = T0 + 100 - round;
        let kinds = [format!("first-{round}"), format!("second-{round}")];
        let update = Update {
            events: kinds.iter().map(|k| event(at, k, None, "x")).collect(),
            ..touch(&fence, at)
        };
        db.store.update(update).await.unwrap();
        db.store
            .update(Update {
                events: vec![event(at, "noise", None, "x")],
                ..touch(&other, at)
            })
            .await
            .unwrap();
        expected.extend(kinds);
    }
    let kinds: Vec<String> = db
        .store
        .events("g1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, expected);
}

pub async fn missing_transaction_reads_as_none_and_has_no_events(db: TestDb) {
    db.store.ping().await.expect("the database answers");
    assert_eq!(db.store.get("nowhere").await.unwrap(), None);
    assert!(db.store.events("nowhere").await.unwrap().is_empty());
}

pub async fn acknowledged_writes_survive_reopening_the_store(mut db: TestDb) {
    let fence = create(&*db.store, tcc("g1", "coord-a", T0)).await;
    db.store
        .register_branch("g1", spec(Mode::Tcc, "a"), T0 + 1, None)
        .await
        .unwrap();
    let decision = Update {
        status: Some(Status::Committing),
        expect_branch_count: Some(1),
        branches: vec![branch_update(0, BranchStatus::Committing, 1, None)],
        events: vec![event(T0 + 2, "status", None, "committing")],
        ..touch(&fence, T0 + 2)
    };
    db.store.update(decision).await.unwrap();
    let before = db.store.get("g1").await.unwrap().unwrap();
    let history = db.store.events("g1").await.unwrap();

    db.reopen().await;

    assert_eq!(db.store.get("g1").await.unwrap().unwrap(), before);
    assert_eq!(db.store.events("g1").await.unwrap(), history);
    // The fence still holds after a restart: the log, not memory, owns it.
    db.store.update(touch(&fence, T0 + 3)).await.unwrap();
}
