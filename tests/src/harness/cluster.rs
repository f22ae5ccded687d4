//! One cluster of the harness: PostgreSQL, two coordinators sharing it, the
//! inventory service and the order service, each in a container of its own
//! on a private Docker network. The operations the nemesis needs (kill,
//! start again, pause, resume, disconnect, reconnect, add latency) are in
//! `faults`, what the containers say about themselves (logs, state) in
//! `logs`.
//!
//! Containers reach each other by container name on the private network.
//! The harness reaches each service through a port published on 127.0.0.1
//! (chosen here and kept across restarts, so a service's URL never changes).
//!
//! Databases: the coordinators share the `dtx` database; the inventory has
//! its own (`inventory`, on the same server); the order service keeps a
//! SQLite file inside its container. PostgreSQL is one server, or (chosen by
//! [`ClusterOptions::postgres`]) a primary and a synchronous standby behind
//! a proxy with the same name ([`super::postgres_ha`]). testcontainers
//! creates, starts, stops, pauses and removes containers; bollard (through
//! `crate::docker`) does only what testcontainers 0.28 lacks: SIGKILL, and
//! network disconnect/connect.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use testcontainers::CopyTargetOptions;
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

mod faults;
mod logs;

use super::binaries::Binaries;
use super::credentials::Credentials;
use super::postgres_ha::{self, PostgresHa, PostgresSetup};
use crate::docker::{Engine, labels, loopback_only, pick_host_port};
use crate::error::TestSupportError;

/// The image every service but PostgreSQL runs (tests/images/build-images.sh).
const RUNTIME_IMAGE: (&str, &str) = ("dtx-runtime", "bookworm");
/// Where the coordinators find their token file.
const TOKENS_PATH: &str = "/etc/dtx/tokens";
/// How long a service may take to answer after its container starts.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a coordinator's lease lasts in the harness: short, so that a
/// takeover happens within a scenario.
pub const LEASE_MS: u64 = 3000;

/// A service of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// The PostgreSQL server.
    Postgres,
    /// The first coordinator, the one the nemesis strikes.
    Coordinator1,
    /// The second coordinator: the services use both, and it takes over
    /// the first one's transactions when their leases lapse.
    Coordinator2,
    /// The sample inventory service.
    Inventory,
    /// The sample order service.
    Orders,
}

impl Node {
    /// Every node, in start order.
    pub const ALL: [Node; 5] = [
        Node::Postgres,
        Node::Coordinator1,
        Node::Coordinator2,
        Node::Inventory,
        Node::Orders,
    ];

    /// The short name used in container names, reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Node::Postgres => "pg",
            Node::Coordinator1 => "c1",
            Node::Coordinator2 => "c2",
            Node::Inventory => "inventory",
            Node::Orders => "orders",
        }
    }

    /// The port the service listens on inside its container.
    fn port(self) -> u16 {
        match self {
            Node::Postgres => 5432,
            Node::Coordinator1 | Node::Coordinator2 => 7707,
            Node::Inventory => 7710,
            Node::Orders => 7711,
        }
    }

    /// A GET that answers 200 once the service works.
    fn ready_path(self) -> &'static str {
        match self {
            Node::Postgres => "",
            Node::Coordinator1 | Node::Coordinator2 => "/readyz",
            Node::Inventory => "/products",
            Node::Orders => "/orders",
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the services are configured; targeted scenarios change it (a short
/// 3PC timeout, a deliberately broken participant).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The inventory's 3PC participant timeout. The default is longer than
    /// any outage the nemesis causes, so the timeout rule never fires in a
    /// crash-only scenario (see docs/two-and-three-phase.md).
    pub three_phase_timeout: Duration,
    /// Appended to the inventory service's arguments.
    pub inventory_args: Vec<String>,
    /// Appended to the order service's arguments.
    pub orders_args: Vec<String>,
    /// One PostgreSQL server (the default: quick to start), or a primary
    /// and a synchronous standby behind a proxy (Patroni; its faults are a
    /// failover and a switchover).
    pub postgres: PostgresSetup,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            three_phase_timeout: Duration::from_secs(15),
            inventory_args: vec![],
            orders_args: vec![],
            postgres: PostgresSetup::Single,
        }
    }
}

/// A running container of the cluster.
struct Member {
    container: ContainerAsync<GenericImage>,
    name: String,
    host_port: u16,
}

