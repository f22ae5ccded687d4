//! The promise of synchronous replication, tested exactly: every commit
//! acknowledged to a client before a `kill -9` of the primary is on the
//! primary that serves after the failover.
//!
//! Writers insert rows one commit at a time through the proxy, and note
//! each row whose commit returned. Once a burst of commits has been
//! acknowledged, while the writers still write, the primary is killed. Each
//! writer's last commit is then in doubt (sent, never answered): it may or
//! may not have made it, and either is allowed. Every acknowledged row must
//! be there after the failover. The run also records who the synchronous
//! standby was just before the kill, because the promise holds only while
//! there is one (the primary goes on alone without it, see the module
//! above), and checks that it is the node that took over.
//!
//! What this cannot show is its own sensitivity: with asynchronous
//! replication on one machine a standby lags by microseconds, so the same
//! run would rarely lose a row. The guarantee comes from the commit waiting
//! for the standby, which the recorded synchronous standby shows was in
//! force.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Handover, PostgresHa};
use crate::error::TestSupportError;

/// Concurrent writers.
pub const WRITERS: i64 = 8;
/// Acknowledged commits before the kill.
const BURST: usize = 1000;
/// A commit that has not returned by then counts as in doubt.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the run saw.
#[derive(Debug, Clone)]
pub struct PromiseRun {
    /// Who was killed and who was the synchronous standby at that moment.
    pub handover: Handover,
    /// The node that held the leader key after the failover.
    pub new_primary: &'static str,
    /// From the kill until a write committed through the proxy again.
    pub failover: Duration,
    /// Rows whose commit returned before the kill broke the connection.
    pub acknowledged: BTreeSet<i64>,
    /// Rows whose commit was sent but never answered.
    pub in_doubt: BTreeSet<i64>,
    /// Every row read after the failover.
    pub present: BTreeSet<i64>,
}

impl PromiseRun {
    /// Acknowledged rows the new primary does not have: the promise broken.
    pub fn lost(&self) -> Vec<i64> {
        self.acknowledged
            .difference(&self.present)
            .copied()
            .collect()
    }

    /// Rows present that no writer ever sent: a broken run, not a failover.
    pub fn unexplained(&self) -> Vec<i64> {
        self.present
            .iter()
            .filter(|id| !self.acknowledged.contains(id) && !self.in_doubt.contains(id))
            .copied()
            .collect()
    }
}

/// What a writer learnt about one row.
enum Heard {
    Acknowledged(i64),
    InDoubt(i64),
}

/// Starts a replicated PostgreSQL of its own, writes, kills the primary
/// mid-burst and reads back; see the module's documentation.
pub async fn acknowledged_commits_survive_kill() -> Result<PromiseRun, TestSupportError> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let prefix = format!("dtx-h-sync-promise-{suffix}");
    // The proxy lives as long as this function.
    let (ha, _proxy) = PostgresHa::start(&format!("{prefix}-net"), &prefix).await?;
    let url = ha.url("postgres");
    let db_error = |what: &str| {
        let what = what.to_owned();
        move |e: sqlx::Error| TestSupportError::database(what, e)
    };
    let mut admin = PgConnection::connect(&url)
        .await
        .map_err(db_error("connect through the proxy"))?;
    sqlx::query("CREATE TABLE acked (id bigint PRIMARY KEY)")
        .execute(&mut admin)
        .await
        .map_err(db_error("create the table"))?;
    drop(admin);

    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let mut conn = PgConnection::connect(&url)
            .await
            .map_err(db_error("connect a writer"))?;
        let heard_tx = heard_tx.clone();
        writers.spawn(async move {
            // Ids never collide between writers.
            for id in (writer * 1_000_000)..((writer + 1) * 1_000_000) {
                let insert = sqlx::query("INSERT INTO acked (id) VALUES ($1)")
                    .bind(id)
                    .execute(&mut conn);
                match tokio::time::timeout(COMMIT_TIMEOUT, insert).await {
                    Ok(Ok(_)) => {
                        let _ = heard_tx.send(Heard::Acknowledged(id));
                    }
                    // The connection is broken (or the commit hangs): this
                    // row is in doubt, and this writer is done.
                    _ => {
                        let _ = heard_tx.send(Heard::InDoubt(id));
                        return;
                    }
                }
            }
        });
    }
    drop(heard_tx);

    let mut acknowledged = BTreeSet::new();
    let mut in_doubt = BTreeSet::new();
    while acknowledged.len() < BURST {
        match heard.recv().await {
            Some(Heard::Acknowledged(id)) => {
                acknowledged.insert(id);
            }
            Some(Heard::InDoubt(id)) => {
                return Err(TestSupportError::Service {
                    what: "a writer before the kill".into(),
                    why: format!("the commit of row {id} failed with the primary up"),
                });
            }
            None => unreachable!("the writers end only on a failed commit"),
        }
    }
    // The writers keep writing: the kill lands on commits in flight.
    let killed_at = Instant::now();
    let handover = ha.kill_primary().await?;
    let failover = ha.wait_serving(killed_at).await?;
    let new_primary = ha.primary().await?;
    // Every writer ends on its first failed commit; the proxy cut their
    // connections when it marked the dead node down.
    while writers.join_next().await.is_some() {}
    while let Some(one) = heard.recv().await {
        match one {
            Heard::Acknowledged(id) => acknowledged.insert(id),
            Heard::InDoubt(id) => in_doubt.insert(id),
        };
    }

    let mut reader = PgConnection::connect(&url)
        .await
        .map_err(db_error("connect after the failover"))?;
    let present: Vec<(i64,)> = sqlx::query_as("SELECT id FROM acked")
        .fetch_all(&mut reader)
        .await
        .map_err(db_error("read the rows back"))?;
    Ok(PromiseRun {
        handover,
        new_primary,
        failover,
        acknowledged,
        in_doubt,
        present: present.into_iter().map(|(id,)| id).collect(),
    })
}
