//! Who may use the API: API tokens, each with a name, a [`Role`] and a
//! namespace, read from a token file that holds only their hashes.
//!
//! A token file has one token per line, `name role namespace sha256:HEX`;
//! blank lines and lines starting with `#` are ignored. `dtx token new`
//! prints a fresh token and its line. Tokens are 256 random bits, so a
//! plain SHA-256 is enough to store them (a slow password hash protects
//! guessable secrets; these cannot be guessed).
//!
//! Without a token file the API is open: every caller is
//! [`Caller::open`], an operator in the default namespace. `dtx serve`
//! refuses to do that on anything but loopback unless told to
//! (`--insecure-open`).

mod extract;

pub use extract::{Access, Authenticated};

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The namespace of every transaction registered without a token.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Register transactions, add branches, commit and abort, read: in its
    /// namespace.
    Initiator,
    /// Read transactions (and ask for decisions) in its namespace.
    Reader,
    /// Everything, in every namespace.
    Operator,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "initiator" => Some(Role::Initiator),
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    /// The name used in token files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Initiator => "initiator",
            Role::Reader => "reader",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the token's name, role and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, written into the history of what it does.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The namespace its transactions belong to.
    pub namespace: String,
    /// Whether it came with no token (an API without a token file).
    pub anonymous: bool,
}

impl Caller {
    /// Every caller of an API without tokens.
    pub fn open() -> Caller {
        Caller {
            name: "anonymous".to_owned(),
            role: Role::Operator,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            anonymous: true,
        }
    }

    /// The token's name, for the history; `None` for an anonymous caller.
    pub fn token_name(&self) -> Option<&str> {
        (!self.anonymous).then_some(self.name.as_str())
    }

    /// Whether this caller may register, add branches, commit and abort.
    pub fn may_write(&self) -> bool {
        matches!(self.role, Role::Initiator | Role::Operator)
    }

    /// Whether a transaction of `namespace` exists for this caller (another
    /// namespace's transactions are answered 404, as if absent).
    pub fn sees(&self, namespace: &str) -> bool {
        self.role == Role::Operator || self.namespace == namespace
    }

    /// The namespace a listing is limited to; `None` for every namespace.
    pub fn listing_namespace(&self) -> Option<&str> {
        (self.role != Role::Operator).then_some(self.namespace.as_str())
    }
}

/// The tokens of a token file, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Caller>,
}

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TokenFileError {
    path: String,
    why: String,
}

impl Tokens {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenFileError {
            path: path.display().to_string(),
            why: format!("cannot read it ({e})"),
        })?;
        Tokens::parse(&text).map_err(|why| TokenFileError {
            path: path.display().to_string(),
            why,
        })
    }

    /// Parses the text of a token file; the error names the line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Tokens::default();
        let mut names = std::collections::HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", number + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, role, namespace, hash] = fields[..] else {
                return Err(at(
                    "expected `name role namespace sha256:HEX` (as `dtx token new` prints)".into(),
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                at(format!(
                    "unknown role `{role}`: use initiator, reader or operator"
                ))
            })?;
            check_name(name).map_err(|why| at(format!("token name {why}")))?;
            check_name(namespace).map_err(|why| at(format!("namespace {why}")))?;
            let hash = hash
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| at("the hash must be `sha256:` and 64 hex digits".into()))?
                .to_ascii_lowercase();
            if !names.insert(name.to_owned()) {
                return Err(at(format!("token name `{name}` is used twice")));
            }
            let caller = Caller {
                name: name.to_owned(),
                role,
                namespace: namespace.to_owned(),
                anonymous: false,
            };
            if tokens.by_hash.insert(hash, caller).is_some() {
                return Err(at("the same token is listed twice".into()));
            }
        }
        if tokens.by_hash.is_empty() {
            return Err("the file lists no token: every request would be refused".into());
        }
        Ok(tokens)
    }

    /// The caller a bearer token belongs to, if it is listed.
    pub fn caller(&self, token: &str) -> Option<&Caller> {
        // Looked up by hash: the stored hashes are what is compared, so
        // the lookup's timing says nothing about a token's characters.
        self.by_hash.get(&hash_token(token))
    }
}

/// Token names and namespaces: 1 to 64 letters, digits, `-`, `_` or `.`.
fn check_name(text: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if text.is_empty() || text.len() > 64 || !text.chars().all(ok) {
        return Err(format!(
            "`{text}` must be 1 to 64 letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(())
}

/// The hex SHA-256 of a token, as stored in token files.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token (`dtx_` and 64 hex digits: 256 random bits) and the token
/// file line that grants it `role` in `namespace` under `name`.
pub fn new_token(name: &str, role: Role, namespace: &str) -> Result<(String, String), String> {
    check_name(name).map_err(|why| format!("token name {why}"))?;
    check_name(namespace).map_err(|why| format!("namespace {why}"))?;
    let mut secret = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let token = format!("dtx_{}", hex::encode(secret));
    let line = format!("{name} {role} {namespace} sha256:{}", hash_token(&token));
    Ok((token, line))
}

/// ` by token `name``, or nothing for a caller without a token: appended to
/// the history sentences of what a token did.
pub fn by_token(by: Option<&str>) -> String {
    by.map(|name| format!(" by token `{name}`"))
        .unwrap_or_default()
}

/// Parses a role name for the command line.
pub fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
        .ok_or_else(|| format!("unknown role `{text}`: use initiator, reader or operator"))
}

#[cfg(test)]
mod tests;