/// A whole system under test. Its containers and network are removed when it
/// is dropped.
pub struct Cluster {
    engine: Engine,
    /// The private network's name.
    network: String,
    members: HashMap<Node, Member>,
    /// The Patroni nodes and etcd of the replicated setup (whose proxy is
    /// the `Node::Postgres` member).
    postgres_ha: Option<PostgresHa>,
    http: reqwest::Client,
}

impl Cluster {
    /// Creates the network and starts every service, waiting until each
    /// answers. `run` makes the container names unique (a scenario name and
    /// a seed, say).
    pub async fn start(
        binaries: &Binaries,
        run: &str,
        options: &ClusterOptions,
    ) -> Result<Cluster, TestSupportError> {
        let engine = Engine::connect().await?;
        let keys = Credentials::create(&binaries.dtx)?;
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", keys.harness_token)
                .parse()
                .map_err(|e| TestSupportError::docker("make the harness's token header", e))?,
        );
        for (name, tag) in [RUNTIME_IMAGE, postgres_ha::SINGLE_IMAGE] {
            // bollard: testcontainers lacks a local-only image check (it
            // would try to pull from a registry this machine cannot reach).
            engine.image_id(&format!("{name}:{tag}")).await?;
        }
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let prefix = format!("dtx-h-{}-{suffix}", sanitize(run));
        let mut cluster = Cluster {
            engine,
            network: format!("{prefix}-net"),
            members: HashMap::new(),
            postgres_ha: None,
            // Its token lets the harness read the coordinators; the other
            // services ignore it.
            http: reqwest::Client::builder()
                .default_headers(auth)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| TestSupportError::docker("build an HTTP client", e))?,
        };
        let pg_name = format!("{prefix}-pg");
        let pg = |db: &str| format!("postgres://postgres:postgres@{pg_name}:5432/{db}");
        for node in Node::ALL {
            if node == Node::Postgres && options.postgres == PostgresSetup::Replicated {
                cluster.start_replicated_postgres(&prefix).await?;
                continue;
            }
            let name = format!("{prefix}-{node}");
            let host_port = pick_host_port();
            let request = match node {
                Node::Postgres => postgres_ha::single_server_request(READY_TIMEOUT),
                Node::Coordinator1 | Node::Coordinator2 => runtime_request(
                    &binaries.dtx,
                    "/usr/local/bin/dtx",
                    vec![
                        "serve".to_owned(),
                        "--tokens".into(),
                        TOKENS_PATH.into(),
                        "--signing-key".into(),
                        keys.coordinator_key.clone(),
                        "--listen".into(),
                        "0.0.0.0:7707".into(),
                        "--db".into(),
                        pg("dtx"),
                        "--node-id".into(),
                        node.to_string(),
                        "--lease-ms".into(),
                        LEASE_MS.to_string(),
                        "--claim-interval-ms".into(),
                        "500".into(),
                        // The engine's debug lines name gids (a driver
                        // finished, stopped, fenced): a violation's evidence.
                        "--log".into(),
                        "info,dtx_coordinator::engine=debug".into(),
                    ],
                )
                .with_copy_to(TOKENS_PATH, keys.tokens_file.clone()),
                Node::Inventory => runtime_request(
                    &binaries.inventory,
                    "/usr/local/bin/inventory-service",
                    [
                        "--listen".to_owned(),
                        "0.0.0.0:7710".into(),
                        "--db".into(),
                        pg("inventory"),
                        // Both coordinators: the SDK's client spreads
                        // requests over them and fails over between them.
                        "--coordinator".into(),
                        format!("http://{prefix}-c1:7707,http://{prefix}-c2:7707"),
                        "--three-phase-timeout-ms".into(),
                        options.three_phase_timeout.as_millis().to_string(),
                        "--coordinator-token".into(),
                        keys.inventory_token.clone(),
                        "--coordinator-key".into(),
                        keys.coordinator_key.clone(),
                        "--accept-key".into(),
                        keys.orders_key.clone(),
                        // The nemesis arms faults; the targeted runs read the call log.
                        "--fault-injection".into(),
                    ]
                    .into_iter()
                    .chain(options.inventory_args.iter().cloned())
                    .collect(),
                ),
                Node::Orders => runtime_request(
                    &binaries.orders,
                    "/usr/local/bin/order-service",
                    vec![
                        "--listen".to_owned(),
                        "0.0.0.0:7711".into(),
                        "--db".into(),
                        "sqlite:/var/lib/dtx/orders.db".into(),
                        // Both coordinators: the SDK's client spreads
                        // requests over them and fails over between them.
                        "--coordinator".into(),
                        format!("http://{prefix}-c1:7707,http://{prefix}-c2:7707"),
                        "--inventory".into(),
                        format!("http://{prefix}-inventory:7710"),
                        "--public-url".into(),
                        format!("http://{prefix}-orders:7711"),
                        "--coordinator-token".into(),
                        keys.orders_token.clone(),
                        "--signing-key".into(),
                        keys.orders_key.clone(),
                        "--accept-key".into(),
                        keys.coordinator_key.clone(),
                    ]
                    .into_iter()
                    .chain(options.orders_args.iter().cloned())
                    .collect(),
                ),
            };
            let container = request
                .with_mapped_port(host_port, node.port().tcp())
                .with_host_config_modifier(loopback_only)
                .with_network(cluster.network.clone())
                .with_container_name(&name)
                .with_labels(labels("harness", node.as_str()))
                .start()
                .await
                .map_err(|e| TestSupportError::docker(format!("start container {name}"), e))?;
            cluster.members.insert(
                node,
                Member {
                    container,
                    name,
                    host_port,
                },
            );
            cluster.wait_ready(node).await?;
            if node == Node::Postgres {
                postgres_ha::create_databases(&cluster.postgres_url("postgres")).await?;
            }
        }
        Ok(cluster)
    }

    /// Starts the replicated PostgreSQL; its proxy, named as the single
    /// server would be, becomes the `Node::Postgres` member.
    async fn start_replicated_postgres(&mut self, prefix: &str) -> Result<(), TestSupportError> {
        let (ha, proxy) = PostgresHa::start(&self.network, prefix).await?;
        self.postgres_ha = Some(ha);
        let member = Member {
            container: proxy.container,
            name: proxy.name,
            host_port: proxy.host_port,
        };
        self.members.insert(Node::Postgres, member);
        self.wait_ready(Node::Postgres).await?;
        postgres_ha::create_databases(&self.postgres_url("postgres")).await
    }

    /// The replicated PostgreSQL, when the cluster runs it.
    pub fn postgres_ha(&self) -> Option<&PostgresHa> {
        self.postgres_ha.as_ref()
    }

    fn member(&self, node: Node) -> &Member {
        self.members
            .get(&node)
            .expect("every node is started in Cluster::start")
    }

    /// The base URL the harness reaches `node` at, e.g. `http://127.0.0.1:21345`.
    pub fn url(&self, node: Node) -> String {
        format!("http://127.0.0.1:{}", self.member(node).host_port)
    }

    /// A PostgreSQL URL of `database` for the harness (through 127.0.0.1).
    pub fn postgres_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.member(Node::Postgres).host_port
        )
    }

    /// The HTTP client the harness uses for every service.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Waits until `node` answers: a query for PostgreSQL, a 200 on its
    /// ready path for the others.
    pub async fn wait_ready(&self, node: Node) -> Result<(), TestSupportError> {
        let started = Instant::now();
        let mut last_error = String::from("no attempt finished");
        while started.elapsed() < READY_TIMEOUT {
            let attempt = if node == Node::Postgres {
                PgConnection::connect(&self.postgres_url("postgres"))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            } else {
                let url = format!("{}{}", self.url(node), node.ready_path());
                match self.http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("HTTP {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(TestSupportError::NotReady {
            what: format!("{node} in container {}", self.member(node).name),
            waited: READY_TIMEOUT,
            last_error,
            logs: self.logs(node).await,
        })
    }
}

/// The request of a service running one of our binaries on the runtime
/// image: the binary is copied in (executable) when the container is created.
fn runtime_request(
    binary: &std::path::Path,
    target: &str,
    args: Vec<String>,
) -> ContainerRequest<GenericImage> {
    let (name, tag) = RUNTIME_IMAGE;
    GenericImage::new(name, tag)
        .with_entrypoint(target)
        .with_cmd(args)
        .with_copy_to(
            CopyTargetOptions::new(target).with_mode(0o755),
            binary.to_owned(),
        )
        // For `tc netem` (set_latency) inside the container.
        .with_cap_add("NET_ADMIN")
}

/// Keeps what a container name may hold.
fn sanitize(run: &str) -> String {
    run.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}
