//! Calls waiting on a row that a prepared 2PC branch holds must never take
//! from that branch's phase two the database connection it needs to let
//! the row go.
//!
//! Seen in the fault-injection harness (issue 16, 16 clients,
//! `kill-participant`): on PostgreSQL a prepared branch keeps the lock on
//! its product row until `COMMIT PREPARED`. While one prepared sale waited
//! for its decision, every other call moving that product waited on the
//! row, each holding one of the pool's ten connections. The coordinator
//! gave up on each call after its request timeout; that drops the handler
//! but not the statement, and sqlx takes the connection back only when the
//! statement ends. The pool emptied for good, the commit that would have
//! released the row never got a connection, and the inventory stopped
//! answering (`GET /products` timed out for minutes).
//!
//! The test replays it on the shared test server: one branch prepared,
//! then twice as many prepares of the same row as the pool has connections,
//! each given up by its caller the way the coordinator does; then the first
//! branch's commit, asked again until it is answered (the coordinator
//! retries phase two until it succeeds).

mod support;

use dtx_sdk::db::Db;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;
use support::{INITIAL, Inventory, branch_call};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long a caller waits for an answer before it gives the call up: the
/// order service's request timeout for the calls the coordinator makes.
const CALLER_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a call is asked again before the test gives up on the
/// service: a patience bound (about half a minute of caller timeouts),
/// not a timing under test; a service that works answers at once.
const ATTEMPTS: usize = 15;

/// The answer of one branch call, or `None` when the caller gave up on it
/// after [`CALLER_TIMEOUT`] (the request, and the handler serving it, are
/// dropped, as hyper drops them when the coordinator closes the connection).
async fn call_within(router: axum::Router, path: &str, gid: &str, op: &str) -> Option<u16> {
    let call = router.oneshot(branch_call(path, gid, op, 1));
    let response = tokio::time::timeout(CALLER_TIMEOUT, call).await.ok()?;
    Some(response.expect("served").status().as_u16())
}

/// Asks until the call is answered `200` or `409`, as the coordinator
/// retries an unknown answer; `None` if [`ATTEMPTS`] tries gave neither.
async fn until_answered(inv: &Inventory, path: &str, gid: &str, op: &str) -> Option<u16> {
    for _ in 0..ATTEMPTS {
        // Anything else (503: a lock wait given up; 500; 425; no answer in
        // time) is asked again.
        if let Some(status @ (200 | 409)) = call_within(inv.router(), path, gid, op).await {
            return Some(status);
        }
    }
    None
}

fn pool(inv: &Inventory) -> &PgPool {
    match inv.state.db.db() {
        Db::Postgres(pool) => pool,
        _ => panic!("a PostgreSQL inventory"),
    }
}

/// A connection of the test's own, outside the service's pool (which may
/// be the thing that is stuck).
async fn side_connection(inv: &Inventory) -> PgConnection {
    PgConnection::connect_with(&pool(inv).connect_options())
        .await
        .expect("connect to the inventory's database")
}

/// The prepared transactions of the inventory's database.
async fn prepared(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
    )
    .fetch_all(conn)
    .await
    .expect("read pg_prepared_xacts")
}

