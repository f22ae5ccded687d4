//! The fake network: each node's [`Transport`], which carries the engine's
//! calls to the simulated participants through faults drawn from the seed
//! (lost, late, duplicated requests; lost, late, reordered replies; 500,
//! 425 and 3xx answers; partitions), and checks at the moment the engine
//! issues a phase-one call that its decision is not durable yet.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtx_coordinator::transport::{CallOutcome, CallRequest, Transport};
use dtx_protocol::wire::VOTE_READ_ONLY;
use dtx_protocol::{Op, Reply};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::invariants::Kind;
use super::nodes::NodeLife;
use super::participants::{Key, SimOp};
use super::plan::FaultRates;
use super::three_phase::arm_watchdog;
use super::world::{Planted, Sim};

/// What a participant's answer was, as the network carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// A read-only vote.
    pub read_only: bool,
}

/// An answer that is not the participant's business answer.
#[derive(Debug, Clone, Copy)]
enum Override {
    /// This status, without the participant acting.
    Instead(u16),
    /// This status, after the participant acted.
    After(u16),
}

/// What the network does to one call.
#[derive(Debug, Clone)]
struct Fate {
    lost_request: bool,
    request_delay: Duration,
    duplicate: Option<Duration>,
    answer: Option<Override>,
    lost_reply: bool,
    reply_delay: Duration,
}

fn short(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(1..=100))
}

fn past(rng: &mut StdRng, timeout: Duration) -> Duration {
    timeout + Duration::from_millis(rng.random_range(1..=3_000))
}

impl Fate {
    /// After heal: every call arrives and is answered, soon.
    fn calm(rng: &mut StdRng) -> Fate {
        Fate {
            lost_request: false,
            request_delay: short(rng),
            duplicate: None,
            answer: None,
            lost_reply: false,
            reply_delay: short(rng),
        }
    }

    /// Before heal: faults at the seed's rates. Every field is drawn on
    /// every call, so the stream of draws does not depend on the outcome.
    fn stormy(rng: &mut StdRng, r: &FaultRates, timeout: Duration) -> Fate {
        let lost_request = rng.random_bool(r.lost_request);
        let slow_request = rng.random_bool(r.slow_request);
        let (request_fast, request_slow) = (short(rng), past(rng, timeout));
        let duplicate = rng.random_bool(r.duplicate);
        let duplicate_after = Duration::from_millis(rng.random_range(1..=2_000));
        let pick: f64 = rng.random();
        let acted = rng.random_bool(0.5);
        let redirect = [301, 302, 303, 307, 308][rng.random_range(0..5)];
        let lost_reply = rng.random_bool(r.lost_reply);
        let slow_reply = rng.random_bool(r.slow_reply);
        let (reply_fast, reply_slow) = (short(rng), past(rng, timeout));
        let answer = if pick < r.unknown_500 {
            Some(if acted {
                Override::After(500)
            } else {
                Override::Instead(500)
            })
        } else if pick < r.unknown_500 + r.still_working_425 {
            Some(if acted {
                Override::After(425)
            } else {
                Override::Instead(425)
            })
        } else if pick < r.unknown_500 + r.still_working_425 + r.redirect_3xx {
            Some(Override::Instead(redirect))
        } else {
            None
        };
        Fate {
            lost_request,
            request_delay: if slow_request {
                request_slow
            } else {
                request_fast
            },
            duplicate: duplicate.then_some(duplicate_after),
            answer,
            lost_reply,
            reply_delay: if slow_reply { reply_slow } else { reply_fast },
        }
    }
}

/// One coordinator node's transport.
pub struct NodeTransport {
    pub(crate) sim: Arc<Sim>,
    pub(crate) life: Arc<NodeLife>,
}

#[async_trait]
impl Transport for NodeTransport {
    async fn call(&self, r: CallRequest<'_>) -> CallOutcome {
        self.life.gate().await;
        let key: Key = (r.gid.to_owned(), r.branch_id.to_owned());
        let name = self.life.name();
        if !r.op.is_phase_two() {
            self.check_phase_one(&key, r.op);
        }
        self.sim
            .trace(format!("{name} call {}/{} {}", key.0, key.1, r.op));
        let answer = send(&self.sim, key.clone(), SimOp::Coordinator(r.op), r.timeout).await;
        // A paused node hears its answers only when the pause ends.
        self.life.gate().await;
        let outcome = classify(answer, r.timeout, self.sim.planted);
        self.sim.trace(format!(
            "{name} got {}/{} {} -> {:?} {:?}",
            key.0, key.1, r.op, outcome.reply, outcome.http_status
        ));
        outcome
    }
}

