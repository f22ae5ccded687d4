//! The PostgreSQL of the harness: the single server's container (quick to
//! start, for most scenarios), and the replicated setup: two Patroni nodes (PostgreSQL
//! 15 and Patroni in one container each) with synchronous replication, one
//! etcd for Patroni's leader election, and HAProxy in front, which routes
//! every connection to the node whose Patroni answers 200 to `/primary`
//! (checked every second). Everything comes from Debian's packages (the
//! `dtx-patroni:15` image of tests/images/build-images.sh).
//!
//! Why a proxy: sqlx, which the coordinators and the inventory use, takes
//! one host per connection URL (no multi-host URL with
//! `target_session_attrs=read-write`), and a proxy that follows Patroni's
//! REST API is the setup Patroni's documentation recommends for clients
//! that cannot: no client code, and HAProxy's `on-marked-down
//! shutdown-sessions` cuts every connection to a demoted or dead primary.
//! The proxy is the cluster's [`Node::Postgres`](super::cluster::Node): its
//! container has the name the single server has, so the services' URLs do
//! not change.
//!
//! What it promises (`synchronous_mode: true`, not strict): a commit
//! returns only once the synchronous standby has flushed it, and Patroni
//! promotes only that standby, so a commit acknowledged to a client is on
//! the new primary after a failover. With the standby gone, the primary
//! goes on alone, and the promise shrinks to "no failover to a node that
//! was not synchronous". [`promise`] tests the first part exactly.
//!
//! The faults (`kill -9` of the primary, a switchover) end when a primary
//! serves a write through the proxy again; the former primary then comes
//! back as the synchronous standby by itself (rewound by `pg_rewind`, or
//! copied afresh), and each fault begins by waiting for a synchronous
//! standby, so that every one starts from a replicated cluster.

pub mod promise;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use crate::docker::{Engine, labels, loopback_only, pick_host_port};
use crate::error::TestSupportError;

/// The image of the single server.
pub(super) const SINGLE_IMAGE: (&str, &str) = ("dtx-postgres", "15");
/// The image of every container of the replicated setup.
const PATRONI_IMAGE: (&str, &str) = ("dtx-patroni", "15");
/// Patroni's REST port in its container.
const REST_PORT: u16 = 8008;
/// How long a failover or switchover may take until a primary serves
/// writes through the proxy. Patroni's ttl is 10 s (see the image).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to come up, or to come back as a synchronous
/// standby (crash recovery, then pg_rewind or a fresh copy).
const REPLICATED_TIMEOUT: Duration = Duration::from_secs(120);
/// One attempt to write through the proxy; a commit that waits for a
/// standby that is gone would otherwise hold the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which PostgreSQL a harness cluster runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresSetup {
    /// One server (`dtx-postgres:15`): quick to start; its fault is a
    /// crash and restart.
    #[default]
    Single,
    /// Patroni, etcd and HAProxy (this module): its faults are a failover
    /// and a switchover.
    Replicated,
}

/// The single server's container; the caller names, labels and starts it.
pub(super) fn single_server_request(ready_timeout: Duration) -> ContainerRequest<GenericImage> {
    let (name, tag) = SINGLE_IMAGE;
    GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_startup_timeout(ready_timeout)
}

/// Creates the databases a cluster's services use (`dtx` for the
/// coordinators, `inventory`), connecting as the superuser to `admin_url`.
pub(super) async fn create_databases(admin_url: &str) -> Result<(), TestSupportError> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .map_err(|e| TestSupportError::database("connect to the harness PostgreSQL", e))?;
    for name in ["dtx", "inventory"] {
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .map_err(|e| TestSupportError::database(format!("create database {name}"), e))?;
    }
    Ok(())
}

/// A Patroni node.
struct Instance {
    container: ContainerAsync<GenericImage>,
    /// The container's name, which is also the node's name in Patroni.
    name: String,
    /// A short name for notes and reports (`pg1`, `pg2`).
    label: &'static str,
    /// Patroni's REST port published on 127.0.0.1.
    rest_port: u16,
}