/// What the database's sessions are doing, and who blocks them: the
/// evidence a failure prints (a prepared transaction blocking is reported
/// as pid 0 by `pg_blocking_pids`).
async fn sessions(conn: &mut PgConnection) -> String {
    let rows: Vec<(Option<String>, Option<String>, String, i64)> = sqlx::query_as(
        "SELECT state, wait_event_type || ':' || wait_event, \
                left(regexp_replace(query, '\\s+', ' ', 'g'), 70) || ' blocked by ' \
                    || pg_blocking_pids(pid)::text, \
                count(*) \
         FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         GROUP BY 1, 2, 3 ORDER BY 4 DESC",
    )
    .fetch_all(conn)
    .await
    .expect("read pg_stat_activity");
    rows.iter()
        .map(|(state, wait, query, n)| format!("{n} × {state:?} waiting on {wait:?}: {query}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rolls back what is left prepared, so that nothing outlives the test on
/// the shared server (and the sessions stuck behind it finish).
async fn roll_back_left_over(conn: &mut PgConnection) {
    for xid in prepared(conn).await {
        let sql = format!("ROLLBACK PREPARED '{xid}'");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .expect("roll back a left-over prepared transaction");
    }
}

#[tokio::test]
async fn prepares_waiting_on_a_prepared_row_never_starve_its_commit() {
    let inv = Inventory::start_on_postgres(None).await;
    let mut side = side_connection(&inv).await;
    let pool_size = pool(&inv).options().get_max_connections() as usize;

    // The holder: a prepared sale of the apple row, its decision not sent yet.
    assert_eq!(
        inv.call("/2pc/prepare", "lock-waits-holder", "prepare", 1)
            .await,
        200
    );

    // More prepares of that row than the pool has connections, each given
    // up by its caller, as the coordinator gives up on a call.
    let waiters: Vec<String> = (0..2 * pool_size)
        .map(|i| format!("lock-waits-waiter-{i}"))
        .collect();
    let mut calls = JoinSet::new();
    for gid in &waiters {
        let (router, gid) = (inv.router(), gid.clone());
        calls.spawn(async move { call_within(router, "/2pc/prepare", &gid, "prepare").await });
    }
    while let Some(answer) = calls.join_next().await {
        let answer = answer.expect("the call's task");
        // The row is held: no waiter can have voted, yes or no.
        assert!(
            !matches!(answer, Some(200 | 409)),
            "a prepare voted although the row was held: {answer:?}"
        );
    }

    // The decision arrives afterwards; it must get through.
    let commit = until_answered(&inv, "/2pc/commit", "lock-waits-holder", "commit").await;
    if commit != Some(200) {
        let evidence = sessions(&mut side).await;
        roll_back_left_over(&mut side).await;
        panic!(
            "the holder's commit was never answered ({commit:?} after {ATTEMPTS} tries): the \
             connections are all taken by calls waiting on the row it holds.\n{evidence}"
        );
    }
    let reads = call_within_get(&inv).await;
    assert_eq!(
        reads,
        Some(200),
        "GET /products answers once the row is free"
    );

    // Every waiter, asked again as the coordinator would, now votes; the
    // yes votes are committed. Nothing stays prepared.
    let mut sold = 1;
    for gid in &waiters {
        let vote = until_answered(&inv, "/2pc/prepare", gid, "prepare").await;
        match vote {
            Some(200) => {
                let commit = until_answered(&inv, "/2pc/commit", gid, "commit").await;
                assert_eq!(commit, Some(200), "{gid}'s commit");
                sold += 1;
            }
            Some(409) => {
                assert_eq!(
                    until_answered(&inv, "/2pc/rollback", gid, "rollback").await,
                    Some(200),
                    "{gid}'s rollback"
                );
            }
            other => {
                roll_back_left_over(&mut side).await;
                panic!("{gid}'s prepare was never answered: {other:?}");
            }
        }
    }
    let left = prepared(&mut side).await;
    roll_back_left_over(&mut side).await;
    assert!(left.is_empty(), "left prepared: {left:?}");
    // Ten apples and more than ten buyers: all sold, one each, none twice.
    assert_eq!(sold, INITIAL);
    assert_eq!(inv.stock().await, (0, 0, INITIAL));
}

/// `GET /products` within [`CALLER_TIMEOUT`].
async fn call_within_get(inv: &Inventory) -> Option<u16> {
    let request = axum::http::Request::get("/products")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = tokio::time::timeout(CALLER_TIMEOUT, inv.router().oneshot(request))
        .await
        .ok()?;
    Some(response.expect("served").status().as_u16())
}
