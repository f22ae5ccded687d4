//! `create` and `update` on PostgreSQL: each is encoded here, in the
//! caller's task, and handed to its [`Batcher`], which sends it with the
//! other writes of its kind queued at the time as one statement of
//! [`super::batch_sql`] (one round trip and one commit for all). The rare
//! outcomes (the gid was taken, the update was refused) cost a second query
//! here that reads why, off the batch's connection.
//!
//! A statement whose answer is lost may or may not have committed; sqlx
//! reports the broken connection as an I/O error, which the store maps to
//! `Unavailable` for every write of the batch, and every caller retries:
//! create answers the retry with the existing transaction (the same
//! request), and a fenced update applies the same change again (its fence
//! still holds: only a takeover changes it, and then the retry is rightly
//! fenced out).

use dtx_protocol::Status;
use sqlx::postgres::PgPool;

use super::batch::{Branches, NewRow, UpdateRow};
use super::batch_sql::REFUSAL;
use super::batcher::Batcher;
use crate::store::shared::history;
use crate::store::shared::reads::postgres as reads;
use crate::store::shared::rows::{branch_index, existing, options_json, spec_json};
use crate::store::{Created, Fence, NewTransaction, StoreError, Update};

/// See [`Store::create`](crate::store::Store::create).
pub(super) async fn create(
    pool: &PgPool,
    batcher: &Batcher<NewRow>,
    new: NewTransaction,
) -> Result<Created, StoreError> {
    if i64::try_from(new.branches.len()).is_err() {
        return Err(StoreError::Other("too many branches".into()));
    }
    let row = NewRow {
        gid: new.gid.clone(),
        mode: new.mode.as_str(),
        status: new.status.as_str(),
        request_hash: new.request_hash.clone(),
        options: options_json(&new.options)?,
        now_ms: new.now_ms,
        deadline_at_ms: new.deadline_at_ms,
        owner: new.owner.clone(),
        namespace: new.namespace.clone(),
        lease_ms: crate::store::lease_ms(new.lease),
        branch_ids: new.branches.iter().map(|b| b.id.clone()).collect(),
        specs: new
            .branches
            .iter()
            .map(spec_json)
            .collect::<Result<_, _>>()?,
        registered: history::registered(new.mode, new.branches.len(), new.registered_by.as_deref()),
    };
    if !batcher.submit(row).await? {
        // The statement waited for a concurrent insert of the same gid to
        // end (ON CONFLICT), so the row it lost to is committed: read it.
        let loaded = reads::load_pooled(pool, &new.gid).await?;
        return existing(&new.gid, &new.request_hash, loaded);
    }
    Ok(Created::Inserted(Fence {
        gid: new.gid,
        owner: new.owner,
        epoch: 1,
    }))
}

/// See [`Store::update`](crate::store::Store::update).
pub(super) async fn update(
    pool: &PgPool,
    batcher: &Batcher<UpdateRow>,
    update: Update,
) -> Result<(), StoreError> {
    let Update {
        fence,
        now_ms,
        status,
        expect_branch_count,
        attention,
        branches,
        events,
    } = update;
    let branches = Branches::of(branches);
    // Kept for the refusal's explanation: the write itself goes to the batch.
    let named = branches.index.clone();
    let row = UpdateRow {
        gid: fence.gid.clone(),
        owner: fence.owner.clone(),
        epoch: fence.epoch,
        status: status.map(Status::as_str),
        attention,
        now_ms,
        expect_branch_count: expect_branch_count.map(i64::from),
        branches,
        events,
    };
    if batcher.submit(row).await? {
        return Ok(());
    }
    // Nothing changed; say why.
    let state: Option<(Option<String>, i64, i64, Option<i64>)> = sqlx::query_as(REFUSAL)
        .bind(&*fence.gid)
        .bind(&named)
        .fetch_optional(pool)
        .await?;
    let Some((owner, epoch, count, missing)) = state else {
        return Err(StoreError::NotFound);
    };
    let fence_holds = owner.as_deref() == Some(fence.owner.as_str()) && epoch == fence.epoch;
    let count_holds = expect_branch_count.is_none_or(|expected| i64::from(expected) == count);
    Err(match missing {
        // Refused for its last condition alone: a branch it names is not
        // there. A broken fence or a wrong count is reported first, as the
        // store always has (and SQLite does).
        Some(index) if fence_holds && count_holds => {
            // The index came from a `u32` of this update.
            let index = branch_index(index)?;
            StoreError::Conflict(history::no_such_branch(&fence.gid, index).into())
        }
        _ => history::refusal(&fence, expect_branch_count, owner.as_deref(), epoch, count),
    })
}
