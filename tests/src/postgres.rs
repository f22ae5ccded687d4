//! PostgreSQL servers for tests, run through testcontainers as containers of
//! the `dtx-postgres:15` image that `tests/images/build-images.sh` builds.
//!
//! This module owns every PostgreSQL container the tests start. There are two
//! ways to get one:
//!
//! * [`fresh_database`] — the common case. It returns the URL of a new, empty
//!   database on ONE server shared by all tests of all test processes
//!   (nextest runs each test in a process of its own, and a container per test
//!   would be far too slow on two cores). The shared container is named
//!   [`SHARED_CONTAINER_NAME`] and is a testcontainers reusable container: it
//!   is left running when the tests end, so that the next test process (and
//!   the next run) reuses it. `.ci/run` removes it at the end of a CI run;
//!   locally, `docker rm -f dtx-test-postgres` does.
//! * [`PostgresServer::start`] — a server of the test's own, for tests that
//!   stop, kill, restart or pause the database. It is removed when the
//!   [`PostgresServer`] is dropped.
//!
//! Both servers run with `max_prepared_transactions = 64` (for 2PC) and with
//! `fsync` on, and listen on a port of 127.0.0.1. Login: user `postgres`,
//! password `postgres`.
//!
//! testcontainers creates, starts, restarts, pauses and removes the
//! containers; bollard (through `crate::docker`) does only what
//! testcontainers 0.28 lacks, as the comment at each use says.

mod shared;

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use crate::docker::{Engine, is_port_conflict, labels, loopback_only, pick_host_port};
use crate::error::TestSupportError;

/// The image every PostgreSQL test container runs.
pub const IMAGE: &str = "dtx-postgres:15";

/// [`IMAGE`]'s name and tag, as testcontainers takes them.
const IMAGE_NAME: &str = "dtx-postgres";
const IMAGE_TAG: &str = "15";

/// The name of the container behind [`fresh_database`], shared by all test
/// processes and left running after them.
pub const SHARED_CONTAINER_NAME: &str = "dtx-test-postgres";

/// The port PostgreSQL listens on inside the container.
const POSTGRES_PORT: u16 = 5432;

/// What PostgreSQL prints (to stderr) when it accepts connections. The image
/// runs no temporary server during initdb, so it is printed once per start.
const READY_MESSAGE: &str = "database system is ready to accept connections";

/// How long a server may take to accept a query after its container starts.
/// initdb with fsync on takes a few seconds; give a loaded CI machine plenty.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one connection attempt may take while waiting for readiness.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`PostgresServer::stop`] lets PostgreSQL shut down before it
/// kills it (what `docker stop` would wait).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a container start is retried when its host port was taken.
const PORT_ATTEMPTS: usize = 10;

/// A PostgreSQL server in a container of its own, for tests that stop,
/// restart or pause the database. The container is removed on drop.
///
/// The host port is chosen when the server is created and stays the same
/// across [`stop`](Self::stop)/[`kill`](Self::kill) and
/// [`start_again`](Self::start_again), so [`url`](Self::url) never changes.
/// (Should another process take the port while the server is stopped,
/// `start_again` fails and says so.) The data directory lives in the
/// container, so it survives a stop or a kill.
#[derive(Debug)]
pub struct PostgresServer {
    /// testcontainers' handle; its drop removes the container. `None` only
    /// while [`PostgresServer`] itself is being dropped.
    container: Option<ContainerAsync<GenericImage>>,
    engine: Engine,
    name: String,
    port: u16,
}

