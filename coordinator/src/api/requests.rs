//! Request bodies and query strings of the API, and the checks that turn a
//! request into something the engine accepts. A request that fails a check
//! changes nothing.

use super::problem::ApiError;
use crate::limits::Limits;
use crate::outbound::{OutboundPolicy, redacted_url};
use crate::store::{ListQuery, NewTransaction};
use dtx_protocol::signature::DecisionNonce;
use dtx_protocol::spec::{
    excerpt, is_id_char, saga_dependencies, validate_branch, validate_branches,
};
use dtx_protocol::{BranchSpec, Mode, Status};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `POST /v1/transactions`: the wire type both the API and the SDK's client
/// use.
pub use dtx_protocol::RegisterRequest;

/// `?wait_ms=` on calls that can wait for the outcome.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait up to this many milliseconds for a final status.
    pub wait_ms: Option<u64>,
}

/// `?nonce=` on the termination query: the asker's fresh random value,
/// which the signed answer echoes (`dtx_protocol::signature::NONCE_PARAM`;
/// read with [`DecisionQuery::nonce`]).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    /// 32 hex digits, when the asker verifies answers.
    nonce: Option<String>,
}

impl DecisionQuery {
    /// The nonce asked with, checked; `None` when the question has none.
    pub fn nonce(&self) -> Result<Option<DecisionNonce>, ApiError> {
        self.nonce
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::BadRequest(
                        "`nonce` must be 32 hex digits (16 random bytes)".to_owned(),
                    )
                })
            })
            .transpose()
    }
}

/// `GET /v1/transactions` filters.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this mode.
    pub mode: Option<Mode>,
    /// Only flagged (`true`) or unflagged transactions.
    pub attention: Option<bool>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

impl ListParams {
    pub(crate) fn into_query(self) -> Result<ListQuery, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest(
                "`limit` must be between 1 and 1000".into(),
            ));
        }
        Ok(ListQuery {
            status: self.status,
            mode: self.mode,
            attention: self.attention,
            // The caller's namespace, filled in by the handler.
            namespace: None,
            cursor: self.cursor,
            limit,
        })
    }
}

/// Longest gid accepted.
const GID_MAX: usize = 128;

/// Checks a registration and turns it into a transaction to insert (owner,
/// times and lease are the engine's to fill).
pub(crate) fn new_transaction(
    mut request: RegisterRequest,
    outbound: &OutboundPolicy,
    limits: &Limits,
) -> Result<NewTransaction, ApiError> {
    // Taken out, so that the fingerprint below leaves it out: the gid is the
    // key a fingerprint is stored under, not part of it.
    let gid = match request.gid.take() {
        Some(gid) => {
            check_gid(&gid)?;
            gid
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    request.options.validate().map_err(ApiError::BadRequest)?;
    limits.check_registration(&request.branches, &request.options)?;
    let status = match request.mode {
        Mode::Saga => {
            saga_dependencies(&request.branches).map_err(ApiError::BadRequest)?;
            Status::Running
        }
        Mode::TwoPhase | Mode::ThreePhase => {
            validate_branches(request.mode, &request.branches).map_err(ApiError::BadRequest)?;
            Status::Preparing
        }
        Mode::Tcc => {
            if !request.branches.is_empty() {
                return Err(ApiError::BadRequest(
                    "a TCC transaction opens without branches: register each with \
                     POST /v1/transactions/{gid}/branches before calling its Try"
                        .into(),
                ));
            }
            Status::Open
        }
    };
    for branch in &request.branches {
        check_branch_urls(branch, outbound)?;
    }
    // Same body → same fingerprint: serde_json writes struct fields in
    // declaration order and object keys sorted, so the bytes are canonical.
    let canonical = serde_json::to_vec(&request).map_err(|_| ApiError::Internal)?;
    Ok(NewTransaction {
        gid,
        mode: request.mode,
        status,
        request_hash: hex::encode(Sha256::digest(&canonical)),
        options: request.options,
        branches: request.branches,
        owner: String::new(),
        // The caller's, filled in by the handler.
        namespace: crate::auth::DEFAULT_NAMESPACE.to_owned(),
        registered_by: None,
        now_ms: 0,
        lease: std::time::Duration::ZERO,
        deadline_at_ms: 0,
    })
}

/// Checks a TCC branch registered on its own, by the same rules as the
/// branches registered with their transaction.
pub(crate) fn check_tcc_branch(
    branch: &BranchSpec,
    outbound: &OutboundPolicy,
    limits: &Limits,
) -> Result<(), ApiError> {
    validate_branch(Mode::Tcc, branch).map_err(ApiError::BadRequest)?;
    limits.check_branch(branch)?;
    check_branch_urls(branch, outbound)
}

pub(crate) fn check_gid(gid: &str) -> Result<(), ApiError> {
    // The same characters as branch ids: a gid goes out as a header too.
    let ok_chars = gid.chars().all(is_id_char);
    if gid.is_empty() || gid.len() > GID_MAX || !ok_chars {
        return Err(ApiError::BadRequest(format!(
            "`gid` must be 1 to {GID_MAX} characters of letters, digits, `-`, `_`, `.` or `:`"
        )));
    }
    Ok(())
}

/// URLs must be absolute http(s) URLs that the outbound policy lets dtx
/// call: a branch that cannot be called would be retried forever. (Ids and
/// headers are checked with the branch, by
/// `dtx_protocol::spec::validate_branch`.)
fn check_branch_urls(branch: &BranchSpec, outbound: &OutboundPolicy) -> Result<(), ApiError> {
    for (op, raw) in &branch.urls {
        let bad = |why: &str| {
            ApiError::BadRequest(format!(
                "branch `{}`: `{op}` URL `{}` {why}",
                branch.id,
                // The answer may be logged or shown: never its credentials.
                excerpt(&redacted_url(raw))
            ))
        };
        let url = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must use http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        outbound.check_url(&url).map_err(|why| bad(&why))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
