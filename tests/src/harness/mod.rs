//! The fault-injection harness: the whole system (two coordinators on one
//! PostgreSQL, the sample inventory and order services) in containers on a
//! private network, a workload of orders in every mode, a nemesis that
//! kills, pauses, cuts off and slows services on a schedule drawn from a
//! seed, and a checker that reads every service's state afterwards and
//! reports each violation with its gid.
//!
//! # Layout
//! - [`binaries`]: builds the programs that go into the containers.
//! - [`cluster`]: the containers and the fault operations on them.
//! - [`postgres_ha`]: PostgreSQL, as one server or replicated (Patroni,
//!   etcd, HAProxy), with the failover and switchover faults and the test
//!   of synchronous replication's promise.
//! - [`workload`]: the clients that place orders.
//! - [`nemesis`]: the fault schedule drawn from a seed, and carrying it out.
//! - [`observe`]: reading every service's state back, and waiting for quiescence.
//! - [`checker`]: the rules every run must keep, over what was read back.
//! - [`availability`]: orders completed per second during each fault against
//!   the healthy rate, the longest gap, the time back to full rate.
//! - [`scenario`]: the named scenarios and the run of one.
//! - [`targeted`]: deterministic runs at named protocol points (the 3PC
//!   partition divergence, a coordinator killed mid-protocol).
//! - [`plants`]: runs against services with a planted defect, one per
//!   checker rule, proving that each rule fires on real data.
//! - [`report`]: `report.json` and `report.html`.
//!
//! `src/bin/dtx-harness.rs` is the command line; `tests/tests/harness.rs`
//! runs the CI selection.
//!
//! The images come from `tests/images/build-images.sh` (`dtx-runtime`,
//! `dtx-postgres` and `dtx-patroni`); nothing is pulled.

pub mod availability;
pub mod binaries;
pub mod checker;
pub mod cluster;
pub mod credentials;
pub mod nemesis;
pub mod observe;
pub mod plants;
pub mod postgres_ha;
pub mod report;
pub mod scenario;
pub mod targeted;
pub mod workload;

/// The modes the sample order service places orders in: every one.
pub const MODES: &[dtx_protocol::Mode] = &dtx_protocol::Mode::ALL;
