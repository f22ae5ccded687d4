//! One batch of creates or of updates as the one statement of
//! [`super::batch_sql`] that writes it: the writes as the batcher queues
//! them ([`NewRow`], [`UpdateRow`], already encoded by their callers), and
//! their columns laid out as the parallel arrays the statements bind.
//!
//! A batch's answer is, per write, whether it was applied; why a write was
//! not is for its caller to find out (`super::batched_writes`), off the
//! batch's connection.

use std::collections::HashMap;

use dtx_protocol::BranchStatus;
use sqlx::postgres::PgPool;

use super::batch_sql::{CREATE_MANY, UPDATE_MANY};
use super::batcher::Batch;
use crate::store::{BranchUpdate, Event};

/// A transaction to insert, encoded for [`CREATE_MANY`].
pub(super) struct NewRow {
    pub(super) gid: String,
    pub(super) mode: &'static str,
    pub(super) status: &'static str,
    pub(super) request_hash: String,
    pub(super) options: String,
    pub(super) now_ms: i64,
    pub(super) deadline_at_ms: i64,
    pub(super) owner: String,
    /// The namespace of the token that registered it.
    pub(super) namespace: String,
    /// Lease length in milliseconds; the lease starts by the server's clock.
    pub(super) lease_ms: i64,
    /// Branch ids and specs (JSON), in index order.
    pub(super) branch_ids: Vec<String>,
    pub(super) specs: Vec<String>,
    /// The detail of the `registered` event.
    pub(super) registered: String,
}

impl Batch for NewRow {
    const WHAT: &'static str = "create";

    fn gid(&self) -> &str {
        &self.gid
    }

    async fn run(pool: &PgPool, batch: &[NewRow]) -> Result<Vec<bool>, sqlx::Error> {
        let n = batch.len();
        let branches: usize = batch.iter().map(|row| row.branch_ids.len()).sum();
        let mut cols = CreateColumns::with_capacity(n, branches);
        for row in batch {
            cols.push(row);
        }
        let inserted: Vec<(String,)> = sqlx::query_as(CREATE_MANY)
            .bind(cols.gid)
            .bind(cols.mode)
            .bind(cols.status)
            .bind(cols.request_hash)
            .bind(cols.options)
            .bind(cols.now_ms)
            .bind(cols.deadline_at_ms)
            .bind(cols.owner)
            .bind(cols.lease_ms)
            .bind(cols.branch_count)
            .bind(cols.registered)
            .bind(cols.branch_gid)
            .bind(cols.branch_index)
            .bind(cols.branch_id)
            .bind(cols.spec)
            .bind(BranchStatus::Pending.as_str())
            .bind("registered")
            .bind(cols.namespace)
            .fetch_all(pool)
            .await?;
        let mut applied = vec![false; n];
        if inserted.len() == n {
            // The common case: every gid was new.
            applied.fill(true);
        } else if !inserted.is_empty() {
            // A batch holds each gid once, so a gid names one write.
            let position: HashMap<&str, usize> = batch
                .iter()
                .enumerate()
                .map(|(i, row)| (row.gid.as_str(), i))
                .collect();
            for (gid,) in &inserted {
                if let Some(&i) = position.get(gid.as_str()) {
                    applied[i] = true;
                }
            }
        }
        Ok(applied)
    }
}

/// A batch of [`NewRow`]s as [`CREATE_MANY`]'s parameters.
struct CreateColumns<'a> {
    gid: Vec<&'a str>,
    mode: Vec<&'a str>,
    status: Vec<&'a str>,
    request_hash: Vec<&'a str>,
    options: Vec<&'a str>,
    now_ms: Vec<i64>,
    deadline_at_ms: Vec<i64>,
    owner: Vec<&'a str>,
    namespace: Vec<&'a str>,
    lease_ms: Vec<i64>,
    branch_count: Vec<i64>,
    registered: Vec<&'a str>,
    branch_gid: Vec<&'a str>,
    branch_index: Vec<i64>,
    branch_id: Vec<&'a str>,
    spec: Vec<&'a str>,
}

impl<'a> CreateColumns<'a> {
    fn with_capacity(n: usize, branches: usize) -> Self {
        CreateColumns {
            gid: Vec::with_capacity(n),
            mode: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            request_hash: Vec::with_capacity(n),
            options: Vec::with_capacity(n),
            now_ms: Vec::with_capacity(n),
            deadline_at_ms: Vec::with_capacity(n),
            owner: Vec::with_capacity(n),
            namespace: Vec::with_capacity(n),
            lease_ms: Vec::with_capacity(n),
            branch_count: Vec::with_capacity(n),
            registered: Vec::with_capacity(n),
            branch_gid: Vec::with_capacity(branches),
            branch_index: Vec::with_capacity(branches),
            branch_id: Vec::with_capacity(branches),
            spec: Vec::with_capacity(branches),
        }
    }

