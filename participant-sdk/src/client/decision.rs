//! The termination query: what a participant in doubt asks the coordinator
//! (`GET /v1/transactions/{gid}/decision`), its typed answer
//! ([`DecisionAnswer`]), and [`DecisionSource`], the one-method trait the
//! 2PC recovery and the 3PC watchdog ask through, so that tests can answer
//! with a fake.

use super::{Client, ClientError, encode};
use dtx_protocol::{Mode, Status};
use reqwest::Method;
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;

/// What the coordinator decided for a transaction: the wire type of the
/// protocol crate, so both ends agree on its names.
pub use dtx_protocol::Decision;

/// The coordinator's answer to the termination query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DecisionAnswer {
    /// The decision.
    pub decision: Decision,
    /// The transaction's status; `None` when the coordinator has no record
    /// of it (and the decision is then [`Decision::Abort`]). A 3PC
    /// participant reads `pre_committing` here as "the coordinator decided
    /// to pre-commit".
    #[serde(default)]
    pub status: Option<Status>,
    /// The transaction's mode; `None` for an unknown gid.
    #[serde(default)]
    pub mode: Option<Mode>,
}

impl DecisionAnswer {
    /// An answer with this decision and no status or mode, e.g. for a fake
    /// [`DecisionSource`] in tests.
    pub fn new(decision: Decision) -> Self {
        DecisionAnswer {
            decision,
            status: None,
            mode: None,
        }
    }

    /// The same answer with a status.
    #[must_use]
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }
}

/// Where a participant in doubt learns the decision: the [`Client`] in a
/// service, a fake in tests.
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
    /// Fails with [`ClientError::Unreachable`] when the coordinator does not
    /// answer; see [`ClientError::is_unreachable`].
    pub async fn decision(&self, gid: &str) -> Result<DecisionAnswer, ClientError> {
        let path = format!("v1/transactions/{}/decision", encode(gid));
        self.call(Method::GET, &path, None::<&()>, Duration::ZERO)
            .await
            .map(|(_, answer)| answer)
    }
}

impl ClientError {
    /// Whether this error means the coordinator gave no answer at all: the
    /// connection was refused or reset, no answer came in time, the name
    /// did not resolve, the answer broke off ([`ClientError::Unreachable`],
    /// except a request that could not even be built from the configuration
    /// and a redirect loop, which is an answer).
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
        assert_eq!(unknown, DecisionAnswer::new(Decision::Abort));

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
        ] {
            assert!(!answered.is_unreachable(), "{answered:?}");
        }
    }
}
