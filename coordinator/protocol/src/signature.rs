//! Signed participant calls, version 2: the one implementation of the
//! `dtx-signature` header, used by the coordinator (which signs every call
//! it makes), by the SDK's initiator client (which signs its TCC Try calls)
//! and by the SDK's participant side (which verifies them).
//!
//! # Header
//! ```text
//! dtx-signature: v2; key=<key id>; t=<unix seconds>; n=<32 hex digits>; sig=<64 hex digits>
//! ```
//! `sig` is the hex HMAC-SHA256, under the secret of key `key`, of these
//! lines joined by `\n` (no trailing newline):
//!
//! ```text
//! dtx-signature-v2
//! <key id>
//! <t>
//! <n>
//! <HTTP method, e.g. POST>
//! <request target: the URL path, and `?query` when the URL has one, as sent>
//! <hex SHA-256 of the body>
//! <dtx-gid>
//! <dtx-branch>
//! <dtx-op>
//! <dtx-mode>
//! ```
//! None of these can hold a newline (they are HTTP header values, a method
//! and a request target), so the joined text names one call only. The
//! nonce `n` (16 random bytes) makes two sends of the same call within the
//! same second differ, so that a retry is never taken for a replay.
//!
//! The host is not covered: proxies and load balancers rewrite it. So within
//! the window a captured call could be re-sent to another participant that
//! trusts the same key *at the same path*; give participants that must not
//! accept each other's calls different keys.
//!
//! # Keys
//! A [`SigningKey`] is an id and a secret of at least [`MIN_SECRET_BYTES`]
//! bytes. dtx signs with one key; a participant verifies with a [`Keyring`]
//! of several, so a key is rotated without downtime (add the new key to
//! every participant's ring, switch the signer, then drop the old key). The
//! initiator's key (TCC Try calls) is separate from the coordinator's, and a
//! participant's ring lists both.
//!
//! # Verification
//! [`Verifier::verify`] checks, in order: the header is well formed, its key
//! is in the ring, the HMAC matches (constant-time comparison), the
//! timestamp is within the window (default [`DEFAULT_WINDOW`], both
//! directions, for clock skew), and the signature was not seen before
//! within the window (replay). The replay cache holds the signatures of the
//! calls accepted within the window, at most a bounded number
//! ([`DEFAULT_REPLAY_CAPACITY`]); when it is full of calls still inside the
//! window, new calls are refused with [`SignatureError::ReplayCacheFull`]
//! (answer 503 with `Retry-After`; the coordinator retries) rather than
//! forgetting one and letting its replay through. Only calls whose HMAC
//! matched enter the cache, so forgeries cannot fill it.
//!
//! # Decision answers
//! The coordinator signs its answer to the termination query with the same
//! keys, in the same header format, over a text of its own (`decision`:
//! [`SigningKey::sign_decision`], [`DecisionVerifier`]).
//!
//! Like the rest of this crate it has no clock and no randomness: the
//! current Unix time and the nonce are arguments.

mod decision;
mod header;
#[cfg(feature = "clap")]
mod key_arg;
pub use decision::{DecisionNonce, DecisionSignatureError, DecisionVerifier, NONCE_PARAM};
#[cfg(feature = "clap")]
pub use key_arg::KeyParser;
mod replay;

use header::parse_header;
use hmac::{Hmac, Mac};
use replay::ReplayCache;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The version tag that starts a version 2 header.
pub const VERSION: &str = "v2";
/// The first line of the signed text: binds the MAC to this format.
const DOMAIN: &str = "dtx-signature-v2";
/// The shortest secret accepted, in bytes: the output size of SHA-256.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest key id accepted, in characters.
pub const MAX_KEY_ID_CHARS: usize = 64;
/// Random bytes in a nonce (hex encoded in the header: twice as many digits).
pub const NONCE_BYTES: usize = 16;
/// How far a call's timestamp may be from the verifier's clock, either way.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How many accepted signatures the replay cache keeps by default: 100 000
/// calls in one window (333 calls a second for 5 minutes), a few MB.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// One key: an id, named in the header, and a secret. `Debug` never shows
/// the secret.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    secret: Arc<[u8]>,
}

