//! The bollard side of the Docker support: the few container operations that
//! testcontainers 0.28 lacks, and the helpers every kind of test server
//! shares.
//!
//! Containers are created and started through testcontainers (see
//! `postgres.rs`). bollard, the Docker API client testcontainers itself is
//! built on, is used only where testcontainers has no operation: checking
//! that an image exists locally (testcontainers would try to pull it from a
//! registry, which this project cannot reach), sending a chosen signal,
//! and inspecting, unpausing or removing a container found by name rather
//! than one testcontainers handed us. Each call site says which it is.
//!
//! API version: bollard 0.21 defaults to API 1.53 while this project's engine
//! (Docker 20.10) serves at most 1.41 and refuses requests to `/v1.53/...`.
//! bollard sends its request paths without the version prefix, though (it
//! joins an absolute path onto the versioned base URL, which drops the
//! prefix), and the engine answers unversioned requests at its own API
//! version. So no negotiation is needed, here or in testcontainers; should a
//! later bollard start sending the prefix, every test here fails at once with
//! "client version ... is too new".
//!
//! One client serves every tokio runtime: bollard keeps no idle connections
//! (`pool_max_idle_per_host(0)`), so each request opens its connection on the
//! runtime that makes it.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{KillContainerOptions, RemoveContainerOptions};

use crate::error::TestSupportError;

/// The engine the CLI uses when `DOCKER_HOST` is not set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// A bollard connection to the Docker engine.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    /// The bollard client.
    pub(crate) docker: Docker,
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST` (or the default socket)
    /// and checks that it answers, so that a missing engine is reported as
    /// such before testcontainers is asked for anything.
    pub(crate) async fn connect() -> Result<Engine, TestSupportError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_owned());
        let unavailable = |source: BollardError| TestSupportError::DockerUnavailable {
            host: host.clone(),
            source: Box::new(source),
        };
        let docker = Docker::connect_with_defaults().map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        Ok(Engine { docker })
    }

    /// The ID of a local image, or [`TestSupportError::ImageMissing`].
    /// (testcontainers lacks a local-only check: it pulls a missing image.)
    pub(crate) async fn image_id(&self, image: &str) -> Result<String, TestSupportError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => inspect.id.ok_or_else(|| {
                TestSupportError::docker(
                    format!("inspect image {image}"),
                    "the engine returned no image ID",
                )
            }),
            Err(e) if status(&e) == Some(404) => Err(TestSupportError::ImageMissing {
                image: image.to_owned(),
            }),
            Err(e) => Err(TestSupportError::docker(
                format!("inspect image {image}"),
                e,
            )),
        }
    }

    /// Inspects a container by name or ID; `None` if there is none.
    pub(crate) async fn inspect(
        &self,
        container: &str,
    ) -> Result<Option<ContainerInspectResponse>, TestSupportError> {
        match self.docker.inspect_container(container, None).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(TestSupportError::docker(
                format!("inspect container {container}"),
                e,
            )),
        }
    }

    /// Sends `signal` to the main process of a running container and waits
    /// up to `timeout` for the container to exit. Returns whether it did.
    /// A container that is not running counts as exited.
    pub(crate) async fn signal_and_wait(
        &self,
        container: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<bool, TestSupportError> {
        let options = KillContainerOptions {
            signal: signal.to_owned(),
        };
        if let Err(e) = self.docker.kill_container(container, Some(options)).await {
            // 409: not running (fine), or paused (an error, reported below).
            if status(&e) != Some(409) || is_up(self.inspect(container).await?.as_ref()) {
                return Err(TestSupportError::docker(
                    format!("send {signal} to container {container}"),
                    e,
                ));
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            if !is_up(self.inspect(container).await?.as_ref()) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes a container (and its anonymous volumes) by name or ID,
    /// ignoring errors: it may already be gone, or be being removed by
    /// another process.
    pub(crate) async fn remove(&self, container: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = self.docker.remove_container(container, Some(options)).await;
    }
}

/// The state of an inspected container.
pub(crate) fn state_of(info: &ContainerInspectResponse) -> ContainerStateStatusEnum {
    info.state
        .as_ref()
        .and_then(|state| state.status)
        .unwrap_or(ContainerStateStatusEnum::EMPTY)
}

/// Whether a container exists and its process runs (or is paused).
fn is_up(info: Option<&ContainerInspectResponse>) -> bool {
    info.is_some_and(|info| {
        matches!(
            state_of(info),
            ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::PAUSED
                | ContainerStateStatusEnum::RESTARTING
        )
    })
}

/// The HTTP status of an error the engine answered with, if it did.
pub(crate) fn status(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Container labels that mark everything this crate starts, so that `.ci/run`
/// can remove leftovers with `docker rm -f $(docker ps -aq --filter label=org.dtx.test)`.
pub(crate) fn labels(kind: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        ("org.dtx.test".to_owned(), kind.to_owned()),
        ("org.dtx.test.role".to_owned(), role.to_owned()),
    ])
}

/// A TCP port on 127.0.0.1 that is free right now, for a container's
/// published port. We choose the host port ourselves (rather than letting
/// Docker pick one) so that a stopped and restarted container keeps it: an
/// ephemeral binding may get a different port on every start. Ports come from below
/// Linux's ephemeral range (32768-60999), so the kernel does not hand the
/// same port to an outgoing connection while the container is stopped.
/// Another process can still take the port before Docker binds it: callers
/// retry with a new port when the start fails with "port is already allocated".
pub(crate) fn pick_host_port() -> u16 {
    const LOW: u16 = 20000;
    const HIGH: u16 = 32000;
    loop {
        let random = uuid::Uuid::new_v4().as_u128();
        let port = LOW + (random % u128::from(HIGH - LOW)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether starting a container failed because its host port is taken
/// (from the error's text: testcontainers wraps the engine's error).
pub(crate) fn is_port_conflict(error: &dyn Display) -> bool {
    let text = error.to_string();
    text.contains("port is already allocated") || text.contains("address already in use")
}

/// testcontainers publishes a mapped port on every interface; this keeps it
/// to the loopback interface (the tests are the only clients from outside).
/// Pass it to `with_host_config_modifier`.
pub(crate) fn loopback_only(host_config: &mut bollard::models::HostConfig) {
    let bindings = host_config
        .port_bindings
        .iter_mut()
        .flat_map(|ports| ports.values_mut());
    for binding in bindings.flatten().flatten() {
        binding.host_ip = Some("127.0.0.1".to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_below_the_ephemeral_range() {
        for _ in 0..20 {
            let port = pick_host_port();
            assert!((20000..32000).contains(&port), "{port}");
        }
    }
}
