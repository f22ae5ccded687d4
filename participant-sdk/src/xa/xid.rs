//! The PostgreSQL transaction identifier (`PREPARE TRANSACTION '<xid>'`) of a
//! branch, derived from its gid and branch id, and the start-up check that
//! prepared transactions are enabled at all.

use std::fmt;

/// The prefix of every xid this SDK prepares; recovery only touches
/// prepared transactions that carry it.
pub const XID_PREFIX: &str = "dtx-";

/// PostgreSQL's limit on a prepared transaction's identifier (GIDSIZE
/// minus the terminating NUL).
const PG_GID_MAX: usize = 199;

/// The identifier of one branch's prepared transaction: `dtx-` followed by
/// the lowercase hex SHA-256 of the length-prefixed gid and the branch id.
///
/// - *No collisions between branches*: the gid's length comes first, so
///   (gid `a:b`, branch `c`) and (gid `a`, branch `b:c`) hash different
///   bytes; SHA-256 makes accidental equality of different pairs negligible.
/// - *No SQL injection*: `PREPARE TRANSACTION`, `COMMIT PREPARED` and
///   `ROLLBACK PREPARED` take no bind parameters, so the xid is put in a
///   string literal. It only ever holds `dtx-` and hex digits, which
///   the SDK checks again before any SQL is built.
/// - *Within PostgreSQL's 199-byte limit*: 68 bytes, whatever the length of
///   gid and branch id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid(String);

impl Xid {
    /// The xid of branch `branch_id` of transaction `gid`.
    pub fn of(gid: &str, branch_id: &str) -> Xid {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update((gid.len() as u64).to_be_bytes());
        hash.update(gid.as_bytes());
        hash.update(branch_id.as_bytes());
        Xid(format!("{XID_PREFIX}{}", hex::encode(hash.finalize())))
    }

    /// An xid read back from `pg_prepared_xacts`, if it is one of ours.
    pub(crate) fn parse(text: &str) -> Option<Xid> {
        is_safe(text).then(|| Xid(text.to_owned()))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier as an SQL string literal, e.g. `'dtx-3f…'`.
    ///
    /// # Panics
    /// If the identifier is not `dtx-` and hex digits. [`Xid::of`] and
    /// [`Xid::parse`] never make such a value; the check is the last line
    /// of defence before text is pasted into SQL.
    pub(crate) fn literal(&self) -> String {
        assert!(
            is_safe(&self.0),
            "refusing an unsafe xid in SQL: {:?}",
            self.0
        );
        format!("'{}'", self.0)
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_safe(text: &str) -> bool {
    text.len() <= PG_GID_MAX
        && text.strip_prefix(XID_PREFIX).is_some_and(|hex| {
            !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Reads the value of `SHOW max_prepared_transactions`: `Ok(n)` when
/// prepared transactions are enabled (`n > 0`), otherwise the reason.
pub(crate) fn check_max_prepared(value: &str) -> Result<i64, String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(n) => Err(format!(
            "max_prepared_transactions is {n}, so PostgreSQL refuses PREPARE TRANSACTION; \
             set it above 0 (at least max_connections is safe) in postgresql.conf, or start \
             the server with `-c max_prepared_transactions=64`, then restart PostgreSQL"
        )),
        Err(_) => Err(format!(
            "cannot read max_prepared_transactions: SHOW answered `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_is_only_hex_under_the_limit_and_stable() {
        let xid = Xid::of("order-1", "stock");
        assert_eq!(xid, Xid::of("order-1", "stock"));
        assert_eq!(xid.as_str().len(), 68);
        assert!(is_safe(xid.as_str()));
        let long = Xid::of(&"g".repeat(10_000), &"b".repeat(10_000));
        assert!(long.as_str().len() <= PG_GID_MAX);
    }

    #[test]
    fn xid_separates_gid_and_branch() {
        assert_ne!(Xid::of("a:b", "c"), Xid::of("a", "b:c"));
        assert_ne!(Xid::of("ab", ""), Xid::of("a", "b"));
        assert_ne!(Xid::of("a\0", "b"), Xid::of("a", "\0b"));
    }

    #[test]
    fn parse_accepts_only_our_charset() {
        assert!(Xid::parse(Xid::of("g", "b").as_str()).is_some());
        for bad in [
            "dtx-",
            "dtx-ABC",
            "dtx-12'; DROP TABLE x; --",
            "other-12",
            "dtx-1 2",
        ] {
            assert!(Xid::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn max_prepared_transactions_must_be_positive() {
        assert_eq!(check_max_prepared("64"), Ok(64));
        let off = check_max_prepared("0").unwrap_err();
        assert!(off.contains("max_prepared_transactions"), "{off}");
        assert!(off.contains("postgresql.conf"), "{off}");
        assert!(off.contains("-c max_prepared_transactions="), "{off}");
        assert!(check_max_prepared("lots").is_err());
    }
}
