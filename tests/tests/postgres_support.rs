//! Tests of `dtx_tests::postgres`: the dedicated and the shared PostgreSQL
//! servers really run, with the settings dtx needs (2PC on, fsync on), and
//! the dedicated one survives a stop, a kill and a pause, and is removed
//! when dropped.
//!
//! They need Docker and the `dtx-postgres:15` image
//! (`bash tests/images/build-images.sh`); without them they fail, loudly.

use std::time::Duration;

use dtx_tests::postgres::{PostgresServer, fresh_database};
use sqlx::{Connection, PgConnection, Row};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn show(connection: &mut PgConnection, setting: &'static str) -> String {
    let sql = match setting {
        "max_prepared_transactions" => "SHOW max_prepared_transactions",
        "fsync" => "SHOW fsync",
        other => panic!("no SHOW statement for {other}"),
    };
    sqlx::query(sql)
        .fetch_one(connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn dedicated_server_has_2pc_and_fsync_and_survives_restarts() {
    let server = PostgresServer::start()
        .await
        .expect("start a dedicated PostgreSQL server");
    let url = server.url();
    assert_eq!(
        url,
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/postgres",
            server.port()
        )
    );

    let mut connection = connect(&url).await;
    let prepared: i64 = show(&mut connection, "max_prepared_transactions")
        .await
        .parse()
        .expect("max_prepared_transactions is a number");
    assert!(
        prepared > 0,
        "2PC needs max_prepared_transactions > 0, got {prepared}"
    );
    assert_eq!(show(&mut connection, "fsync").await, "on");

    // Something durable, to check after each restart.
    sqlx::query("CREATE TABLE survivor (id int PRIMARY KEY)")
        .execute(&mut connection)
        .await
        .expect("create table");
    sqlx::query("INSERT INTO survivor VALUES (1)")
        .execute(&mut connection)
        .await
        .expect("insert");
    // A prepared transaction must survive a crash too (that is what 2PC is).
    sqlx::query("BEGIN")
        .execute(&mut connection)
        .await
        .expect("begin");
    sqlx::query("INSERT INTO survivor VALUES (2)")
        .execute(&mut connection)
        .await
        .expect("insert 2");
    sqlx::query("PREPARE TRANSACTION 'dtx-test-gid'")
        .execute(&mut connection)
        .await
        .expect("prepare transaction");

    // A clean stop, then a crash: same URL, same data, every time. The stop
    // must be PostgreSQL's fast shutdown, which does not wait for the still
    // open connection (a smart one would, until docker's 30 s kill).
    let stopping = std::time::Instant::now();
    server.stop().await.expect("stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stop took {:?}: not a fast shutdown",
        stopping.elapsed()
    );
    drop(connection);
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "a stopped server must refuse connections"
    );
    server.start_again().await.expect("start again after stop");
    server.kill().await.expect("kill");
    server.start_again().await.expect("start again after kill");
    assert_eq!(server.url(), url, "the URL must not change across restarts");

    let mut connection = connect(&url).await;
    let prepared: i64 =
        sqlx::query("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'dtx-test-gid'")
            .fetch_one(&mut connection)
            .await
            .expect("list prepared transactions")
            .get(0);
    assert_eq!(prepared, 1, "the prepared transaction must survive a crash");
    sqlx::query("COMMIT PREPARED 'dtx-test-gid'")
        .execute(&mut connection)
        .await
        .expect("commit prepared");
    let rows: i64 = sqlx::query("SELECT count(*) FROM survivor")
        .fetch_one(&mut connection)
        .await
        .expect("count rows")
        .get(0);
    assert_eq!(rows, 2);

    // Paused: the connection stays open but nothing answers.
    server.pause().await.expect("pause");
    let stalled = tokio::time::timeout(
        Duration::from_millis(500),
        sqlx::query("SELECT 1").execute(&mut connection),
    )
    .await;
    assert!(stalled.is_err(), "a paused server must not answer");
    server.unpause().await.expect("unpause");
    // The query above was cancelled half-way, so this connection's state is
    // unknown: check with a new one.
    drop(connection);
    let mut connection = connect(&url).await;
    sqlx::query("SELECT 1")
        .execute(&mut connection)
        .await
        .expect("query after unpause");

    // Dropping the server removes its container, even after a kill and a
    // restart.
    drop(connection);
    let name = server.container_name().to_owned();
    drop(server);
    let docker = bollard::Docker::connect_with_defaults().expect("a Docker client");
    let gone = docker.inspect_container(&name, None).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        ),
        "container {name} must be removed on drop: {gone:?}"
    );
}

#[tokio::test]
async fn concurrent_fresh_databases_are_distinct_and_work() {
    let (first, second) = tokio::join!(fresh_database(), fresh_database());
    let first = first.expect("first fresh database");
    let second = second.expect("second fresh database");
    assert_ne!(first, second, "every call must create a new database");

    for url in [&first, &second] {
        let mut connection = connect(url).await;
        let name: String = sqlx::query("SELECT current_database()")
            .fetch_one(&mut connection)
            .await
            .expect("current_database()")
            .get(0);
        assert!(
            url.ends_with(&format!("/{name}")),
            "{url} is database {name}"
        );
        let tables: i64 = sqlx::query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut connection)
        .await
        .expect("count tables")
        .get(0);
        assert_eq!(tables, 0, "a fresh database must be empty");
        sqlx::query("CREATE TABLE t (id int)")
            .execute(&mut connection)
            .await
            .expect("create a table in a fresh database");
        assert_eq!(show(&mut connection, "fsync").await, "on");
    }
}