impl NodeTransport {
    /// No coordinator that still owns a transaction calls a phase-one
    /// operation once its decision is durable.
    fn check_phase_one(&self, key: &Key, op: Op) {
        let Some(record) = self.sim.store.get(&key.0) else {
            return;
        };
        if record.owner.as_deref() == Some(self.life.node_id()) && !record.status.is_phase_one() {
            self.sim.violation(
                Kind::PhaseOneAfterDecision,
                Some(&key.0),
                format!(
                    "{} sent {op} to {} while it owns the transaction (epoch {}) in {}",
                    self.life.name(),
                    key.1,
                    record.epoch,
                    record.status
                ),
            );
        }
    }
}

/// Turns what came back into what the engine sees. A 3xx is an unknown
/// answer: the transport never follows redirects (the planted bug does,
/// and the 3xx's target, a route that answers GET, says 200).
fn classify(answer: Option<Answer>, timeout: Duration, planted: Option<Planted>) -> CallOutcome {
    let Some(answer) = answer else {
        return CallOutcome {
            reply: Reply::Unknown,
            http_status: None,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
            refusal: None,
        };
    };
    let mut status = answer.status;
    if planted == Some(Planted::FollowRedirects) && (300..400).contains(&status) {
        status = 200;
    }
    let reply = Reply::from_answer(status, answer.read_only.then_some(VOTE_READ_ONLY));
    CallOutcome {
        reply,
        http_status: Some(status),
        error: (!reply.is_success()).then(|| format!("HTTP {status}")),
        refusal: (reply == Reply::Refused).then(|| "refused".to_owned()),
    }
}

/// Sends `op` to participant `key` and waits up to `timeout` for the
/// answer; `None` when none came in time. The request travels in a task of
/// its own: once sent, it arrives whatever becomes of the caller.
pub async fn send(sim: &Arc<Sim>, key: Key, op: SimOp, timeout: Duration) -> Option<Answer> {
    let fate = if sim.faults_on() {
        sim.draw(|rng| Fate::stormy(rng, &sim.rates, timeout))
    } else {
        sim.draw(Fate::calm)
    };
    let deadline = Instant::now() + timeout;
    let (reply_tx, reply) = oneshot::channel();
    if fate.lost_request {
        sim.trace(format!(
            "net lost request {}/{} {}",
            key.0,
            key.1,
            op.name()
        ));
    } else {
        let sim = sim.clone();
        tokio::spawn(async move { deliver(sim, key, op, fate, reply_tx).await });
    }
    match tokio::time::timeout_at(deadline, reply).await {
        Ok(Ok(answer)) => Some(answer),
        _ => {
            tokio::time::sleep_until(deadline).await;
            None
        }
    }
}

async fn deliver(sim: Arc<Sim>, key: Key, op: SimOp, fate: Fate, reply: oneshot::Sender<Answer>) {
    tokio::time::sleep(fate.request_delay).await;
    let answer = arrive(&sim, &key, op, fate.answer);
    if let Some(after) = fate.duplicate {
        let (sim, key) = (sim.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            sim.trace(format!("net duplicate {}/{} {}", key.0, key.1, op.name()));
            arrive(&sim, &key, op, None);
        });
    }
    let Some(answer) = answer else { return };
    if fate.lost_reply {
        sim.trace(format!("net lost reply {}/{} {}", key.0, key.1, op.name()));
        return;
    }
    tokio::time::sleep(fate.reply_delay).await;
    if sim.cut_off(&key) {
        sim.trace(format!(
            "net partition ate reply {}/{} {}",
            key.0,
            key.1,
            op.name()
        ));
        return;
    }
    let _ = reply.send(answer);
}

/// A request reaches participant `key` (unless a partition cuts it off).
fn arrive(sim: &Arc<Sim>, key: &Key, op: SimOp, answer: Option<Override>) -> Option<Answer> {
    if sim.cut_off(key) {
        sim.trace(format!(
            "net partition ate request {}/{} {}",
            key.0,
            key.1,
            op.name()
        ));
        return None;
    }
    if let Some(Override::Instead(status)) = answer {
        sim.trace(format!(
            "participant {}/{} {} not reached: {status}",
            key.0,
            key.1,
            op.name()
        ));
        return Some(Answer {
            status,
            read_only: false,
        });
    }
    let mut problems = Vec::new();
    let (handled, version) = {
        let mut participants = sim.participants.lock().unwrap();
        let handled = participants.handle(key, op, sim.planted, &mut problems);
        (handled, participants.get(key).map_or(0, |p| p.version))
    };
    sim.report(key, problems);
    let Some(handled) = handled else {
        sim.trace(format!("participant {}/{} does not exist", key.0, key.1));
        return Some(Answer {
            status: 404,
            read_only: false,
        });
    };
    sim.trace(format!(
        "participant {}/{} {} -> {}{}",
        key.0,
        key.1,
        op.name(),
        handled.status,
        if handled.read_only { " read-only" } else { "" }
    ));
    if let Some(wait) = handled.in_doubt_for {
        arm_watchdog(sim, key.clone(), version, wait);
    }
    let status = match answer {
        Some(Override::After(status)) => status,
        _ => handled.status,
    };
    Some(Answer {
        status,
        read_only: handled.read_only && status == handled.status,
    })
}
