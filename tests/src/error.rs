//! The one error type of the test support crate.
//!
//! Tests call the support functions with `.expect(...)`, so every message is
//! written for the person reading a failed CI log: it says what went wrong
//! and, where there is one, the command that fixes it. Nothing here ever
//! turns a missing prerequisite into a skipped test.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

/// The command that builds every Docker image the tests use.
pub const BUILD_IMAGES_COMMAND: &str = "bash tests/images/build-images.sh";

/// A boxed error from a library the support code uses (testcontainers,
/// bollard, sqlx, std).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a piece of test support could not be set up.
///
/// Its `Debug` form is the readable message (with its causes), not the
/// struct: `expect()` prints `Debug`, and a CI log must say what to run.
#[derive(thiserror::Error)]
pub enum TestSupportError {
    /// The Docker engine could not be reached at all.
    #[error(
        "cannot reach the Docker engine at {host}: {source}. Install Docker and start its \
         daemon, then run `{BUILD_IMAGES_COMMAND}` to build the test images"
    )]
    DockerUnavailable {
        /// The Docker host that was tried (`DOCKER_HOST` or the default socket).
        host: String,
        /// What the connection attempt reported.
        #[source]
        source: BoxError,
    },

    /// A Docker image the tests need has not been built on this machine.
    #[error(
        "the Docker image {image} is missing (no image can be pulled here): \
         run `{BUILD_IMAGES_COMMAND}` to build it"
    )]
    ImageMissing {
        /// The image reference, e.g. `dtx-postgres:15`.
        image: String,
    },

    /// A Docker API call failed.
    #[error("docker: could not {action}: {source}")]
    Docker {
        /// What was being done, e.g. "start container dtx-test-postgres".
        action: String,
        /// The error from testcontainers or the Docker API client.
        #[source]
        source: BoxError,
    },

    /// A container started but its service did not become usable in time.
    #[error(
        "{what} did not become ready within {waited:?}: {last_error}\n\
         --- last lines of the container's log ---\n{logs}"
    )]
    NotReady {
        /// What was being waited for, e.g. "PostgreSQL in container dtx-test-pg-1a2b".
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last error seen while probing, or the container's state.
        last_error: String,
        /// The tail of the container's log, to show why.
        logs: String,
    },

    /// A SQL statement the support code needs failed.
    #[error("database: could not {action}: {source}")]
    Database {
        /// What was being done, e.g. "create database dtx_test_...".
        action: String,
        /// The error from sqlx.
        #[source]
        source: BoxError,
    },

    /// cargo could not build a program a test runs.
    #[error("building the programs failed: {why} (command: {command})")]
    Build {
        /// The cargo command that was run.
        command: String,
        /// What went wrong.
        why: String,
    },

    /// A service in a container answered in a way the harness cannot use.
    #[error("{what}: {why}")]
    Service {
        /// Which request, to which service.
        what: String,
        /// What came back, or the transport error.
        why: String,
    },
}

impl fmt::Debug for TestSupportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message already holds the direct cause; add the deeper ones.
        write!(f, "{self}")?;
        let mut cause = self.source().and_then(|direct| direct.source());
        while let Some(error) = cause {
            write!(f, "\n  caused by: {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl TestSupportError {
    /// Wraps a Docker API error with what was being done.
    pub(crate) fn docker(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TestSupportError::Docker {
            action: action.into(),
            source: source.into(),
        }
    }

    /// Wraps a database error with what was being done.
    pub(crate) fn database(action: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TestSupportError::Database {
            action: action.into(),
            source: source.into(),
        }
    }
}
