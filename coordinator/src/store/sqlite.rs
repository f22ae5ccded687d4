//! The SQLite backend: the embedded default, one file on one machine,
//! created on first start.
//!
//! # Durability and group commit
//!
//! An acknowledged write must survive `kill -9` and a power cut, so the
//! database runs in WAL mode with `synchronous = FULL`: every commit waits
//! for an fsync of the log. An fsync costs a fraction of a millisecond to
//! milliseconds, and SQLite lets only one connection write at a time, so a
//! commit per write would cap the whole coordinator at a few thousand writes
//! a second however many transactions it drives.
//!
//! Writes therefore go through ONE writer thread ([`writer`]) that owns the
//! only writing connection and commits whatever is queued in one
//! transaction, answering each caller only after that commit. Each write in
//! a batch runs inside a savepoint of its own: a write that is refused
//! (fenced out, a conflict) or fails rolls back to its savepoint and gets
//! its own error; the others in the batch are not affected. Only a failure
//! of the batch itself (cannot begin or commit, e.g. the disk is full) fails
//! every write in it, with `Unavailable`. The writes themselves, and the
//! statements only SQLite runs, are in [`writes`], run through
//! [`connection`]; the log's checkpoints run on a thread of their own
//! ([`checkpoint`]).
//!
//! Reads do not queue behind writes: they use a separate pool of read-only
//! `sqlx` connections, which WAL lets read a consistent snapshot while the
//! writer writes, and share their SQL and row decoding with PostgreSQL
//! (`store::shared::reads`).
//!
//! # Lease times
//!
//! One file on one machine: leases are timed by this process's clock
//! ([`crate::clock::now_ms`], which a jump of the system clock does not
//! move), read in the caller's task before the write is queued (so that
//! under tokio's paused time they follow the virtual clock).

mod checkpoint;
mod connection;
mod writer;
mod writes;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use dtx_protocol::BranchSpec;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

pub use writer::MAX_BATCH;

use super::shared::reads::sqlite as reads;
use super::shared::rows::{existing, gids_json};
use super::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update, lease_ms, not_renewed,
};
use crate::clock::now_ms;
use writer::{BUSY_TIMEOUT, Writer};
use writes::Inserted;

/// Read connections. WAL readers do not block each other or the writer.
const READERS: u32 = 4;

/// The durable transaction log in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file that `url` names (`sqlite:dtx.db`,
    /// `sqlite:///var/lib/dtx/dtx.db`), creating it when missing, applies the
    /// migrations in `migrations/sqlite`, and starts the writer thread.
    ///
    /// In-memory and unnamed databases are refused: the log must be durable,
    /// and the writer and the readers must see the same database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Other(format!(
                "`{url}` is an in-memory database; the transaction log must be a file: use sqlite:<path>"
            ).into()));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // An empty path would make SQLite use a private temporary file that
        // vanishes on close: as volatile as memory, and as wrong for a log.
        let path = options.get_filename().to_path_buf();
        if path.as_os_str().is_empty() {
            return Err(StoreError::Other(
                format!("`{url}` names no file: use sqlite:<path>").into(),
            ));
        }
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut conn)
            .await?;
        conn.close().await?;
        let writer = Writer::start(&path)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, readers })
    }

    /// Reads a transaction that a committed write just changed, for the
    /// writer's caller.
    async fn load_committed(&self, gid: &str) -> Result<TransactionRecord, StoreError> {
        let loaded = reads::load_pooled(&self.readers, gid).await?;
        loaded.map(|l| l.record).ok_or_else(|| {
            StoreError::Other(format!("transaction `{gid}` was written but cannot be read").into())
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        let request_hash = new.request_hash.clone();
        let gid = new.gid.clone();
        let lease_expires_at_ms = now_ms() + lease_ms(new.lease);
        match self
            .writer
            .write(move |c| writes::create(c, &new, lease_expires_at_ms))
            .await?
        {
            Inserted::New(fence) => Ok(Created::Inserted(fence)),
            Inserted::GidTaken => {
                // The batch that answered has committed, and with it any
                // earlier insert of this gid: the row is there to read.
                let loaded = reads::load_pooled(&self.readers, &gid).await?;
                existing(&gid, &request_hash, loaded)
            }
        }
    }

    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
        by: Option<&str>,
    ) -> Result<BranchRegistered, StoreError> {
        let gid = gid.to_owned();
        let by = by.map(str::to_owned);
        self.writer
            .write(move |c| writes::register_branch(c, &gid, &spec, now_ms, by.as_deref()))
            .await
    }

    async fn update(&self, update: Update) -> Result<(), StoreError> {
        let update = super::text::storable_update(update);
        self.writer.write(move |c| writes::update(c, &update)).await
    }

    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (fence, reason) = (fence.clone(), reason.to_owned());
        self.writer
            .write(move |c| writes::set_attention(c, &fence, &reason, now_ms))
            .await
    }

    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError> {
        reads::get(&self.readers, gid).await
    }

    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError> {
        reads::events(&self.readers, gid).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        reads::list(&self.readers, query).await
    }

    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let (gid, owner) = (gid.to_owned(), owner.to_owned());
        let (lease, now) = (lease_ms(lease), now_ms());
        let epoch = {
            let (gid, owner) = (gid.clone(), owner.clone());
            self.writer
                .write(move |c| writes::take_over(c, &gid, &owner, lease, now))
                .await?
        };
        let Some(epoch) = epoch else { return Ok(None) };
        // Read after the commit: whoever changes the row from here on holds
        // a newer epoch, and this fence keeps our stale writes out.
        let record = self.load_committed(&gid).await?;
        Ok(Some((Fence { gid, owner, epoch }, record)))
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let owner = owner.to_owned();
        let (lease, now) = (lease_ms(lease), now_ms());
        let claimed = {
            let owner = owner.clone();
            self.writer
                .write(move |c| writes::claim_expired(c, &owner, lease, limit, now))
                .await?
        };
        let mut out = Vec::with_capacity(claimed.len());
        for (gid, epoch) in claimed {
            let record = self.load_committed(&gid).await?;
            let owner = owner.clone();
            out.push((Fence { gid, owner, epoch }, record));
        }
        Ok(out)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_owned();
        let named = gids_json(gids)?;
        let (lease, now) = (lease_ms(lease), now_ms());
        let renewed = self
            .writer
            .write(move |c| writes::renew(c, &owner, &named, lease, now))
            .await?;
        Ok(not_renewed(gids, renewed))
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        let now = now_ms();
        self.writer
            .write(move |c| writes::release(c, &owner, now))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(&self.readers).await
    }
}
