//! Test support for dtx, shared by the integration tests of every crate in
//! the workspace:
//!
//! * [`postgres`]: PostgreSQL servers in Docker containers, started through
//!   testcontainers from the `dtx-postgres:15` image that
//!   `tests/images/build-images.sh` builds (this project's machines cannot
//!   pull images from a registry): a fresh database on a server shared by
//!   all tests, or a server of a test's own to stop, kill or pause.
//! * [`participant`]: a scriptable fake participant, a real HTTP server that
//!   answers the coordinator's branch calls as a test scripts them and
//!   records every call.
//! * [`in_process`]: an axum router called without a listener, its answer
//!   read as status, content type and JSON.
//! * [`process`]: a real `dtx` coordinator process, started and signalled
//!   (killed, stopped, frozen) by end-to-end tests, with a small JSON client.
//!
//! * [`harness`]: the container fault-injection harness: coordinators and
//!   participants as containers that a nemesis kills, pauses, cuts off and
//!   slows down, a workload, and the consistency checker.
//!
//! Everything here fails loudly: when Docker or an image is missing, the
//! error says which command to run, and tests `expect()` it rather than skip.

mod docker;
mod error;
pub mod harness;
pub mod in_process;
pub mod participant;
pub mod postgres;
pub mod process;

pub use error::{BUILD_IMAGES_COMMAND, BoxError, TestSupportError};