impl PostgresServer {
    /// Starts a new server in a container of its own and waits until it
    /// answers `SELECT 1` on its mapped port.
    ///
    /// Fails with a message naming `bash tests/images/build-images.sh` when
    /// Docker or the image is missing.
    pub async fn start() -> Result<PostgresServer, TestSupportError> {
        let engine = Engine::connect().await?;
        // bollard: testcontainers lacks a local-only image check (it would
        // try to pull the image from a registry this project cannot reach).
        engine.image_id(IMAGE).await?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("dtx-test-postgres-{}", &suffix[..12]);
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = pick_host_port();
            match request(&name, port, "dedicated").start().await {
                Ok(container) => {
                    let server = PostgresServer {
                        container: Some(container),
                        engine,
                        name,
                        port,
                    };
                    server.wait_ready().await?;
                    return Ok(server);
                }
                Err(e) => {
                    // bollard: testcontainers lacks removing a container it
                    // created but could not start (it leaves it behind).
                    engine.remove(&name).await;
                    if !is_port_conflict(&e) {
                        return Err(TestSupportError::docker(
                            format!("start container {name}"),
                            e,
                        ));
                    }
                    // Someone took the port between our check and Docker's bind.
                    last_error = e.to_string();
                }
            }
        }
        Err(TestSupportError::docker(
            format!("start container {name}"),
            format!("no free host port after {PORT_ATTEMPTS} attempts; last: {last_error}"),
        ))
    }

    /// `postgres://postgres:postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        url(self.port, "postgres")
    }

    /// The URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        url(self.port, database)
    }

    /// The host port (on 127.0.0.1) that PostgreSQL is published on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The container's name, e.g. for `docker logs` while debugging.
    pub fn container_name(&self) -> &str {
        &self.name
    }

    /// Stops the server cleanly: PostgreSQL gets SIGINT (a "fast" shutdown:
    /// open sessions are ended, a checkpoint is written) and is killed if it
    /// has not exited after 30 seconds. Returns once the container has exited.
    pub async fn stop(&self) -> Result<(), TestSupportError> {
        // bollard: testcontainers lacks a stop with a chosen signal. Its stop
        // sends Docker's default, SIGTERM: PostgreSQL's "smart" shutdown,
        // which waits for every client to disconnect, so it would end in a
        // kill whenever a test still holds a pool. (The image cannot carry
        // STOPSIGNAL: Docker 20.10's `import --change` refuses it.)
        if self
            .engine
            .signal_and_wait(self.id(), "SIGINT", STOP_TIMEOUT)
            .await?
        {
            return Ok(());
        }
        self.kill().await
    }

    /// Kills the server with SIGKILL, like a crash or a power cut: no
    /// shutdown checkpoint, so the next start runs crash recovery. Returns
    /// once the container has exited.
    pub async fn kill(&self) -> Result<(), TestSupportError> {
        // bollard: testcontainers lacks kill (its stop signals SIGTERM first).
        if self
            .engine
            .signal_and_wait(self.id(), "SIGKILL", Duration::from_secs(30))
            .await?
        {
            return Ok(());
        }
        Err(TestSupportError::docker(
            format!("kill container {}", self.name),
            "it was still running 30 s after SIGKILL",
        ))
    }

    /// Starts the server again after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), on the same port and with the same data, and
    /// waits until it answers `SELECT 1`.
    pub async fn start_again(&self) -> Result<(), TestSupportError> {
        self.container().start().await.map_err(|e| {
            let action = if is_port_conflict(&e) {
                format!(
                    "start container {} again: its host port {} was taken by another \
                     process while it was stopped",
                    self.name, self.port
                )
            } else {
                format!("start container {} again", self.name)
            };
            TestSupportError::docker(action, e)
        })?;
        self.wait_ready().await
    }

    /// Freezes every process of the server (`docker pause`): connections
    /// stay open but nothing is answered, like a stalled or partitioned
    /// host. Clients see timeouts, not errors.
    pub async fn pause(&self) -> Result<(), TestSupportError> {
        self.container()
            .pause()
            .await
            .map_err(|e| TestSupportError::docker(format!("pause container {}", self.name), e))
    }

    /// Thaws a server frozen by [`pause`](Self::pause).
    pub async fn unpause(&self) -> Result<(), TestSupportError> {
        self.container()
            .unpause()
            .await
            .map_err(|e| TestSupportError::docker(format!("unpause container {}", self.name), e))
    }

    fn container(&self) -> &ContainerAsync<GenericImage> {
        self.container
            .as_ref()
            .expect("the container is only taken while dropping")
    }

    fn id(&self) -> &str {
        self.container().id()
    }

    async fn wait_ready(&self) -> Result<(), TestSupportError> {
        let connection = wait_ready(self.container(), &self.name, self.port).await?;
        connection.close().await.ok();
        Ok(())
    }
}

