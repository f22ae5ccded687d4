//! What became of a TCC commit whose answer did not come back: the scope
//! asks the coordinator, aborts only a transaction that is still open, and
//! reports what actually happened instead of guessing.

use super::endpoints::Endpoint;
use super::{Client, ClientError, TransactionView};
use dtx_protocol::wire::AbortRequest;
use dtx_protocol::{RetryPolicy, Status};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Settles a commit whose request failed with `error`: `Ok` when the
/// transaction is committing or committed, [`ClientError::Aborted`] when it
/// is aborting or aborted, [`ClientError::OutcomeUnknown`] when the
/// coordinator could not be asked within `patience`, and any other error
/// the coordinator answered with (e.g. 404) as it came.
///
/// The question is repeated with `retry`'s backoff while the coordinator
/// gives no clear answer (unreachable, 503, another 5xx). A transaction
/// still `open` never received the commit: only then does the scope abort
/// it, and it reads the abort's answer too, since the commit may land in
/// between (a 409 "cannot be aborted"): then it asks again.
pub(super) async fn settle_lost_commit(
    client: &Client,
    home: &Arc<Endpoint>,
    gid: &str,
    retry: &RetryPolicy,
    patience: Duration,
    error: ClientError,
) -> Result<(), ClientError> {
    tracing::warn!(gid, %error, "the TCC commit got no clear answer; asking the coordinator what became of it");
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        // Why the question is asked again, if it is.
        let last = match client.get_at(gid, Some(home)).await.map(|a| a.body) {
            Ok(tx) => match tx.status {
                Status::Committing | Status::Committed => return Ok(()),
                Status::Aborting | Status::Aborted => return Err(aborted(&tx)),
                Status::Open => match client
                    .abort_at(gid, Some(home), &AbortRequest::default())
                    .await
                {
                    Ok(_) => {
                        return Err(ClientError::Aborted {
                            gid: gid.to_owned(),
                            reason: "the commit request was lost before it reached the \
                                     coordinator, so the scope aborted the transaction"
                                .to_owned(),
                            branch: None,
                            refusal: None,
                        });
                    }
                    // The commit arrived after all (or the deadline aborted
                    // it meanwhile): the next question tells which.
                    Err(e @ ClientError::Conflict { .. }) => e,
                    Err(e) if e.leaves_outcome_open() => e,
                    Err(e) => return Err(e),
                },
                other => {
                    return Err(ClientError::Unexpected {
                        status: 200,
                        detail: format!(
                            "transaction `{gid}` is `{other}`, which a TCC transaction never is"
                        ),
                    });
                }
            },
            Err(e) if e.leaves_outcome_open() => e,
            Err(e) => return Err(e),
        };
        let elapsed = started.elapsed();
        if elapsed >= patience {
            return Err(ClientError::OutcomeUnknown {
                gid: gid.to_owned(),
                detail: format!("after asking for {elapsed:?}: {last}"),
            });
        }
        attempt += 1;
        let pause = retry.delay(attempt, rand::random());
        tokio::time::sleep(pause.min(patience - elapsed)).await;
    }
}

/// The abort error for a transaction found aborting or aborted, with the
/// coordinator's reason from its history and the refusing branch's own.
fn aborted(tx: &TransactionView) -> ClientError {
    let cause = tx.abort_cause();
    ClientError::Aborted {
        gid: tx.gid.clone(),
        reason: cause.map_or_else(
            || "the coordinator aborted it (its history gives no reason)".to_owned(),
            |c| c.reason.to_owned(),
        ),
        branch: cause.and_then(|c| c.branch_id.map(str::to_owned)),
        refusal: cause.and_then(|c| c.refusal.map(str::to_owned)),
    }
}
