//! Signed answers to the termination query (`GET
//! /v1/transactions/{gid}/decision`): a participant in doubt commits or
//! rolls back on that answer, so whoever can answer in the coordinator's
//! place (a spoofed address, a proxy, plain http) could otherwise decide for
//! it. The coordinator signs the answer with its signing key; the SDK's
//! client verifies it against the coordinator's keys and refuses to act on
//! an answer that fails.
//!
//! # Wire
//! The question carries a fresh nonce of the asker's, `?nonce=<32 hex
//! digits>` ([`NONCE_PARAM`]). The answer's body is the usual
//! [`DecisionAnswer`] JSON, unchanged, and its `dtx-signature` header has
//! the format of signed calls, with the asker's nonce as `n`:
//! ```text
//! dtx-signature: v2; key=<key id>; t=<unix seconds>; n=<the question's nonce>; sig=<64 hex digits>
//! ```
//! `sig` is the hex HMAC-SHA256, under the secret of key `key`, of these
//! lines joined by `\n` (no trailing newline):
//! ```text
//! dtx-decision-v2
//! <key id>
//! <t>
//! <n>
//! <gid>
//! <mode, e.g. 2pc; empty when the coordinator has no record>
//! <status, e.g. pre_committing; empty when the coordinator has no record>
//! <decision: commit, abort or pending>
//! ```
//! The first line differs from that of calls, so a signed call can never
//! pass for a signed answer or the other way round, although both use the
//! same keys. The nonce binds the answer to one question: a captured answer
//! (an old `abort`, say) replayed to a later question carries the old
//! nonce and is refused, so the verifier needs no replay cache. The window
//! still bounds how old an answer may be. A question without a nonce (a
//! client that does not verify) is answered with one the coordinator draws.
//!
//! Only the 200 answer is signed. An error answer (404, 503, ...) is never
//! acted on: a participant keeps waiting and asks again.

use super::{
    DEFAULT_WINDOW, Keyring, NONCE_BYTES, SignatureError, SigningKey, Skew, VERSION, parse_header,
    skew,
};
use crate::wire::DecisionAnswer;
use hmac::Mac;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The first line of the signed text of an answer.
const DOMAIN: &str = "dtx-decision-v2";
/// The query parameter of the termination query that carries the nonce.
pub const NONCE_PARAM: &str = "nonce";

/// The asker's nonce: [`NONCE_BYTES`] random bytes, written as 32 lowercase
/// hex digits. A fresh one per question.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecisionNonce([u8; NONCE_BYTES]);

impl DecisionNonce {
    /// The nonce of these (random) bytes.
    pub fn from_bytes(bytes: [u8; NONCE_BYTES]) -> DecisionNonce {
        DecisionNonce(bytes)
    }
}

impl fmt::Display for DecisionNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DecisionNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecisionNonce({self})")
    }
}

/// 32 hex digits, either case.
impl FromStr for DecisionNonce {
    type Err = DecisionSignatureError;

    fn from_str(text: &str) -> Result<DecisionNonce, DecisionSignatureError> {
        let mut bytes = [0; NONCE_BYTES];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| {
            DecisionSignatureError::Malformed(format!(
                "the nonce must be {} hex digits",
                NONCE_BYTES * 2
            ))
        })?;
        Ok(DecisionNonce(bytes))
    }
}

