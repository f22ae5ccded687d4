//! The termination query: what a participant in doubt asks the coordinator
//! (`GET /v1/transactions/{gid}/decision`), its typed answer
//! ([`DecisionAnswer`]), and [`DecisionSource`], the one-method trait the
//! 2PC recovery and the 3PC watchdog ask through, so that tests can answer
//! with a fake.
//!
//! # Signed answers
//! A participant commits or rolls back on this answer, so it must come from
//! the coordinator: with the coordinator's keys
//! ([`ClientBuilder::coordinator_keys`](super::ClientBuilder::coordinator_keys)),
//! every question carries a fresh random nonce (`?nonce=`), and the answer
//! is taken only if its `dtx-signature` header verifies under one of those
//! keys, over this gid, the answer's mode, status and decision, and that
//! nonce, within the window (the format:
//! `dtx_protocol::signature::DecisionVerifier`). Anything else is
//! [`ClientError::UnverifiedDecision`]. Without keys, answers are taken as
//! they come, and the first one logs a warning ("DECISION ANSWERS NOT
//! VERIFIED").

use super::{Client, ClientError, encode};
use crate::signature::{DecisionNonce, unix_now};
use dtx_protocol::signature::NONCE_PARAM;
use reqwest::Method;
use std::future::Future;
use std::sync::Once;
use std::time::Duration;

/// What the coordinator decided for a transaction, and its answer to the
/// termination query: the wire types of the protocol crate, shared with the
/// coordinator, so both ends agree on their names.
pub use dtx_protocol::{Decision, DecisionAnswer};

/// Where a participant in doubt learns the decision: the [`Client`] in a
/// service, a fake in tests.
///
/// Through a [`Client`] that knows several coordinators, the question fails
/// over like every request: it goes to the next coordinator when one gives
/// no answer or answers 503, so the 2PC recovery and the 3PC watchdog learn
/// the decision from any coordinator that is up.
///
/// An error means the decision could not be learnt. The 3PC timeout rules
/// apply only when [`ClientError::is_unreachable`] says the coordinator gave
/// no answer at all; any answer (a 503 while its database is down, a 425, a
/// 404 from a coordinator without this endpoint) means it is there and has
/// not decided anything the participant may act on, so the helpers keep
/// waiting and ask again (see
/// [`three_phase::timeout_rule`](crate::three_phase::timeout_rule)).
pub trait DecisionSource: Send + Sync {
    /// The coordinator's decision for `gid`.
    fn decision(
        &self,
        gid: &str,
    ) -> impl Future<Output = Result<DecisionAnswer, ClientError>> + Send;
}

impl DecisionSource for Client {
    fn decision(
        &self,
        gid: &str,
    ) -> impl Future<Output = Result<DecisionAnswer, ClientError>> + Send {
        Client::decision(self, gid)
    }
}

impl<S: DecisionSource + ?Sized> DecisionSource for std::sync::Arc<S> {
    fn decision(
        &self,
        gid: &str,
    ) -> impl Future<Output = Result<DecisionAnswer, ClientError>> + Send {
        (**self).decision(gid)
    }
}