    fn push(&mut self, row: &'a NewRow) {
        self.gid.push(&row.gid);
        self.mode.push(row.mode);
        self.status.push(row.status);
        self.request_hash.push(&row.request_hash);
        self.options.push(&row.options);
        self.now_ms.push(row.now_ms);
        self.deadline_at_ms.push(row.deadline_at_ms);
        self.owner.push(&row.owner);
        self.namespace.push(&row.namespace);
        self.lease_ms.push(row.lease_ms);
        // Both counts fit: the caller checked the branch count fits an i64.
        self.branch_count.push(row.branch_ids.len() as i64);
        self.registered.push(&row.registered);
        for (index, (id, spec)) in row.branch_ids.iter().zip(&row.specs).enumerate() {
            self.branch_gid.push(&row.gid);
            self.branch_index.push(index as i64);
            self.branch_id.push(id);
            self.spec.push(spec);
        }
    }
}

/// A fenced write, encoded for [`UPDATE_MANY`].
pub(super) struct UpdateRow {
    pub(super) gid: String,
    pub(super) owner: String,
    pub(super) epoch: i64,
    pub(super) status: Option<&'static str>,
    pub(super) attention: Option<String>,
    pub(super) now_ms: i64,
    pub(super) expect_branch_count: Option<i64>,
    pub(super) branches: Branches,
    pub(super) events: Vec<Event>,
}

impl Batch for UpdateRow {
    const WHAT: &'static str = "update";

    fn gid(&self) -> &str {
        &self.gid
    }

    async fn run(pool: &PgPool, batch: &[UpdateRow]) -> Result<Vec<bool>, sqlx::Error> {
        let n = batch.len();
        let changes: usize = batch.iter().map(|row| row.branches.index.len()).sum();
        let events: usize = batch.iter().map(|row| row.events.len()).sum();
        let mut cols = UpdateColumns::with_capacity(n, changes, events);
        for (pos, row) in (1_i64..).zip(batch) {
            cols.push(pos, row);
        }
        let updated: Vec<(i64,)> = sqlx::query_as(UPDATE_MANY)
            .bind(cols.gid)
            .bind(cols.owner)
            .bind(cols.epoch)
            .bind(cols.status)
            .bind(cols.attention)
            .bind(cols.now_ms)
            .bind(cols.branch_count)
            .bind(cols.change_pos)
            .bind(cols.change_gid)
            .bind(cols.change_index)
            .bind(cols.change_status)
            .bind(cols.change_attempts)
            .bind(cols.change_http_status)
            .bind(cols.change_error)
            .bind(cols.event_pos)
            .bind(cols.event_gid)
            .bind(cols.event_at_ms)
            .bind(cols.event_kind)
            .bind(cols.event_branch_id)
            .bind(cols.event_detail)
            .bind(cols.change_failing_since)
            .bind(cols.change_refusal)
            .fetch_all(pool)
            .await?;
        let mut applied = vec![false; n];
        for (pos,) in updated {
            // Positions count from 1 (the statement's ordinality).
            if let Some(slot) = usize::try_from(pos - 1)
                .ok()
                .and_then(|i| applied.get_mut(i))
            {
                *slot = true;
            }
        }
        Ok(applied)
    }
}

/// A batch of [`UpdateRow`]s as [`UPDATE_MANY`]'s parameters; each branch
/// change and each event carries the position and the gid of its write.
struct UpdateColumns<'a> {
    gid: Vec<&'a str>,
    owner: Vec<&'a str>,
    epoch: Vec<i64>,
    status: Vec<Option<&'a str>>,
    attention: Vec<Option<&'a str>>,
    now_ms: Vec<i64>,
    branch_count: Vec<Option<i64>>,
    change_pos: Vec<i64>,
    change_gid: Vec<&'a str>,
    change_index: Vec<i64>,
    change_status: Vec<&'static str>,
    change_attempts: Vec<i64>,
    change_http_status: Vec<Option<i64>>,
    change_error: Vec<Option<&'a str>>,
    change_failing_since: Vec<Option<i64>>,
    change_refusal: Vec<Option<&'a str>>,
    event_pos: Vec<i64>,
    event_gid: Vec<&'a str>,
    event_at_ms: Vec<i64>,
    event_kind: Vec<&'a str>,
    event_branch_id: Vec<Option<&'a str>>,
    event_detail: Vec<&'a str>,
}

