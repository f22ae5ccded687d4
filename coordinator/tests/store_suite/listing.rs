//! Cases on listing: order, pagination with the opaque cursor, filters.

use dtx_coordinator::store::{ListQuery, StoreError, Update};
use dtx_protocol::{Mode, Status};

use super::{T0, TestDb, create, saga, tcc, touch};

pub async fn list_pages_newest_first_without_duplicates_or_gaps(db: TestDb) {
    // 25 transactions, several created in the same millisecond, so that the
    // gid must break ties for the cursor to be exact.
    let mut expected = Vec::new();
    for i in 0..25_i64 {
        let gid = format!("g{:02}", (i * 7) % 25);
        create(&*db.store, saga(&gid, "coord-a", T0 + i / 4, 1)).await;
        expected.push((T0 + i / 4, gid));
    }
    expected.sort();
    expected.reverse();

    let mut listed = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let query = ListQuery {
            cursor: cursor.take(),
            limit: 7,
            ..ListQuery::default()
        };
        let page = db.store.list(query).await.unwrap();
        pages += 1;
        assert!(page.transactions.len() <= 7);
        for tx in &page.transactions {
            assert!(tx.branches.is_empty(), "listings carry no branches");
            listed.push((tx.created_at_ms, tx.gid.clone()));
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, expected);
    assert_eq!(pages, 4);

    // A page that ends exactly at the last transaction says so.
    let all = db
        .store
        .list(ListQuery {
            limit: 25,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((all.transactions.len(), all.next_cursor), (25, None));
}

pub async fn list_filters_by_status_mode_and_attention(db: TestDb) {
    let running = create(&*db.store, saga("saga-running", "coord-a", T0, 1)).await;
    let flagged = create(&*db.store, saga("saga-flagged", "coord-a", T0 + 1, 1)).await;
    create(&*db.store, tcc("tcc-open", "coord-a", T0 + 2)).await;
    db.store
        .update(Update {
            status: Some(Status::Aborting),
            attention: Some("compensation keeps failing".into()),
            ..touch(&flagged, T0 + 3)
        })
        .await
        .unwrap();
    db.store
        .update(Update {
            status: Some(Status::Committed),
            ..touch(&running, T0 + 3)
        })
        .await
        .unwrap();

    let gids = |query: ListQuery| {
        let store = db.store.clone();
        async move {
            let page = store.list(query).await.unwrap();
            page.transactions
                .into_iter()
                .map(|tx| tx.gid)
                .collect::<Vec<_>>()
        }
    };
    let all = ListQuery::default();
    assert_eq!(
        gids(all.clone()).await,
        ["tcc-open", "saga-flagged", "saga-running"]
    );
    let by_mode = ListQuery {
        mode: Some(Mode::Saga),
        ..all.clone()
    };
    assert_eq!(gids(by_mode).await, ["saga-flagged", "saga-running"]);
    let by_status = ListQuery {
        status: Some(Status::Committed),
        ..all.clone()
    };
    assert_eq!(gids(by_status).await, ["saga-running"]);
    let flagged_only = ListQuery {
        attention: Some(true),
        ..all.clone()
    };
    assert_eq!(gids(flagged_only).await, ["saga-flagged"]);
    let unflagged = ListQuery {
        attention: Some(false),
        ..all.clone()
    };
    assert_eq!(gids(unflagged).await, ["tcc-open", "saga-running"]);
    let nothing = ListQuery {
        mode: Some(Mode::Tcc),
        status: Some(Status::Aborting),
        ..all
    };
    assert!(gids(nothing).await.is_empty());
}

pub async fn list_refuses_a_cursor_it_did_not_make(db: TestDb) {
    let query = ListQuery {
        cursor: Some("not-a-cursor".into()),
        limit: 10,
        ..ListQuery::default()
    };
    assert!(matches!(
        db.store.list(query).await,
        Err(StoreError::InvalidInput(_))
    ));
}
