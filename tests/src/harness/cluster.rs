//! One cluster of the harness: PostgreSQL, two coordinators sharing it, the
//! inventory service and the order service, each in a container of its own
//! on a private Docker network, plus the operations the nemesis needs (kill,
//! start again, pause, resume, disconnect, reconnect, add latency).
//!
//! Containers reach each other by container name on the private network.
//! The harness reaches each service through a port published on 127.0.0.1
//! (chosen here and kept across restarts, so a service's URL never changes).
//!
//! Databases: the coordinators share the `dtx` database; the inventory has
//! its own (`inventory`, on the same server); the order service keeps a
//! SQLite file inside its container. testcontainers creates, starts, stops,
//! pauses and removes containers; bollard (through `crate::docker`) does only
//! what testcontainers 0.28 lacks: SIGKILL, and network disconnect/connect.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use testcontainers::CopyTargetOptions;
use testcontainers::core::{ExecCommand, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use super::binaries::Binaries;
use crate::docker::{Engine, labels, loopback_only, pick_host_port};
use crate::error::TestSupportError;

/// The image every service but PostgreSQL runs (tests/images/build-images.sh).
const RUNTIME_IMAGE: (&str, &str) = ("dtx-runtime", "bookworm");
/// The PostgreSQL image.
const POSTGRES_IMAGE: (&str, &str) = ("dtx-postgres", "15");
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
    /// The coordinator the order service talks to.
    Coordinator1,
    /// The second coordinator, which takes over the first one's work.
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
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            three_phase_timeout: Duration::from_secs(15),
            inventory_args: vec![],
            orders_args: vec![],
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
        for (name, tag) in [RUNTIME_IMAGE, POSTGRES_IMAGE] {
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
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| TestSupportError::docker("build an HTTP client", e))?,
        };
        let pg_name = format!("{prefix}-pg");
        let pg = |db: &str| format!("postgres://postgres:postgres@{pg_name}:5432/{db}");
        for node in Node::ALL {
            let name = format!("{prefix}-{node}");
            let host_port = pick_host_port();
            let request = match node {
                Node::Postgres => postgres_request(),
                Node::Coordinator1 | Node::Coordinator2 => runtime_request(
                    &binaries.dtx,
                    "/usr/local/bin/dtx",
                    vec![
                        "serve".to_owned(),
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
                    ],
                ),
                Node::Inventory => runtime_request(
                    &binaries.inventory,
                    "/usr/local/bin/inventory-service",
                    [
                        "--listen".to_owned(),
                        "0.0.0.0:7710".into(),
                        "--db".into(),
                        pg("inventory"),
                        "--coordinator".into(),
                        format!("http://{prefix}-c1:7707"),
                        "--three-phase-timeout-ms".into(),
                        options.three_phase_timeout.as_millis().to_string(),
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
                        "--coordinator".into(),
                        format!("http://{prefix}-c1:7707"),
                        "--inventory".into(),
                        format!("http://{prefix}-inventory:7710"),
                        "--public-url".into(),
                        format!("http://{prefix}-orders:7711"),
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
                cluster.create_databases(&["dtx", "inventory"]).await?;
            }
        }
        Ok(cluster)
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

    async fn create_databases(&self, names: &[&str]) -> Result<(), TestSupportError> {
        let mut admin = PgConnection::connect(&self.postgres_url("postgres"))
            .await
            .map_err(|e| TestSupportError::database("connect to the harness PostgreSQL", e))?;
        for name in names {
            admin
                .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .await
                .map_err(|e| TestSupportError::database(format!("create database {name}"), e))?;
        }
        Ok(())
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

    /// The last lines of a node's log (stdout and stderr), for reports.
    pub async fn logs(&self, node: Node) -> String {
        let container = &self.member(node).container;
        let mut text = String::new();
        for bytes in [
            container.stdout_to_vec().await,
            container.stderr_to_vec().await,
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Whether the node's container runs (a paused one counts as running).
    pub async fn is_running(&self, node: Node) -> bool {
        self.member(node)
            .container
            .is_running()
            .await
            .unwrap_or(false)
    }

    /// `kill -9` of the node's main process; the container stays, stopped.
    pub async fn kill(&self, node: Node) -> Result<(), TestSupportError> {
        let name = &self.member(node).name;
        // bollard: testcontainers lacks sending a chosen signal.
        let stopped = self
            .engine
            .signal_and_wait(name, "SIGKILL", Duration::from_secs(30))
            .await?;
        if !stopped {
            return Err(TestSupportError::docker(
                format!("kill container {name}"),
                "it was still running 30 s after SIGKILL",
            ));
        }
        Ok(())
    }

    /// Starts a killed or stopped node again and waits until it answers.
    pub async fn start_again(&self, node: Node) -> Result<(), TestSupportError> {
        let member = self.member(node);
        member
            .container
            .start()
            .await
            .map_err(|e| TestSupportError::docker(format!("start container {}", member.name), e))?;
        self.wait_ready(node).await
    }

    /// Freezes every process of the node (the cgroup freezer, like SIGSTOP):
    /// a stall such as a long GC pause.
    pub async fn pause(&self, node: Node) -> Result<(), TestSupportError> {
        let member = self.member(node);
        member
            .container
            .pause()
            .await
            .map_err(|e| TestSupportError::docker(format!("pause container {}", member.name), e))
    }

    /// Thaws a paused node.
    pub async fn resume(&self, node: Node) -> Result<(), TestSupportError> {
        let member = self.member(node);
        member
            .container
            .unpause()
            .await
            .map_err(|e| TestSupportError::docker(format!("unpause container {}", member.name), e))
    }

    /// Cuts the node off the private network: no other service reaches it,
    /// and it reaches none.
    pub async fn disconnect(&self, node: Node) -> Result<(), TestSupportError> {
        let name = self.member(node).name.clone();
        // bollard: testcontainers lacks network disconnect.
        let request = NetworkDisconnectRequest {
            container: name.clone(),
            force: Some(true),
        };
        self.engine
            .docker
            .disconnect_network(&self.network, request)
            .await
            .map_err(|e| TestSupportError::docker(format!("disconnect {name}"), e))
    }

    /// Puts a disconnected node back on the private network.
    pub async fn reconnect(&self, node: Node) -> Result<(), TestSupportError> {
        let name = self.member(node).name.clone();
        // bollard: testcontainers lacks network connect.
        let request = NetworkConnectRequest {
            container: name.clone(),
            endpoint_config: Some(EndpointSettings::default()),
        };
        self.engine
            .docker
            .connect_network(&self.network, request)
            .await
            .map_err(|e| TestSupportError::docker(format!("reconnect {name}"), e))
    }

    /// Partitions `node` from `peers` alone: inside `node`, the peers'
    /// addresses become unreachable routes (`ip route`; the runtime
    /// containers have NET_ADMIN), so `node` reaches no peer and answers
    /// none, while it keeps every other path (its database, say). That is
    /// the partition 3PC's timeout rule is about; [`Cluster::disconnect`]
    /// cuts a node off everything instead.
    pub async fn cut_off(&self, node: Node, peers: &[Node]) -> Result<(), TestSupportError> {
        self.peer_routes(node, peers, "add").await
    }

    /// Heals a [`Cluster::cut_off`].
    pub async fn rejoin(&self, node: Node, peers: &[Node]) -> Result<(), TestSupportError> {
        self.peer_routes(node, peers, "del").await
    }

    async fn peer_routes(
        &self,
        node: Node,
        peers: &[Node],
        verb: &str,
    ) -> Result<(), TestSupportError> {
        let names: Vec<&str> = peers
            .iter()
            .map(|p| self.member(*p).name.as_str())
            .collect();
        // Addresses from the network's DNS, as the services themselves
        // resolve each other.
        let command = format!(
            "for peer in {}; do ip=$(getent hosts $peer | cut -d' ' -f1) && [ -n \"$ip\" ] \
             && ip route {verb} unreachable $ip/32 || exit 1; done",
            names.join(" ")
        );
        self.exec(node, &command).await
    }

    /// Runs `command` with `sh -c` in `node`'s container; an error with what
    /// it printed to standard error unless it exits with 0.
    async fn exec(&self, node: Node, command: &str) -> Result<(), TestSupportError> {
        let member = self.member(node);
        let failed = |why: String| {
            TestSupportError::docker(format!("exec `{command}` in {}", member.name), why)
        };
        let mut result = member
            .container
            .exec(ExecCommand::new(["sh", "-c", command]))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let stderr = result.stderr_to_vec().await.unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        match result.exit_code().await {
            Ok(Some(0)) | Ok(None) => Ok(()),
            other => Err(failed(format!("{other:?}: {stderr}"))),
        }
    }

    /// Delays every packet the node sends by `delay` (`tc netem`; the
    /// runtime containers have NET_ADMIN for it). `None` removes the delay.
    /// Answers `false` when the kernel has no netem (some VM kernels are
    /// built without it): then nothing changed, and the caller must slow the
    /// service another way.
    pub async fn set_latency(
        &self,
        node: Node,
        delay: Option<Duration>,
    ) -> Result<bool, TestSupportError> {
        // Every interface but the loopback: a reconnected container's
        // interface may have another name than eth0.
        let each = "for dev in $(ls /sys/class/net | grep -vx lo); do";
        let command = match delay {
            Some(d) => format!(
                "{each} tc qdisc replace dev $dev root netem delay {}ms || exit 1; done",
                d.as_millis()
            ),
            None => format!("{each} tc qdisc del dev $dev root 2>/dev/null; done; true"),
        };
        match self.exec(node, &command).await {
            Ok(()) => Ok(true),
            Err(e) if e.to_string().contains("qdisc kind is unknown") => Ok(false),
            Err(e) => Err(e),
        }
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

/// The PostgreSQL server of a cluster.
fn postgres_request() -> ContainerRequest<GenericImage> {
    let (name, tag) = POSTGRES_IMAGE;
    GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_startup_timeout(READY_TIMEOUT)
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
