//! Coordinator nodes: a real [`Engine`] over the node's own store and
//! transport wrappers, and the node's life (alive, paused, dead), which
//! those wrappers obey at every call.
//!
//! A crash makes both wrappers go dead at once, mid-step included: calls
//! already under way never return and no new call leaves, exactly as when
//! the process is killed; then `begin_shutdown` stops the engine's tasks.
//! A pause holds the node's I/O (its store calls and participant calls)
//! until it ends, as a long stall would; its timers keep running.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtx_coordinator::engine::{Engine, EngineSettings};
use dtx_coordinator::metrics::Metrics;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::network::NodeTransport;
use super::store::NodeStore;
use super::world::Sim;

/// Where the plan crashes a node relative to one of its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFate {
    /// An ordinary write.
    Proceed,
    /// The node dies just before the write reaches the store.
    CrashBefore,
    /// The write commits, and the node dies before it learns so.
    CrashAfter,
}

#[derive(Debug, Default)]
struct LifeState {
    dead: bool,
    paused_until: Option<Instant>,
    writes: u64,
    /// Crash at this write (1-based): after it when `true`, before when not.
    crash_at_write: Option<(u64, bool)>,
}

/// The life of one incarnation of a node: its wrappers consult it at every
/// call.
#[derive(Debug)]
pub struct NodeLife {
    /// The node id (several incarnations may share it).
    node_id: String,
    /// The name in the trace: node id and incarnation.
    name: String,
    state: Mutex<LifeState>,
    /// Turns `true` when the node dies.
    dead: watch::Sender<bool>,
}

impl NodeLife {
    fn new(node_id: &str, incarnation: u32) -> NodeLife {
        NodeLife {
            node_id: node_id.to_owned(),
            name: format!("{node_id}#{incarnation}"),
            state: Mutex::default(),
            dead: watch::Sender::new(false),
        }
    }

    /// The node id the engine writes as the owner.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The name in the trace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the node is dead.
    pub fn is_dead(&self) -> bool {
        self.state.lock().unwrap().dead
    }

    /// Waits until the node may do I/O: at once when alive and running,
    /// until the pause ends when paused, never when dead.
    pub async fn gate(&self) {
        loop {
            let (dead, paused_until) = {
                let state = self.state.lock().unwrap();
                (state.dead, state.paused_until)
            };
            if dead {
                std::future::pending::<()>().await;
            }
            match paused_until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Counts one write and says whether the plan crashes the node there.
    pub fn count_write(&self) -> WriteFate {
        let mut state = self.state.lock().unwrap();
        state.writes += 1;
        match state.crash_at_write {
            Some((k, after)) if k == state.writes => {
                state.crash_at_write = None;
                if after {
                    WriteFate::CrashAfter
                } else {
                    WriteFate::CrashBefore
                }
            }
            _ => WriteFate::Proceed,
        }
    }

    /// Arms a crash at the node's `k`-th write from now on.
    pub fn crash_at_write(&self, k: u64, after: bool) {
        let mut state = self.state.lock().unwrap();
        state.crash_at_write = Some((state.writes + k, after));
    }

    /// Disarms a crash that has not happened yet (faults stop).
    pub fn disarm(&self) {
        self.state.lock().unwrap().crash_at_write = None;
    }

    /// The node dies now.
    pub fn kill(&self) {
        self.state.lock().unwrap().dead = true;
        self.dead.send_replace(true);
    }

    /// Waits until the node dies.
    pub async fn died(&self) {
        let mut dead = self.dead.subscribe();
        let _ = dead.wait_for(|dead| *dead).await;
    }

    /// Holds the node's I/O until `until`.
    pub fn pause_until(&self, until: Instant) {
        self.state.lock().unwrap().paused_until = Some(until);
    }

    /// Ends a pause now.
    pub fn resume(&self) {
        self.state.lock().unwrap().paused_until = None;
    }
}

/// The engine settings a node gets in the simulation.
#[derive(Debug, Clone, Copy)]
pub struct NodeTiming {
    /// The lease length.
    pub lease: Duration,
    /// How often the claim loop looks for expired leases.
    pub claim_interval: Duration,
}

/// One incarnation of a coordinator node.
pub struct Node {
    /// Its life, shared with its wrappers.
    pub life: Arc<NodeLife>,
    /// The real engine.
    pub engine: Engine,
}

impl Node {
    /// Starts incarnation `incarnation` of node `node_id`: an engine over
    /// the node's wrappers, its loops running, seeded with `seed`.
    pub fn start(
        sim: &Arc<Sim>,
        node_id: &str,
        incarnation: u32,
        timing: NodeTiming,
        seed: u64,
    ) -> Node {
        let life = Arc::new(NodeLife::new(node_id, incarnation));
        let store = NodeStore {
            sim: sim.clone(),
            life: life.clone(),
        };
        let transport = NodeTransport {
            sim: sim.clone(),
            life: life.clone(),
        };
        let engine = Engine::new(
            Arc::new(store),
            Arc::new(transport),
            Arc::new(Metrics::default()),
            EngineSettings {
                node_id: node_id.to_owned(),
                lease: timing.lease,
                claim_interval: timing.claim_interval,
                shutdown_grace: Duration::from_secs(1),
                seed: Some(seed),
                max_history_events: dtx_coordinator::limits::Limits::default().max_history_events
                    as usize,
            },
        );
        engine.start();
        // A crash stops the engine's tasks: those waiting on a dead
        // wrapper stay stuck, the others end at their next select.
        let (watched, stopping) = (life.clone(), engine.clone());
        tokio::spawn(async move {
            watched.died().await;
            stopping.begin_shutdown();
        });
        sim.trace(format!("{} START", life.name()));
        Node { life, engine }
    }
}

/// The coordinator nodes of a run, every incarnation, dead ones included.
pub struct Cluster {
    sim: Arc<Sim>,
    timing: NodeTiming,
    nodes: Mutex<Vec<Node>>,
}

impl Cluster {
    /// A cluster with no node yet.
    pub fn new(sim: Arc<Sim>, timing: NodeTiming) -> Cluster {
        Cluster {
            sim,
            timing,
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// Starts a new incarnation of node `node_id`; returns its life.
    pub fn start(&self, node_id: &str) -> Arc<NodeLife> {
        let mut nodes = self.nodes.lock().unwrap();
        let incarnation = 1 + nodes.iter().filter(|n| n.life.node_id() == node_id).count() as u32;
        let seed = self.sim.draw(|rng| rng.random());
        let node = Node::start(&self.sim, node_id, incarnation, self.timing, seed);
        let life = node.life.clone();
        nodes.push(node);
        life
    }

    /// The live incarnation of node `node_id`, if any.
    pub fn life(&self, node_id: &str) -> Option<Arc<NodeLife>> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .rev()
            .find(|n| n.life.node_id() == node_id && !n.life.is_dead())
            .map(|n| n.life.clone())
    }

    /// Every incarnation that is alive.
    pub fn alive(&self) -> Vec<Arc<NodeLife>> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|n| !n.life.is_dead())
            .map(|n| n.life.clone())
            .collect()
    }

    /// A live node drawn from the seed, for an initiator's request.
    pub fn pick(&self) -> Option<(String, Engine)> {
        let nodes = self.nodes.lock().unwrap();
        let alive: Vec<&Node> = nodes.iter().filter(|n| !n.life.is_dead()).collect();
        if alive.is_empty() {
            return None;
        }
        let i = self.sim.draw(|rng| rng.random_range(0..alive.len()));
        Some((alive[i].life.name().to_owned(), alive[i].engine.clone()))
    }
}
