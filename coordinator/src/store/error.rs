//! What the store's operations fail with: [`StoreError`], in terms a caller
//! can act on, and its [`Cause`], the error beneath it kept whole.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Errors of every backend, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The transaction does not exist.
    #[error("transaction not found")]
    NotFound,
    /// A fenced write named an owner or epoch that no longer holds: another
    /// coordinator owns the transaction now. The writer must stop driving it.
    #[error("fenced out: another coordinator owns the transaction now")]
    Fenced,
    /// The write's precondition failed (for example, branches were registered
    /// that the writer did not know of). Reload and try again.
    #[error("conflict: {0}")]
    Conflict(#[source] Cause),
    /// The database cannot be reached or refused the operation for a reason
    /// that may pass (connection lost, busy, shutting down). Retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The caller passed something the store cannot use (a listing cursor
    /// it did not make); the sentence says what.
    #[error("{0}")]
    InvalidInput(String),
    /// Anything else: corrupt rows, a bug. Not worth retrying.
    #[error("store error: {0}")]
    Other(#[source] Cause),
}

/// Why a store operation failed, beneath its kind: the error that caused it
/// (the database driver's, the JSON encoder's), or a sentence of the
/// store's own when nothing else did.
///
/// It reads as that error's sentence, and stands for it in the chain of
/// sources (its own `source` is that error's source), so a chain reads
/// "database unavailable: <the driver's sentence>", then what caused that.
/// Code that must know more gets the error itself ([`Cause::error`]) and
/// downcasts it, to `sqlx::Error` or `rusqlite::Error` say. Shared, not
/// boxed: a batch that fails hands the same cause to each of its writes.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

impl Cause {
    /// `error`, kept whole.
    pub fn of(error: impl Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(error))
    }

    /// `error`, which the store explains with `sentence` ("cannot migrate
    /// the database"): reads "sentence: error".
    pub fn explained(
        sentence: impl Into<String>,
        error: impl Error + Send + Sync + 'static,
    ) -> Cause {
        Cause::of(Explained {
            sentence: sentence.into(),
            source: Box::new(error),
        })
    }

    /// The error beneath, to downcast:
    /// `cause.error().downcast_ref::<sqlx::Error>()`.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// A sentence of the store's own, with no error beneath it.
impl From<String> for Cause {
    fn from(sentence: String) -> Cause {
        Cause(Arc::from(Box::<dyn Error + Send + Sync>::from(sentence)))
    }
}

/// A sentence of the store's own, with no error beneath it.
impl From<&str> for Cause {
    fn from(sentence: &str) -> Cause {
        Cause::from(sentence.to_owned())
    }
}

/// An error and the store's sentence about it.
#[derive(Debug, thiserror::Error)]
#[error("{sentence}: {source}")]
struct Explained {
    sentence: String,
    source: Box<dyn Error + Send + Sync + 'static>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_reads_as_its_error_and_keeps_it_whole() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = StoreError::Unavailable(Cause::of(io));
        assert_eq!(e.to_string(), "database unavailable: reset by peer");
        let Some(cause) = e.source() else {
            panic!("no source")
        };
        assert_eq!(cause.to_string(), "reset by peer");
        let StoreError::Unavailable(cause) = &e else {
            unreachable!()
        };
        let io = cause.error().downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn an_explained_cause_keeps_the_sentence_and_the_error() {
        let parse = "x".parse::<i64>().unwrap_err();
        let e = StoreError::Other(Cause::explained("cannot read the epoch", parse));
        assert_eq!(
            e.to_string(),
            "store error: cannot read the epoch: invalid digit found in string"
        );
        let cause = e.source().unwrap();
        assert_eq!(
            cause.source().unwrap().to_string(),
            "invalid digit found in string"
        );
        let own = StoreError::Conflict("the branch count changed".into());
        assert_eq!(own.to_string(), "conflict: the branch count changed");
    }
}