impl SigningKey {
    /// The `dtx-signature` header value of `answer` to the question that
    /// carried `nonce`, made at Unix time `timestamp` (seconds).
    pub fn sign_decision(
        &self,
        answer: &DecisionAnswer,
        timestamp: u64,
        nonce: &DecisionNonce,
    ) -> String {
        let nonce = nonce.to_string();
        let mac = self.decision_mac(answer, timestamp, &nonce);
        format!(
            "{VERSION}; key={}; t={timestamp}; n={nonce}; sig={}",
            self.id,
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// The HMAC of the signed text of `answer`, not yet finalized.
    fn decision_mac(
        &self,
        answer: &DecisionAnswer,
        timestamp: u64,
        nonce: &str,
    ) -> hmac::Hmac<sha2::Sha256> {
        let timestamp = timestamp.to_string();
        self.mac_of_lines(&[
            DOMAIN,
            &self.id,
            &timestamp,
            nonce,
            &answer.gid,
            answer.mode.map_or("", |m| m.as_str()),
            answer.status.map_or("", |s| s.as_str()),
            answer.decision.as_str(),
        ])
    }
}

/// Checks answers to the termination query against the coordinator's keys
/// and a time window. Holds no state between answers: the nonce of each
/// question is what stops a replay.
#[derive(Clone)]
pub struct DecisionVerifier {
    keyring: Keyring,
    window: Duration,
}

impl DecisionVerifier {
    /// A verifier of answers signed with one of `keyring`'s keys, within
    /// the default window ([`DEFAULT_WINDOW`]).
    pub fn new(keyring: Keyring) -> DecisionVerifier {
        DecisionVerifier {
            keyring,
            window: DEFAULT_WINDOW,
        }
    }

    /// How far an answer's timestamp may be from now, either way (whole
    /// seconds; at least one).
    #[must_use]
    pub fn window(mut self, window: Duration) -> DecisionVerifier {
        self.window = window.max(Duration::from_secs(1));
        self
    }

    /// The keys accepted.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Checks `header` (the answer's `dtx-signature`, if any) of `answer`,
    /// received at Unix time `now` (seconds) for the question about
    /// `asked_gid` that carried `nonce`; the id of the key that signed it.
    pub fn verify(
        &self,
        header: Option<&str>,
        asked_gid: &str,
        nonce: &DecisionNonce,
        answer: &DecisionAnswer,
        now: u64,
    ) -> Result<&str, DecisionSignatureError> {
        let header = parse_header(header.ok_or(DecisionSignatureError::Unsigned)?)?;
        // Both are checked again by the MAC, which covers them; named here
        // because "an answer to another question" tells a reader more than
        // "mismatch".
        if header.nonce.parse::<DecisionNonce>().ok() != Some(*nonce) {
            return Err(DecisionSignatureError::OtherNonce);
        }
        if answer.gid != asked_gid {
            return Err(DecisionSignatureError::OtherGid {
                asked: asked_gid.to_owned(),
                answered: answer.gid.clone(),
            });
        }
        let key =
            self.keyring
                .get(header.key)
                .ok_or_else(|| DecisionSignatureError::UnknownKey {
                    key: header.key.to_owned(),
                })?;
        // Constant time, as for calls. The text is rebuilt from what the
        // asker knows (its nonce) and what it will act on (the body).
        key.decision_mac(answer, header.timestamp, &nonce.to_string())
            .verify_slice(&header.mac)
            .map_err(|_| DecisionSignatureError::Mismatch)?;
        let window = self.window.as_secs();
        match skew(header.timestamp, now, window) {
            Some(Skew::Stale { age }) => Err(DecisionSignatureError::Stale { age, window }),
            Some(Skew::Future { ahead }) => Err(DecisionSignatureError::Future { ahead, window }),
            None => Ok(key.id()),
        }
    }
}

impl fmt::Debug for DecisionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionVerifier")
            .field("keys", &self.keyring.ids().collect::<Vec<_>>())
            .field("window", &self.window)
            .finish()
    }
}

/// Why an answer to the termination query was not trusted. A participant
/// must not act on it; each message says what to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionSignatureError {
    /// The answer has no `dtx-signature` header.
    #[error(
        "the answer has no `dtx-signature` header: the coordinator runs without \
         `--signing-key`, or something else answered in its place"
    )]
    Unsigned,
    /// The header (or a nonce) is not well formed.
    #[error("the answer's `dtx-signature` header is malformed: {0}")]
    Malformed(String),
    /// The header names a key the asker does not have.
    #[error(
        "the answer is signed with key `{key}`, which is not among the coordinator keys \
         this client was given: add it (during a rotation, both the old and the new key)"
    )]
    UnknownKey {
        /// The key id named.
        key: String,
    },
    /// The answer echoes another nonce than the question carried.
    #[error(
        "the answer was made for another question (its nonce is not the one sent): \
         a replayed answer, or a proxy that serves answers from a cache"
    )]
    OtherNonce,
    /// The answer is about another transaction than the one asked about.
    #[error("the question was about `{asked}` but the answer is about `{answered}`")]
    OtherGid {
        /// The gid asked about.
        asked: String,
        /// The gid in the answer.
        answered: String,
    },
    /// The HMAC does not match the answer.
    #[error(
        "the answer's `dtx-signature` does not match it: the answer was altered, or \
         signed with another secret under the same key id"
    )]
    Mismatch,
    /// The timestamp is older than the window.
    #[error(
        "the answer was signed {age} s ago, more than the {window} s accepted: a delayed \
         answer, or the clocks of the coordinator and this participant differ"
    )]
    Stale {
        /// Seconds since it was signed.
        age: u64,
        /// The window, in seconds.
        window: u64,
    },
    /// The timestamp is further ahead than the window.
    #[error(
        "the answer is dated {ahead} s in the future, more than the {window} s accepted: \
         the coordinator's clock is ahead of this participant's; synchronise them (NTP)"
    )]
    Future {
        /// Seconds ahead of this participant's clock.
        ahead: u64,
        /// The window, in seconds.
        window: u64,
    },
}

/// The header reader speaks of calls; only its malformations reach here
/// (it checks nothing else).
impl From<SignatureError> for DecisionSignatureError {
    fn from(error: SignatureError) -> DecisionSignatureError {
        match error {
            SignatureError::Malformed(why) => DecisionSignatureError::Malformed(why),
            other => DecisionSignatureError::Malformed(other.to_string()),
        }
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
