//! The raw reference: the same client makes the same participant calls a
//! transaction makes, one after another, with no coordinator. It is the
//! limit of this machine for the workload: a coordinator can only add to
//! it.
//!
//! A saga of N branches is N action calls; a TCC transaction of N branches
//! is N tries then N confirms; a 2PC transaction of N branches is N
//! prepares then N commits (see [`Workload::raw_calls`]). The raw client
//! makes them one after another, as for every workload, where dtx prepares
//! a 2PC transaction's branches at once.

use crate::dtx::{PAYLOAD, post};
use crate::load::Target;
use crate::scenario::Workload;

/// The calls of one transaction, as URLs, in order.
pub struct RawTarget {
    client: reqwest::Client,
    urls: Vec<String>,
}

impl RawTarget {
    /// The calls `workload` makes on the participants at `participants`.
    pub fn new(workload: Workload, client: reqwest::Client, participants: &str) -> RawTarget {
        let p = participants;
        let urls: Vec<String> = match workload {
            Workload::Saga { branches } => (1..=branches)
                .map(|i| format!("{p}/saga/{i}/action"))
                .collect(),
            Workload::Tcc { branches } => (1..=branches)
                .map(|i| format!("{p}/tcc/{i}/try"))
                .chain((1..=branches).map(|i| format!("{p}/tcc/{i}/confirm")))
                .collect(),
            Workload::TwoPc { branches } => (1..=branches)
                .map(|i| format!("{p}/2pc/{i}/prepare"))
                .chain((1..=branches).map(|i| format!("{p}/2pc/{i}/commit")))
                .collect(),
        };
        debug_assert_eq!(urls.len(), workload.raw_calls() as usize);
        RawTarget { client, urls }
    }
}

impl Target for RawTarget {
    async fn run_one(&self, _seq: u64) -> Result<(), String> {
        for url in &self.urls {
            post(&self.client, url, PAYLOAD.to_owned()).await?;
        }
        Ok(())
    }
}