impl Instance {
    /// Starts the Patroni node `{prefix}-{label}`; it bootstraps the
    /// cluster or copies the leader, whichever etcd says.
    async fn start(
        network: &str,
        prefix: &str,
        etcd_name: &str,
        label: &'static str,
    ) -> Result<Instance, TestSupportError> {
        let name = format!("{prefix}-{label}");
        let rest_port = pick_host_port();
        let container = request(network, &name, "patroni", label)
            .with_env_var("PATRONI_NAME", &name)
            .with_env_var("PATRONI_SCOPE", "dtx")
            .with_env_var("PATRONI_ETCD3_HOST", format!("{etcd_name}:2379"))
            .with_env_var(
                "PATRONI_RESTAPI_CONNECT_ADDRESS",
                format!("{name}:{REST_PORT}"),
            )
            .with_env_var("PATRONI_POSTGRESQL_CONNECT_ADDRESS", format!("{name}:5432"))
            .with_mapped_port(rest_port, REST_PORT.tcp())
            .start()
            .await
            .map_err(start_failed(&name))?;
        Ok(Instance {
            container,
            name,
            label,
            rest_port,
        })
    }
}

/// A container of the `dtx-patroni` image on `network`: `program` is the
/// entrypoint's argument (`etcd`, `patroni` or `haproxy`), `role` its label.
fn request(network: &str, name: &str, program: &str, role: &str) -> ContainerRequest<GenericImage> {
    let (image, tag) = PATRONI_IMAGE;
    GenericImage::new(image, tag)
        .with_cmd([program])
        .with_network(network.to_owned())
        .with_container_name(name)
        .with_labels(labels("harness", role))
        .with_host_config_modifier(loopback_only)
}

fn start_failed(
    name: &str,
) -> impl FnOnce(testcontainers::TestcontainersError) -> TestSupportError {
    let name = name.to_owned();
    move |e| TestSupportError::docker(format!("start container {name}"), e)
}

/// The proxy's container, which the cluster keeps as its PostgreSQL node.
pub struct Proxy {
    /// The running container.
    pub container: ContainerAsync<GenericImage>,
    /// Its name (the name services connect to).
    pub name: String,
    /// Its PostgreSQL port published on 127.0.0.1.
    pub host_port: u16,
}

/// A member as Patroni's `GET /cluster` shows it.
#[derive(Debug, Clone, Deserialize)]
struct MemberView {
    name: String,
    /// `leader`, `sync_standby` or `replica`.
    role: String,
    /// `running`, `starting`, `stopped`, `crashed`, ...
    state: String,
}

#[derive(Deserialize)]
struct ClusterView {
    members: Vec<MemberView>,
}

/// Which node was primary, and which its synchronous standby, when a
/// failover or switchover began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// When the primary was killed or the switchover asked for (after the
    /// wait for a synchronous standby).
    pub at: Instant,
    /// The former primary (`pg1` or `pg2`).
    pub from: &'static str,
    /// The synchronous standby when the fault began: the only node Patroni
    /// may promote.
    pub sync_standby: &'static str,
}

/// The etcd and Patroni containers of a replicated PostgreSQL (the proxy
/// is the caller's, see [`PostgresHa::start`]). They are removed when it is
/// dropped.
pub struct PostgresHa {
    engine: Engine,
    /// Kept so that etcd lives as long as the nodes.
    _etcd: ContainerAsync<GenericImage>,
    nodes: [Instance; 2],
    /// The proxy's PostgreSQL port on 127.0.0.1.
    proxy_port: u16,
    /// For Patroni's REST API (no token: it serves only 127.0.0.1 here).
    http: reqwest::Client,
}

