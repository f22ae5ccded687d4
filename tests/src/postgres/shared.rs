//! The shared PostgreSQL container behind [`fresh_database`](super::fresh_database).
//!
//! It is a testcontainers reusable container ([`ReuseDirective::Always`]) with
//! a fixed name: testcontainers finds it by name and labels, in this process
//! or another, starts it if it is stopped, and never removes it on drop.
//! Among its labels is the ID of the image it runs, so a container made from
//! an older build of the image is not reused but replaced.
//!
//! Several test processes may ask for it at the same moment. When both find
//! none, both create it; the engine refuses the second name (409), and the
//! loser repairs nothing and simply asks again, finding the winner's. The
//! other failures are repaired here with bollard and then retried too.

use std::time::{Duration, Instant};

use bollard::models::ContainerStateStatusEnum;
use testcontainers::core::IntoContainerPort;
use testcontainers::core::error::ClientError;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt, ReuseDirective, TestcontainersError};

use super::{IMAGE, POSTGRES_PORT, READY_TIMEOUT, SHARED_CONTAINER_NAME, request};
use crate::docker::{Engine, is_port_conflict, labels, pick_host_port, state_of, status};
use crate::error::TestSupportError;

/// The label that holds the ID of the image the shared container runs.
const IMAGE_LABEL: &str = "org.dtx.test.image";

/// The label testcontainers puts on every container it creates (and looks
/// for when it reuses one).
const MANAGED_BY_LABEL: (&str, &str) = ("org.testcontainers.managed-by", "testcontainers");

/// Returns the running shared container and its host port, starting,
/// replacing or thawing the container as needed.
pub(super) async fn start(
    engine: &Engine,
) -> Result<(ContainerAsync<GenericImage>, u16), TestSupportError> {
    // bollard: testcontainers lacks a local-only image check (it would try
    // to pull the image from a registry this project cannot reach).
    let image_id = engine.image_id(IMAGE).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let attempt = request(SHARED_CONTAINER_NAME, pick_host_port(), "shared")
            .with_label(IMAGE_LABEL, &image_id)
            .with_reuse(ReuseDirective::Always)
            .start()
            .await;
        let error = match attempt {
            Ok(container) => {
                let port = container
                    .get_host_port_ipv4(POSTGRES_PORT.tcp())
                    .await
                    .map_err(|e| {
                        TestSupportError::docker(
                            format!("find the host port of container {SHARED_CONTAINER_NAME}"),
                            e,
                        )
                    })?;
                return Ok((container, port));
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(TestSupportError::NotReady {
                what: format!("the shared container {SHARED_CONTAINER_NAME}"),
                waited: READY_TIMEOUT,
                last_error: error.to_string(),
                logs: String::from("(see `docker logs dtx-test-postgres`)"),
            });
        }
        repair(engine, &image_id, error).await?;
    }
}

/// Makes the next attempt possible after `error`, or returns the error if
/// no retry can help.
async fn repair(
    engine: &Engine,
    image_id: &str,
    error: TestcontainersError,
) -> Result<(), TestSupportError> {
    let fatal = |error: TestcontainersError| {
        TestSupportError::docker(
            format!(
                "start the shared container {SHARED_CONTAINER_NAME} (if it is broken, remove it \
                 with `docker rm -f {SHARED_CONTAINER_NAME}`)"
            ),
            error,
        )
    };
    let TestcontainersError::Client(client_error) = &error else {
        // It did not become ready (testcontainers' error holds its log).
        return Err(fatal(error));
    };
    let start_failed = match client_error {
        ClientError::CreateContainer(e) if status(e) == Some(409) => false,
        ClientError::StartContainer(_) => true,
        _ => return Err(fatal(error)),
    };
    // bollard: testcontainers lacks looking up a container by name that it
    // did not find for reuse (and unpausing or removing it).
    let Some(info) = engine.inspect(SHARED_CONTAINER_NAME).await? else {
        // Removed in the meantime (by another process's repair): try again.
        return Ok(());
    };
    let id = info.id.clone().unwrap_or_default();
    let state = state_of(&info);
    if !has_our_labels(&info, image_id) {
        // Of an older build of the image, or not made by testcontainers
        // (say, by an older version of this crate): replace it, by ID, so a
        // racing process that has already replaced it loses nothing.
        engine.remove(&id).await;
    } else if state == ContainerStateStatusEnum::PAUSED {
        let _ = engine.docker.unpause_container(&id).await;
    } else if state == ContainerStateStatusEnum::DEAD
        || (start_failed && is_port_conflict(&error) && state != ContainerStateStatusEnum::RUNNING)
    {
        // Its host port was taken before the first start: make a new one on
        // another port. Or it is beyond repair.
        engine.remove(&id).await;
    } else {
        // Another process created it and is starting it: give it a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Whether an inspected container has every label testcontainers looks for
/// when it reuses the shared container.
fn has_our_labels(info: &bollard::models::ContainerInspectResponse, image_id: &str) -> bool {
    let Some(found) = info.config.as_ref().and_then(|c| c.labels.as_ref()) else {
        return false;
    };
    let mut wanted = labels("postgres", "shared");
    wanted.insert(IMAGE_LABEL.to_owned(), image_id.to_owned());
    wanted.insert(MANAGED_BY_LABEL.0.to_owned(), MANAGED_BY_LABEL.1.to_owned());
    wanted
        .iter()
        .all(|(key, value)| found.get(key) == Some(value))
}