impl SigningKey {
    /// A key named `id` (1 to [`MAX_KEY_ID_CHARS`] characters of
    /// `A-Z a-z 0-9 . _ -`) with `secret` (at least [`MIN_SECRET_BYTES`]
    /// bytes).
    pub fn new(id: impl Into<String>, secret: impl AsRef<[u8]>) -> Result<SigningKey, KeyError> {
        let id = id.into();
        if !is_key_id(&id) {
            return Err(KeyError::BadId { id });
        }
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(KeyError::EmptySecret { id });
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret {
                id,
                len: secret.len(),
            });
        }
        Ok(SigningKey {
            id,
            secret: Arc::from(secret),
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `dtx-signature` header value for `call`, made at Unix time
    /// `timestamp` (seconds) with a fresh random `nonce`.
    pub fn sign(&self, call: &SignedCall<'_>, timestamp: u64, nonce: [u8; NONCE_BYTES]) -> String {
        let nonce = hex::encode(nonce);
        let mac = self.mac(call, timestamp, &nonce).finalize().into_bytes();
        format!(
            "{VERSION}; key={}; t={timestamp}; n={nonce}; sig={}",
            self.id,
            hex::encode(mac)
        )
    }

    /// The HMAC of the signed text, not yet finalized.
    fn mac(&self, call: &SignedCall<'_>, timestamp: u64, nonce: &str) -> Hmac<Sha256> {
        let timestamp = timestamp.to_string();
        let body_hash = hex::encode(Sha256::digest(call.body));
        self.mac_of_lines(&[
            DOMAIN,
            &self.id,
            &timestamp,
            nonce,
            call.method,
            call.target,
            &body_hash,
            call.gid,
            call.branch,
            call.op,
            call.mode,
        ])
    }

    /// The HMAC of `lines` joined by `\n`, not yet finalized: the one MAC
    /// of every signed text (calls here, decision answers in `decision`),
    /// each starting with a domain line of its own.
    fn mac_of_lines(&self, lines: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .expect("HMAC-SHA256 accepts keys of any length");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(line.as_bytes());
        }
        mac
    }
}

/// `ID:SECRET`, split at the first colon (the secret may hold colons), as
/// given to `dtx serve --signing-key` and to the sample services.
impl FromStr for SigningKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<SigningKey, KeyError> {
        let (id, secret) = text.split_once(':').ok_or(KeyError::NoSeparator)?;
        SigningKey::new(id, secret)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Whether `id` may name a key: it appears in the header between `=` and
/// `;`, so it is kept to characters that need no quoting.
fn is_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a key or a keyring was refused. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `ID:SECRET` without the colon.
    #[error(
        "a signing key is written `ID:SECRET` (e.g. `k2024:` followed by `openssl rand -hex 32`); this one has no `:`"
    )]
    NoSeparator,
    /// The id is empty, too long or has other characters.
    #[error(
        "the key id `{id}` is not valid: use 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_` and `-`"
    )]
    BadId {
        /// The id given.
        id: String,
    },
    /// The secret is empty.
    #[error(
        "the secret of key `{id}` is empty: give at least 32 bytes, e.g. the output of `openssl rand -hex 32`"
    )]
    EmptySecret {
        /// The key's id.
        id: String,
    },
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the secret of key `{id}` has {len} bytes; at least 32 are required (e.g. the output of `openssl rand -hex 32`)"
    )]
    ShortSecret {
        /// The key's id.
        id: String,
        /// How many bytes it has.
        len: usize,
    },
    /// Two keys of one ring share an id.
    #[error("two keys are named `{id}`: every key of a keyring needs its own id")]
    DuplicateId {
        /// The id given twice.
        id: String,
    },
    /// A keyring without keys would refuse every call.
    #[error(
        "a keyring needs at least one key (to accept unsigned calls, configure no keyring at all)"
    )]
    EmptyKeyring,
}

/// The keys a participant accepts, by id.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: BTreeMap<String, SigningKey>,
}

impl Keyring {
    /// A ring of `keys`: at least one, each id once.
    pub fn new(keys: impl IntoIterator<Item = SigningKey>) -> Result<Keyring, KeyError> {
        let mut ring = BTreeMap::new();
        for key in keys {
            if ring.contains_key(&key.id) {
                return Err(KeyError::DuplicateId { id: key.id });
            }
            ring.insert(key.id.clone(), key);
        }
        if ring.is_empty() {
            return Err(KeyError::EmptyKeyring);
        }
        Ok(Keyring { keys: ring })
    }

    /// The key named `id`.
    pub fn get(&self, id: &str) -> Option<&SigningKey> {
        self.keys.get(id)
    }

    /// The ids of the keys, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// What a signature covers of one call, besides its time and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedCall<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The request target as sent: the URL's path, then `?` and the query
    /// when it has one (`/stock/try?tenant=a`).
    pub target: &'a str,
    /// The body, as sent.
    pub body: &'a [u8],
    /// The `dtx-gid` header.
    pub gid: &'a str,
    /// The `dtx-branch` header.
    pub branch: &'a str,
    /// The `dtx-op` header.
    pub op: &'a str,
    /// The `dtx-mode` header.
    pub mode: &'a str,
}

/// Checks signed calls against a [`Keyring`], a time window and a replay
/// cache. Share one per participant (the replay cache must see every call).
pub struct Verifier {
    keyring: Keyring,
    window: Duration,
    replay: Mutex<ReplayCache>,
}

