//! Cases on free text: whatever a participant answered, the store keeps
//! what every backend accepts and reads back the same text on each; and a
//! branch's refusal, the participant's reason, kept beside its last error.

use dtx_coordinator::store::text::STORED_TEXT_MAX_CHARS;
use dtx_coordinator::store::{BranchUpdate, Event, Update};
use dtx_protocol::{BranchStatus, Status};

use super::{T0, TestDb, create, saga, touch};

pub async fn update_stores_text_with_control_characters_replaced_on_every_backend(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    // PostgreSQL refused the NUL ("invalid byte sequence"), so every write
    // of a transaction whose participant answered one failed.
    let body = "HTTP 500: boom\0 at\r\nline 2\tend\u{1b}[0m";
    let cleaned = "HTTP 500: boom\u{FFFD} at\u{FFFD}\nline 2\tend\u{FFFD}[0m";
    let update = Update {
        status: Some(Status::Running),
        attention: Some(format!("branch `b0` keeps failing (last: {body})")),
        branches: vec![BranchUpdate {
            index: 0,
            status: BranchStatus::Pending,
            attempts: 1,
            last_http_status: Some(500),
            last_error: Some(body.to_owned()),
            refusal: None,
            failing_since_ms: None,
        }],
        events: vec![Event {
            at_ms: T0 + 1,
            kind: "call_failed".into(),
            branch_id: Some("b0".into()),
            detail: format!("action failed: {body}"),
        }],
        ..touch(&fence, T0 + 1)
    };
    db.store.update(update).await.expect("the write succeeds");

    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.branches[0].last_error.as_deref(), Some(cleaned));
    assert_eq!(
        tx.attention.as_deref(),
        Some(format!("branch `b0` keeps failing (last: {cleaned})").as_str())
    );
    let history = db.store.events("g1").await.unwrap();
    let failed = history.iter().find(|e| e.kind == "call_failed").unwrap();
    assert_eq!(failed.detail, format!("action failed: {cleaned}"));

    // The transaction is still writable, as any other.
    let done = Update {
        status: Some(Status::Committed),
        ..touch(&fence, T0 + 2)
    };
    db.store.update(done).await.unwrap();
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(tx.status, Status::Committed);
}

pub async fn update_cuts_overlong_text_by_characters(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 1)).await;
    let long = "é".repeat(STORED_TEXT_MAX_CHARS + 10);
    let update = Update {
        events: vec![Event {
            at_ms: T0 + 1,
            kind: "call_failed".into(),
            branch_id: None,
            detail: long.clone(),
        }],
        ..touch(&fence, T0 + 1)
    };
    db.store.update(update).await.unwrap();
    let history = db.store.events("g1").await.unwrap();
    let detail = &history.last().unwrap().detail;
    assert_eq!(detail.chars().count(), STORED_TEXT_MAX_CHARS);
    assert!(long.starts_with(detail.as_str()));
}

pub async fn a_refusal_is_stored_cleaned_beside_the_last_error_and_written_like_it(db: TestDb) {
    let fence = create(&*db.store, saga("g1", "coord-a", T0, 2)).await;
    let change = |attempts: u32, last_error: Option<&str>, refusal: Option<&str>| BranchUpdate {
        index: 1,
        status: BranchStatus::Refused,
        attempts,
        last_http_status: Some(409),
        last_error: last_error.map(str::to_owned),
        refusal: refusal.map(str::to_owned),
        failing_since_ms: None,
    };
    let write = |at: i64, branch: BranchUpdate| Update {
        branches: vec![branch],
        ..touch(&fence, at)
    };

    // The participant's reason, with a NUL that PostgreSQL would refuse.
    let reason = "out of stock: sku\0 42";
    let cleaned = "out of stock: sku\u{FFFD} 42";
    let refused = write(T0 + 1, change(1, None, Some(reason)));
    db.store.update(refused).await.expect("the write succeeds");
    let tx = db.store.get("g1").await.unwrap().unwrap();
    let branch = &tx.branches[1];
    assert_eq!(branch.refusal.as_deref(), Some(cleaned));
    assert_eq!(branch.last_error, None);
    assert_eq!(tx.branches[0].refusal, None, "another branch keeps none");
    // The transaction view shows it right after the last error.
    let view = serde_json::to_string(branch).unwrap();
    assert!(
        view.contains(&format!(r#""last_error":null,"refusal":"{cleaned}""#)),
        "{view}"
    );

    // A later write of the branch writes both as given, the refusal bounded
    // like the last error.
    let long = "é".repeat(STORED_TEXT_MAX_CHARS + 10);
    let failed = write(T0 + 2, change(2, Some("HTTP 500"), Some(&long)));
    db.store.update(failed).await.unwrap();
    let tx = db.store.get("g1").await.unwrap().unwrap();
    let branch = &tx.branches[1];
    assert_eq!(branch.last_error.as_deref(), Some("HTTP 500"));
    let kept = branch.refusal.as_deref().expect("a refusal");
    assert_eq!(kept.chars().count(), STORED_TEXT_MAX_CHARS);
    assert!(long.starts_with(kept));

    // And clears it, as it clears the last error.
    db.store
        .update(write(T0 + 3, change(3, None, None)))
        .await
        .unwrap();
    let tx = db.store.get("g1").await.unwrap().unwrap();
    assert_eq!(
        (
            tx.branches[1].last_error.as_deref(),
            tx.branches[1].refusal.as_deref()
        ),
        (None, None)
    );
}
