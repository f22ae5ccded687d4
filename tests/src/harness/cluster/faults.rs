//! The faults the nemesis and the targeted runs inflict on a cluster's
//! nodes: kill -9 and start again, pause and resume, disconnect from the
//! network or from some peers only, and added latency.

use std::time::Duration;

use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use testcontainers::core::ExecCommand;

use super::{Cluster, Node};
use crate::error::TestSupportError;

impl Cluster {
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