impl<'a> UpdateColumns<'a> {
    fn with_capacity(n: usize, changes: usize, events: usize) -> Self {
        UpdateColumns {
            gid: Vec::with_capacity(n),
            owner: Vec::with_capacity(n),
            epoch: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            attention: Vec::with_capacity(n),
            now_ms: Vec::with_capacity(n),
            branch_count: Vec::with_capacity(n),
            change_pos: Vec::with_capacity(changes),
            change_gid: Vec::with_capacity(changes),
            change_index: Vec::with_capacity(changes),
            change_status: Vec::with_capacity(changes),
            change_attempts: Vec::with_capacity(changes),
            change_http_status: Vec::with_capacity(changes),
            change_error: Vec::with_capacity(changes),
            change_failing_since: Vec::with_capacity(changes),
            change_refusal: Vec::with_capacity(changes),
            event_pos: Vec::with_capacity(events),
            event_gid: Vec::with_capacity(events),
            event_at_ms: Vec::with_capacity(events),
            event_kind: Vec::with_capacity(events),
            event_branch_id: Vec::with_capacity(events),
            event_detail: Vec::with_capacity(events),
        }
    }

    fn push(&mut self, pos: i64, row: &'a UpdateRow) {
        self.gid.push(&row.gid);
        self.owner.push(&row.owner);
        self.epoch.push(row.epoch);
        self.status.push(row.status);
        self.attention.push(row.attention.as_deref());
        self.now_ms.push(row.now_ms);
        self.branch_count.push(row.expect_branch_count);
        let b = &row.branches;
        for i in 0..b.index.len() {
            self.change_pos.push(pos);
            self.change_gid.push(&row.gid);
            self.change_index.push(b.index[i]);
            self.change_status.push(b.status[i]);
            self.change_attempts.push(b.attempts[i]);
            self.change_http_status.push(b.http_status[i]);
            self.change_error.push(b.error[i].as_deref());
            self.change_failing_since.push(b.failing_since[i]);
            self.change_refusal.push(b.refusal[i].as_deref());
        }
        for event in &row.events {
            self.event_pos.push(pos);
            self.event_gid.push(&row.gid);
            self.event_at_ms.push(event.at_ms);
            self.event_kind.push(&event.kind);
            self.event_branch_id.push(event.branch_id.as_deref());
            self.event_detail.push(&event.detail);
        }
    }
}

/// An update's branch changes as parallel arrays.
pub(super) struct Branches {
    pub(super) index: Vec<i64>,
    status: Vec<&'static str>,
    attempts: Vec<i64>,
    http_status: Vec<Option<i64>>,
    error: Vec<Option<String>>,
    failing_since: Vec<Option<i64>>,
    refusal: Vec<Option<String>>,
}

impl Branches {
    /// One entry per index, in the order the indices first appear, with the
    /// values of their last change. Changes applied one after the other (as
    /// the store did before, and SQLite does) let the last change of a
    /// branch win; one `UPDATE ... FROM` with two matches for a row would
    /// apply either.
    pub(super) fn of(changes: Vec<BranchUpdate>) -> Self {
        let mut position = HashMap::with_capacity(changes.len());
        let mut last: Vec<BranchUpdate> = Vec::with_capacity(changes.len());
        for change in changes {
            match position.get(&change.index) {
                Some(&at) => last[at] = change,
                None => {
                    position.insert(change.index, last.len());
                    last.push(change);
                }
            }
        }
        let n = last.len();
        let mut out = Branches {
            index: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            http_status: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            failing_since: Vec::with_capacity(n),
            refusal: Vec::with_capacity(n),
        };
        for change in last {
            out.index.push(i64::from(change.index));
            out.status.push(change.status.as_str());
            out.attempts.push(i64::from(change.attempts));
            out.http_status.push(change.last_http_status.map(i64::from));
            out.error.push(change.last_error);
            out.failing_since.push(change.failing_since_ms);
            out.refusal.push(change.refusal);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u32, attempts: u32) -> BranchUpdate {
        BranchUpdate {
            index,
            status: BranchStatus::Succeeded,
            attempts,
            last_http_status: None,
            last_error: None,
            refusal: None,
            failing_since_ms: None,
        }
    }

    #[test]
    fn the_last_change_of_a_branch_wins_at_its_first_place() {
        let b = Branches::of(vec![change(3, 1), change(0, 1), change(3, 2)]);
        assert_eq!(b.index, [3, 0]);
        assert_eq!(b.attempts, [2, 1]);
    }
}
