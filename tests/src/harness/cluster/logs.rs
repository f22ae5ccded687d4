//! What a cluster's containers say about themselves, for reports: their
//! logs (the tail, or the lines naming given gids) and their state.

use super::{Cluster, Node};

impl Cluster {
    /// The last lines of a node's log (stdout and stderr), for reports.
    pub async fn logs(&self, node: Node) -> String {
        let mut text = self.log_tail(node, 60).await;
        if let (Node::Postgres, Some(ha)) = (node, &self.postgres_ha) {
            text.push('\n');
            text.push_str(&ha.logs().await);
        }
        text
    }

    /// The last `lines` lines of a node's log (stdout, then stderr).
    pub async fn log_tail(&self, node: Node, lines: usize) -> String {
        let text = self.whole_log(node).await;
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The lines of a node's log that name any of `needles` (gids), at
    /// most `max` of them, the last ones: a violation's story, which the
    /// tail of a busy service's log has long scrolled past.
    pub async fn log_lines_naming(&self, node: Node, needles: &[&str], max: usize) -> String {
        let text = self.whole_log(node).await;
        let naming: Vec<&str> = text
            .lines()
            .filter(|line| needles.iter().any(|needle| line.contains(needle)))
            .collect();
        naming[naming.len().saturating_sub(max)..].join("\n")
    }

    /// A node's whole log (stdout, then stderr).
    async fn whole_log(&self, node: Node) -> String {
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
        text
    }

    /// The node's container state in words (`docker inspect`: status, exit
    /// code, OOM kill, error, times), for a report about a service that
    /// stopped answering.
    pub async fn container_state(&self, node: Node) -> String {
        let name = &self.member(node).name;
        let state = match self.engine.inspect(name).await {
            Ok(Some(info)) => info.state,
            Ok(None) => return format!("container {name} does not exist"),
            Err(e) => return format!("{e:?}"),
        };
        let Some(state) = state else {
            return format!("container {name}: no state");
        };
        let mut words = vec![format!(
            "container {name}: {}",
            state.status.map_or("unknown".to_owned(), |s| s.to_string())
        )];
        if let Some(code) = state.exit_code {
            words.push(format!("exit code {code}"));
        }
        if state.oom_killed == Some(true) {
            words.push("killed for lack of memory".into());
        }
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            words.push(format!("error {error}"));
        }
        if let Some(at) = state.started_at {
            words.push(format!("started at {at}"));
        }
        if let Some(at) = state.finished_at.filter(|_| state.running != Some(true)) {
            words.push(format!("finished at {at}"));
        }
        words.join(", ")
    }
}
