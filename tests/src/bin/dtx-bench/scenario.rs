//! What is measured: a workload (protocol and branch count), a store and a
//! number of concurrent clients make one scenario.
//!
//! # Adding a protocol
//!
//! Saga, TCC and 2PC are in. A further protocol (3PC, say) takes the four
//! steps 2PC took:
//! 1. a [`Workload`] variant here, with its name in [`Workload::parse`] and
//!    [`Workload::name`] and its participant calls in
//!    [`Workload::raw_calls`];
//! 2. its request sequence against dtx in `dtx.rs`;
//! 3. its request sequence against the peer in `peer.rs`, or a reason in
//!    `peer::unsupported` if the peer cannot run it (2PC has one: DTM's XA
//!    needs participants that run XA against a database);
//! 4. its raw reference in `raw.rs`.

use std::fmt;

/// One kind of transaction, as the load generator drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A sequential saga of `branches` actions, registered with one request
    /// that waits for the outcome.
    Saga {
        /// How many actions the saga runs.
        branches: u32,
    },
    /// A TCC transaction: open, register `branches` branches and call each
    /// Try directly, then commit and wait for the confirms.
    Tcc {
        /// How many branches are registered and confirmed.
        branches: u32,
    },
    /// A two-phase commit, registered with one request that waits for the
    /// outcome: the coordinator prepares every branch, then commits them.
    TwoPc {
        /// How many branches are prepared and committed.
        branches: u32,
    },
}

impl Workload {
    /// Parses `saga-N`, `tcc-N` or `2pc-N` (N from 1 to 64).
    pub fn parse(text: &str) -> Result<Workload, String> {
        let (kind, count) = text
            .split_once('-')
            .ok_or_else(|| format!("workload `{text}`: expected saga-N, tcc-N or 2pc-N"))?;
        let branches: u32 = count
            .parse()
            .map_err(|_| format!("workload `{text}`: `{count}` is not a number"))?;
        if !(1..=64).contains(&branches) {
            return Err(format!("workload `{text}`: between 1 and 64 branches"));
        }
        match kind {
            "saga" => Ok(Workload::Saga { branches }),
            "tcc" => Ok(Workload::Tcc { branches }),
            "2pc" => Ok(Workload::TwoPc { branches }),
            _ => Err(format!(
                "workload `{text}`: expected saga-N, tcc-N or 2pc-N"
            )),
        }
    }

    /// The name used on the command line, in tables and in the JSON.
    pub fn name(&self) -> String {
        match self {
            Workload::Saga { branches } => format!("saga-{branches}"),
            Workload::Tcc { branches } => format!("tcc-{branches}"),
            Workload::TwoPc { branches } => format!("2pc-{branches}"),
        }
    }

    /// How many participant calls one transaction makes when it succeeds,
    /// which is what the raw reference makes one after another: a saga's
    /// actions; a TCC transaction's tries and confirms; a 2PC transaction's
    /// prepares and commits.
    pub fn raw_calls(&self) -> u32 {
        match self {
            Workload::Saga { branches } => *branches,
            Workload::Tcc { branches } | Workload::TwoPc { branches } => 2 * branches,
        }
    }
}

/// Where the coordinators keep their log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// A fresh SQLite file per scenario and per coordinator.
    Sqlite,
    /// A fresh database per scenario and per coordinator, on a PostgreSQL
    /// server in a container of the bench's own.
    Postgres,
}

impl Store {
    /// Parses `sqlite` or `postgres`.
    pub fn parse(text: &str) -> Result<Store, String> {
        match text {
            "sqlite" => Ok(Store::Sqlite),
            "postgres" | "postgresql" => Ok(Store::Postgres),
            _ => Err(format!("store `{text}`: expected sqlite or postgres")),
        }
    }

    /// The name used on the command line, in tables and in the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// One cell of the matrix: measured for raw, dtx and the peer, back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The kind of transaction.
    pub workload: Workload,
    /// The coordinators' store.
    pub store: Store,
    /// How many clients run at once, each waiting for its outcome.
    pub concurrency: usize,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} c{}",
            self.workload.name(),
            self.store.name(),
            self.concurrency
        )
    }
}

/// Every combination, store by store, then workload, then concurrency, so
/// that a table printed during the run reads in a stable order.
pub fn matrix(workloads: &[Workload], stores: &[Store], concurrency: &[usize]) -> Vec<Scenario> {
    let mut all = Vec::new();
    for &store in stores {
        for &workload in workloads {
            for &concurrency in concurrency {
                all.push(Scenario {
                    workload,
                    store,
                    concurrency,
                });
            }
        }
    }
    all
}