impl Drop for PostgresServer {
    /// Removes the container (and its data) through testcontainers'
    /// `ContainerAsync` drop, which force-removes it by ID whatever its
    /// state: running, stopped, killed, restarted or paused. That drop needs
    /// a tokio runtime; outside one, it gets a runtime of its own here.
    fn drop(&mut self) {
        let Some(container) = self.container.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(container);
        } else if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _entered = runtime.enter();
            drop(container);
        }
    }
}

/// Creates a new, empty database on the shared server and returns its URL,
/// `postgres://postgres:postgres@127.0.0.1:PORT/dtx_test_<uuid>`.
///
/// The shared server is started by the first caller and reused by every
/// other, in this process or another; concurrent first calls are safe (the
/// loser of the race to create the container finds the winner's). It is left
/// running afterwards. Databases are not dropped: the container goes away
/// with `.ci/run`'s clean-up, or with `docker rm -f dtx-test-postgres`.
pub async fn fresh_database() -> Result<String, TestSupportError> {
    let engine = Engine::connect().await?;
    let (container, port) = shared::start(&engine).await?;
    let mut admin = wait_ready(&container, SHARED_CONTAINER_NAME, port).await?;
    let database = format!("dtx_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .await
        .map_err(|e| TestSupportError::database(format!("create database {database}"), e))?;
    admin.close().await.ok();
    Ok(url(port, &database))
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres:postgres@127.0.0.1:{port}/{database}")
}

/// The testcontainers request for a PostgreSQL container named `name` that
/// publishes port 5432 on 127.0.0.1:`host_port`, labelled with `role`
/// ("dedicated" or "shared").
fn request(name: &str, host_port: u16, role: &str) -> ContainerRequest<GenericImage> {
    GenericImage::new(IMAGE_NAME, IMAGE_TAG)
        .with_wait_for(WaitFor::message_on_stderr(READY_MESSAGE))
        .with_mapped_port(host_port, POSTGRES_PORT.tcp())
        .with_host_config_modifier(loopback_only)
        .with_container_name(name)
        .with_labels(labels("postgres", role))
        .with_startup_timeout(READY_TIMEOUT)
}

/// Waits until PostgreSQL in `container` answers `SELECT 1` on `port`, and
/// returns that connection.
///
/// testcontainers waits for [`READY_MESSAGE`] only when it creates a
/// container: not after a restart (the message is already in the log), nor
/// when it hands out a reused container that another process may have
/// started a moment ago. A real query covers every case.
async fn wait_ready(
    container: &ContainerAsync<GenericImage>,
    name: &str,
    port: u16,
) -> Result<PgConnection, TestSupportError> {
    let started = Instant::now();
    let target = url(port, "postgres");
    let mut last_error = String::from("no attempt finished");
    while started.elapsed() < READY_TIMEOUT {
        match tokio::time::timeout(PROBE_TIMEOUT, probe(&target)).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("no answer within {PROBE_TIMEOUT:?}"),
        }
        // Fail at once, with the log, if the server has died.
        let running = container
            .is_running()
            .await
            .map_err(|e| TestSupportError::docker(format!("inspect container {name}"), e))?;
        if !running {
            return Err(TestSupportError::NotReady {
                what: format!("PostgreSQL in container {name}"),
                waited: started.elapsed(),
                last_error: format!("the container has exited ({last_error})"),
                logs: log_tail(container).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(TestSupportError::NotReady {
        what: format!("PostgreSQL in container {name}"),
        waited: started.elapsed(),
        last_error,
        logs: log_tail(container).await,
    })
}

async fn probe(url: &str) -> Result<PgConnection, sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    sqlx::query("SELECT 1").execute(&mut connection).await?;
    Ok(connection)
}

/// The last 30 lines of the container's stderr (where PostgreSQL logs), for
/// error messages. Never fails: a log that cannot be read says so instead.
async fn log_tail(container: &ContainerAsync<GenericImage>) -> String {
    match container.stderr_to_vec().await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_name_and_tag_make_the_image() {
        assert_eq!(format!("{IMAGE_NAME}:{IMAGE_TAG}"), IMAGE);
    }
}