impl Client {
    /// Asks the coordinator what it decided for `gid` (the termination
    /// query). A gid the coordinator does not know is answered
    /// [`Decision::Abort`] with no status (presumed abort: a transaction
    /// without a logged decision never committed).
    ///
    /// Any coordinator the client knows may answer (they share the store
    /// the decision is logged in). Fails with [`ClientError::Unreachable`]
    /// when none answers; see [`ClientError::is_unreachable`]. With the
    /// coordinator's keys, an answer that does not verify fails with
    /// [`ClientError::UnverifiedDecision`] (see the module documentation).
    pub async fn decision(&self, gid: &str) -> Result<DecisionAnswer, ClientError> {
        // Fresh per question (attempts at several coordinators are one
        // question and share it): the signed answer must echo it, so no
        // answer to an earlier question can stand in for this one.
        let nonce = DecisionNonce::from_bytes(rand::random());
        let path = format!(
            "v1/transactions/{}/decision?{NONCE_PARAM}={nonce}",
            encode(gid)
        );
        let answered = self
            .call::<(), DecisionAnswer>(Method::GET, &path, None, Duration::ZERO, None)
            .await?;
        let Some(verifier) = &self.inner.coordinator_keys else {
            UNVERIFIED_WARNING.call_once(|| {
                tracing::warn!(
                    "DECISION ANSWERS NOT VERIFIED: 2PC recovery and the 3PC watchdog commit or \
                     roll back on whatever answers the termination query in the coordinator's \
                     place. Give the client the coordinator's signing key \
                     (`ClientBuilder::coordinator_keys`, the key of dtx serve --signing-key)"
                )
            });
            return Ok(answered.body);
        };
        verifier
            .verify(
                answered.signature.as_deref(),
                gid,
                &nonce,
                &answered.body,
                unix_now(),
            )
            .map_err(|source| ClientError::UnverifiedDecision {
                gid: gid.to_owned(),
                source,
            })?;
        Ok(answered.body)
    }
}

/// Says once per process that decision answers are taken unverified.
static UNVERIFIED_WARNING: Once = Once::new();

impl ClientError {
    /// Whether this error means the coordinator gave no answer at all: the
    /// connection was refused or reset, no answer came in time, the name
    /// did not resolve, the answer broke off ([`ClientError::Unreachable`],
    /// except a request that could not even be built from the configuration
    /// and a redirect loop, which is an answer). With several coordinators,
    /// it means that none of them answered: a client returns
    /// `Unreachable` only when every coordinator it tried failed without an
    /// answer, and the 503 of any one of them otherwise.
    ///
    /// This is the "cannot reach the coordinator" of the 3PC timeout rules,
    /// so it is deliberately narrow: an HTTP answer of any status, 503 (its
    /// database is down) and 5xx included, proves the coordinator is there,
    /// and a participant that read it as "unreachable" could commit by its
    /// timeout rule while the others abort, without any partition.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Unreachable { source, .. } => {
                !(source.is_builder() || source.is_redirect())
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtx_protocol::{Mode, Status};

    #[test]
    fn reads_the_documented_answers() {
        let known: DecisionAnswer = serde_json::from_str(
            r#"{"gid": "g1", "mode": "2pc", "status": "committing", "decision": "commit"}"#,
        )
        .unwrap();
        assert_eq!(known.decision, Decision::Commit);
        assert_eq!(known.status, Some(Status::Committing));
        assert_eq!(known.mode, Some(Mode::TwoPhase));

        let unknown: DecisionAnswer = serde_json::from_str(
            r#"{"gid": "g2", "mode": null, "status": null, "decision": "abort"}"#,
        )
        .unwrap();
        assert_eq!(unknown, DecisionAnswer::new("g2", Decision::Abort));

        let pending: DecisionAnswer = serde_json::from_str(
            r#"{"gid": "g3", "mode": "3pc", "status": "pre_committing", "decision": "pending"}"#,
        )
        .unwrap();
        assert_eq!(pending.status, Some(Status::PreCommitting));
        assert_eq!(pending.decision, Decision::Pending);
    }

    #[test]
    fn an_answer_of_any_status_is_not_unreachable() {
        for answered in [
            ClientError::Unavailable {
                detail: "db down".into(),
            },
            ClientError::Unexpected {
                status: 502,
                detail: String::new(),
            },
            ClientError::Unexpected {
                status: 425,
                detail: String::new(),
            },
            ClientError::NotFound {
                detail: "no such route".into(),
            },
            ClientError::UnverifiedDecision {
                gid: "g1".into(),
                source: crate::signature::DecisionSignatureError::Unsigned,
            },
        ] {
            assert!(!answered.is_unreachable(), "{answered:?}");
        }
    }
}