impl PostgresHa {
    /// Starts etcd, two Patroni nodes and the proxy on `network`, with
    /// container names `{prefix}-etcd`, `{prefix}-pg1`, `{prefix}-pg2` and
    /// `{prefix}-pg` (the proxy), and waits until a primary with a
    /// synchronous standby serves writes through the proxy.
    pub async fn start(
        network: &str,
        prefix: &str,
    ) -> Result<(PostgresHa, Proxy), TestSupportError> {
        let engine = Engine::connect().await?;
        let (image, tag) = PATRONI_IMAGE;
        // bollard: testcontainers would try to pull a missing image.
        engine.image_id(&format!("{image}:{tag}")).await?;

        let etcd_name = format!("{prefix}-etcd");
        let etcd = request(network, &etcd_name, "etcd", "etcd")
            .with_env_var(
                "ETCD_ADVERTISE_CLIENT_URLS",
                format!("http://{etcd_name}:2379"),
            )
            .with_ready_conditions(vec![WaitFor::message_on_stderr(
                "ready to serve client requests",
            )])
            .with_startup_timeout(REPLICATED_TIMEOUT)
            .start()
            .await
            .map_err(start_failed(&etcd_name))?;
        let nodes = [
            Instance::start(network, prefix, &etcd_name, "pg1").await?,
            Instance::start(network, prefix, &etcd_name, "pg2").await?,
        ];
        let proxy_name = format!("{prefix}-pg");
        let proxy_port = pick_host_port();
        let proxy = request(network, &proxy_name, "haproxy", "pg")
            .with_env_var("DTX_PATRONI_NODE1", &nodes[0].name)
            .with_env_var("DTX_PATRONI_NODE2", &nodes[1].name)
            .with_mapped_port(proxy_port, 5432.tcp())
            .start()
            .await
            .map_err(start_failed(&proxy_name))?;

        let ha = PostgresHa {
            engine,
            _etcd: etcd,
            nodes,
            proxy_port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| TestSupportError::docker("build an HTTP client", e))?,
        };
        ha.wait_replicated(None).await?;
        ha.wait_serving(Instant::now()).await?;
        Ok((
            ha,
            Proxy {
                container: proxy,
                name: proxy_name,
                host_port: proxy_port,
            },
        ))
    }

    /// A URL of `database` through the proxy, for the harness.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.proxy_port
        )
    }

    fn node(&self, name: &str) -> Result<&Instance, TestSupportError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| TestSupportError::Service {
                what: "Patroni's GET /cluster".into(),
                why: format!("it names a member {name} this cluster never started"),
            })
    }

    /// The members as Patroni sees them, from the first node that answers
    /// (a killed node does not).
    async fn members(&self) -> Result<Vec<MemberView>, String> {
        let mut last = String::from("no node was asked");
        for node in &self.nodes {
            let url = format!("http://127.0.0.1:{}/cluster", node.rest_port);
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    return r
                        .json::<ClusterView>()
                        .await
                        .map(|v| v.members)
                        .map_err(|e| format!("{url}: {e}"));
                }
                Ok(r) => last = format!("{url}: HTTP {}", r.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(last)
    }

    /// Waits until a leader runs with a synchronous standby (`standby`, when
    /// given), and returns their names.
    async fn wait_replicated(
        &self,
        standby: Option<&str>,
    ) -> Result<(String, String), TestSupportError> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < REPLICATED_TIMEOUT {
            match self.members().await {
                Ok(members) => {
                    let running = |role: &str| {
                        members
                            .iter()
                            .find(|m| m.role == role && m.state == "running")
                            .map(|m| m.name.clone())
                    };
                    match (running("leader"), running("sync_standby")) {
                        (Some(leader), Some(sync)) if standby.is_none_or(|s| s == sync) => {
                            return Ok((leader, sync));
                        }
                        _ => last = format!("members: {members:?}"),
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(TestSupportError::NotReady {
            what: match standby {
                Some(s) => format!("Patroni with {s} as synchronous standby"),
                None => "Patroni with a leader and a synchronous standby".into(),
            },
            waited: REPLICATED_TIMEOUT,
            last_error: last,
            logs: self.logs().await,
        })
    }

    /// Waits until a write through the proxy commits on a primary, and
    /// returns how long after `since` that was.
    pub async fn wait_serving(&self, since: Instant) -> Result<Duration, TestSupportError> {
        let url = self.url("postgres");
        let mut last = String::from("no attempt finished");
        while since.elapsed() < FAILOVER_TIMEOUT {
            // txid_current() takes a transaction id: it fails on a standby,
            // and its commit waits for the synchronous standby when one is
            // required, like any write.
            let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query("SELECT txid_current()")
                    .execute(&mut conn)
                    .await
                    .map(drop)
            })
            .await;
            match attempt {
                Ok(Ok(())) => return Ok(since.elapsed()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {PROBE_TIMEOUT:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(TestSupportError::NotReady {
            what: "a primary serving writes through HAProxy".into(),
            waited: FAILOVER_TIMEOUT,
            last_error: last,
            logs: self.logs().await,
        })
    }

    /// The node that holds the leader key and runs, by its label.
    pub async fn primary(&self) -> Result<&'static str, TestSupportError> {
        let members = self
            .members()
            .await
            .map_err(|why| TestSupportError::Service {
                what: "Patroni's GET /cluster".into(),
                why,
            })?;
        let leader = members
            .iter()
            .find(|m| m.role == "leader" && m.state == "running")
            .ok_or_else(|| TestSupportError::Service {
                what: "Patroni's GET /cluster".into(),
                why: format!("no running leader: {members:?}"),
            })?;
        Ok(self.node(&leader.name)?.label)
    }

    /// `kill -9` of the primary's container (PostgreSQL and its Patroni at
    /// once), once it has a synchronous standby. The container stays,
    /// stopped; [`PostgresHa::start_again`] starts it again.
    pub async fn kill_primary(&self) -> Result<Handover, TestSupportError> {
        let (leader, sync) = self.wait_replicated(None).await?;
        let node = self.node(&leader)?;
        let at = Instant::now();
        // bollard: testcontainers lacks sending a chosen signal.
        let stopped = self
            .engine
            .signal_and_wait(&node.name, "SIGKILL", Duration::from_secs(30))
            .await?;
        if !stopped {
            return Err(TestSupportError::docker(
                format!("kill container {}", node.name),
                "it was still running 30 s after SIGKILL",
            ));
        }
        Ok(Handover {
            at,
            from: node.label,
            sync_standby: self.node(&sync)?.label,
        })
    }

    /// A switchover through Patroni's REST API (`POST /switchover`) from
    /// the primary to its synchronous standby; it returns once the standby
    /// holds the leader key.
    pub async fn switchover(&self) -> Result<Handover, TestSupportError> {
        let (leader, sync) = self.wait_replicated(None).await?;
        let node = self.node(&leader)?;
        let url = format!("http://127.0.0.1:{}/switchover", node.rest_port);
        let failed = |why: String| TestSupportError::Service {
            what: format!("POST {url}"),
            why,
        };
        let at = Instant::now();
        let answer = self
            .http
            .post(&url)
            .json(&serde_json::json!({"leader": leader, "candidate": sync}))
            // Patroni polls the outcome for up to 20 s before it answers.
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}: {body}")));
        }
        Ok(Handover {
            at,
            from: node.label,
            sync_standby: self.node(&sync)?.label,
        })
    }

    /// Starts the node labelled `label` again if it is stopped. It comes
    /// back as a standby by itself (crash recovery, then `pg_rewind` to the
    /// new timeline, or a fresh copy), which takes a while: whoever needs
    /// it replicated again waits for that ([`PostgresHa::heal`], and every
    /// fault, which begins by waiting for a synchronous standby).
    pub async fn start_again(&self, label: &str) -> Result<(), TestSupportError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.label == label)
            .expect("labels come from this cluster's nodes");
        self.start_if_stopped(node).await
    }

    /// Starts every stopped node and waits until the cluster is replicated
    /// again: the end of whatever a cut-short run left behind.
    pub async fn heal(&self) -> Result<(), TestSupportError> {
        for node in &self.nodes {
            self.start_if_stopped(node).await?;
        }
        self.wait_replicated(None).await.map(drop)
    }

    async fn start_if_stopped(&self, node: &Instance) -> Result<(), TestSupportError> {
        if node.container.is_running().await.unwrap_or(false) {
            return Ok(());
        }
        node.container
            .start()
            .await
            .map_err(|e| TestSupportError::docker(format!("start container {}", node.name), e))
    }

    /// The last lines of each Patroni node's log, for reports.
    pub async fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let mut lines = Vec::new();
            for bytes in [
                node.container.stdout_to_vec().await,
                node.container.stderr_to_vec().await,
            ]
            .into_iter()
            .flatten()
            {
                // Patroni says "no action" once per loop (every second).
                lines.extend(
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .filter(|l| !l.contains("no action."))
                        .map(str::to_owned),
                );
            }
            text.push_str(&format!("--- {} ({}) ---\n", node.label, node.name));
            text.push_str(&lines[lines.len().saturating_sub(40)..].join("\n"));
            text.push('\n');
        }
        text
    }
}