impl Verifier {
    /// A verifier of `keyring` with the default window and replay capacity.
    pub fn new(keyring: Keyring) -> Verifier {
        Verifier {
            keyring,
            window: DEFAULT_WINDOW,
            replay: Mutex::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY)),
        }
    }

    /// How far a call's timestamp may be from now, either way (whole
    /// seconds; at least one).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Verifier {
        self.window = window.max(Duration::from_secs(1));
        self
    }

    /// How many accepted signatures to remember (at least one).
    #[must_use]
    pub fn replay_capacity(mut self, capacity: usize) -> Verifier {
        self.replay = Mutex::new(ReplayCache::new(capacity));
        self
    }

    /// The keys accepted.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Checks `header` (the `dtx-signature` value, if any) for `call` at
    /// Unix time `now` (seconds); the id of the key that signed it.
    pub fn verify(
        &self,
        header: Option<&str>,
        call: &SignedCall<'_>,
        now: u64,
    ) -> Result<&str, SignatureError> {
        let header = parse_header(header.ok_or(SignatureError::Missing)?)?;
        let key = self
            .keyring
            .get(header.key)
            .ok_or_else(|| SignatureError::UnknownKey {
                key: header.key.to_owned(),
            })?;
        // Constant time: the answer's timing says nothing about how much of
        // a forgery was right.
        key.mac(call, header.timestamp, header.nonce)
            .verify_slice(&header.mac)
            .map_err(|_| SignatureError::Mismatch)?;
        let window = self.window.as_secs();
        match skew(header.timestamp, now, window) {
            Some(Skew::Stale { age }) => return Err(SignatureError::Stale { age, window }),
            Some(Skew::Future { ahead }) => return Err(SignatureError::Future { ahead, window }),
            None => {}
        }
        let mut mac = [0; 32];
        mac.copy_from_slice(&header.mac);
        self.replay
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(header.timestamp, mac, now, window)?;
        Ok(key.id())
    }
}

/// How a timestamp lies outside the window.
enum Skew {
    /// More than the window ago, by `age` seconds in all.
    Stale { age: u64 },
    /// More than the window ahead, by `ahead` seconds in all.
    Future { ahead: u64 },
}

/// Seconds since the Unix epoch, the time signatures carry and are checked
/// against (0 for a clock set before the epoch, which every timestamp then
/// exceeds: what it checks reads as from the future).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Whether `timestamp` is outside `window` seconds around `now`, either way;
/// `None` inside (the bounds included).
fn skew(timestamp: u64, now: u64, window: u64) -> Option<Skew> {
    if timestamp.saturating_add(window) < now {
        Some(Skew::Stale {
            age: now - timestamp,
        })
    } else if timestamp > now.saturating_add(window) {
        Some(Skew::Future {
            ahead: timestamp - now,
        })
    } else {
        None
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keyring.ids().collect::<Vec<_>>())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// Why a signed call was refused. Every message names the header, so a
/// person reading a 401 knows where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The call has no `dtx-signature` header.
    #[error(
        "the call has no `dtx-signature` header, but this participant requires signed calls: \
         give the coordinator a `--signing-key` (and the initiator client a signing key) \
         that is in this participant's keyring"
    )]
    Missing,
    /// The header is not a version 2 signature.
    #[error("the `dtx-signature` header is malformed: {0}")]
    Malformed(String),
    /// The header names a key this participant does not have.
    #[error(
        "the `dtx-signature` header names key `{key}`, which is not in this participant's \
         keyring: add it (during a rotation, both the old and the new key belong there)"
    )]
    UnknownKey {
        /// The key id named.
        key: String,
    },
    /// The HMAC does not match the call.
    #[error(
        "the `dtx-signature` header does not match the call: it was signed with another \
         secret under the same key id, or the call was altered or sent to another path \
         or with another method than it was signed for"
    )]
    Mismatch,
    /// The timestamp is older than the window.
    #[error(
        "the `dtx-signature` header was made {age} s ago, more than the {window} s accepted: \
         the call is stale (a delayed or captured call), or the clocks of the signer and \
         this participant differ; the coordinator retries with a fresh signature"
    )]
    Stale {
        /// Seconds since the call was signed.
        age: u64,
        /// The window, in seconds.
        window: u64,
    },
    /// The timestamp is further ahead than the window.
    #[error(
        "the `dtx-signature` header is dated {ahead} s in the future, more than the {window} s \
         accepted: the signer's clock is ahead of this participant's; synchronise them (NTP)"
    )]
    Future {
        /// Seconds ahead of this participant's clock.
        ahead: u64,
        /// The window, in seconds.
        window: u64,
    },
    /// The same signature was accepted before, within the window.
    #[error(
        "this `dtx-signature` was already used: the call is a replay (a signer sends every \
         call, retries included, with a fresh signature)"
    )]
    Replayed,
    /// The replay cache is full of calls still inside the window.
    #[error(
        "this participant has accepted too many signed calls in the last window to remember \
         another one, and does not forget one early (its replay would get through); \
         try again in {retry_after} s, or raise its replay capacity"
    )]
    ReplayCacheFull {
        /// Seconds until the oldest remembered call leaves the window.
        retry_after: u64,
    },
}

impl SignatureError {
    /// Seconds after which the same call may succeed when this is a
    /// temporary refusal (a full replay cache: answer 503 with
    /// `Retry-After`); `None` for a refusal of the call itself (401).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SignatureError::ReplayCacheFull { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
