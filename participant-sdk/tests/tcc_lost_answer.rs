//! The TCC scope when the commit's answer does not come back: a real
//! coordinator process, a fake participant, and a lossy proxy between the
//! SDK and the coordinator. The scope must report what the coordinator did,
//! never guess: a caller that reads "failed" after a commit that landed
//! starts the business operation again under a new gid.

mod common;

use common::Coordinator;
use common::lossy_proxy::{Fate, LossyProxy, Route};
use dtx_sdk::client::TccBranch;
use dtx_sdk::{Client, ClientError, RetryPolicy, Status, TxOptions};
use dtx_tests::participant::FakeParticipant;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A coordinator, a participant, and two clients of the coordinator: one
/// through the lossy proxy (the scope's) and one direct (the test's).
struct World {
    fake: FakeParticipant,
    proxy: LossyProxy,
    direct: Client,
    via_proxy: Client,
    _coordinator: Coordinator,
}

impl World {
    async fn start() -> World {
        let coordinator = Coordinator::start(&[]).await;
        let proxy = LossyProxy::start(&coordinator.url()).await;
        World {
            fake: FakeParticipant::start().await,
            direct: Client::new(&coordinator.url()).unwrap(),
            via_proxy: Client::new(&proxy.url()).unwrap(),
            proxy,
            _coordinator: coordinator,
        }
    }

    fn hotel(&self) -> TccBranch {
        TccBranch::new("hotel")
            .try_url(self.fake.url("/hotel/try"))
            .confirm(self.fake.url("/hotel/confirm"))
            .cancel(self.fake.url("/hotel/cancel"))
            .payload(json!({"room": 12}))
    }

    /// Runs a scope that books the hotel through the proxy.
    async fn book(&self, tcc: dtx_sdk::client::TccBuilder) -> Result<&'static str, ClientError> {
        let hotel = self.hotel();
        tcc.run(|scope| async move {
            scope.try_branch(hotel).await?;
            Ok::<_, ClientError>("booked")
        })
        .await
    }

    /// Asserts the calls the participant received.
    fn assert_calls(&self, confirms: usize, cancels: usize) {
        assert_eq!(self.fake.count("/hotel/try"), 1);
        assert_eq!(self.fake.count("/hotel/confirm"), confirms, "confirms");
        assert_eq!(self.fake.count("/hotel/cancel"), cancels, "cancels");
    }
}

/// Options whose retry backoff keeps the repeated questions quick.
fn quick() -> TxOptions {
    TxOptions {
        retry: RetryPolicy {
            initial_ms: 20,
            max_ms: 200,
            multiplier: 2.0,
        },
        ..TxOptions::default()
    }
}

#[tokio::test]
async fn commit_that_landed_but_whose_answer_was_lost_is_reported_committed() {
    let w = World::start().await;
    w.proxy.then(Route::Commit, Fate::DropAnswer, 1);
    // The first two questions about the outcome are lost as well: the scope
    // keeps asking.
    w.proxy.then(Route::Get, Fate::DropRequest, 2);
    let tcc = w.via_proxy.tcc().options(quick());
    let gid = tcc.gid().to_owned();
    let booked = w.book(tcc).await;
    assert!(
        matches!(booked, Ok("booked")),
        "the commit landed, so the scope succeeds: {booked:?}"
    );
    let tx = w.direct.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed);
    w.assert_calls(1, 0);
    assert_eq!(w.proxy.seen(Route::Commit), 1);
    assert_eq!(
        w.proxy.seen(Route::Abort),
        0,
        "no abort after a commit that landed"
    );
    assert_eq!(
        w.proxy.seen(Route::Get),
        3,
        "two lost questions, one answer"
    );
}

#[tokio::test]
async fn commit_lost_before_the_coordinator_is_aborted_and_reported_as_aborted() {
    let w = World::start().await;
    w.proxy.then(Route::Commit, Fate::DropRequest, 1);
    let tcc = w.via_proxy.tcc().options(quick());
    let gid = tcc.gid().to_owned();
    let booked = w.book(tcc).await;
    match &booked {
        Err(ClientError::Aborted {
            gid: aborted,
            reason,
            branch,
            refusal,
        }) => {
            assert_eq!(aborted, &gid);
            assert!(reason.contains("commit request was lost"), "{reason}");
            assert_eq!(branch, &None);
            assert_eq!(refusal, &None);
        }
        other => panic!("expected ClientError::Aborted, got {other:?}"),
    }
    let tx = w.direct.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Aborted);
    w.assert_calls(0, 1);
    assert_eq!(w.proxy.seen(Route::Abort), 1);
}

/// The commit is delayed in the network: the scope finds the transaction
/// still open and sends the abort, but the commit arrives first. The abort
/// is refused (409) and the scope must read that as "it committed".
#[tokio::test]
async fn commit_that_lands_after_the_scope_found_it_open_is_reported_committed() {
    let w = World::start().await;
    w.proxy
        .then(Route::Commit, Fate::HoldUntil(Route::Abort), 1);
    let tcc = w.via_proxy.tcc().options(quick());
    let gid = tcc.gid().to_owned();
    let booked = w.book(tcc).await;
    assert!(
        matches!(booked, Ok("booked")),
        "the late commit won over the abort: {booked:?}"
    );
    let tx = w.direct.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed);
    w.assert_calls(1, 0);
    assert_eq!(w.proxy.seen(Route::Abort), 1);
    assert_eq!(
        w.proxy.seen(Route::Get),
        2,
        "asked once (open), then again after the refused abort"
    );
}

#[tokio::test]
async fn outcome_that_cannot_be_learnt_is_reported_unknown_and_nothing_is_aborted() {
    let w = World::start().await;
    w.proxy.then(Route::Commit, Fate::DropAnswer, 1);
    w.proxy
        .then(Route::Get, Fate::DropRequest, usize::from(u16::MAX));
    let tcc = w
        .via_proxy
        .tcc()
        .options(quick())
        .outcome_patience(Duration::from_millis(500));
    let gid = tcc.gid().to_owned();
    let booked = w.book(tcc).await;
    match &booked {
        Err(ClientError::OutcomeUnknown { gid: unknown, .. }) => assert_eq!(unknown, &gid),
        other => panic!("expected ClientError::OutcomeUnknown, got {other:?}"),
    }
    assert!(w.proxy.seen(Route::Get) >= 2, "the scope asked again");
    assert_eq!(
        w.proxy.seen(Route::Abort),
        0,
        "an unknown outcome is not aborted"
    );
    let tx = w.direct.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed);
    w.assert_calls(1, 0);
}

/// The coordinator aborted the transaction at its deadline before the
/// commit arrived: the scope reports that abort with the coordinator's
/// reason, not a bare conflict.
#[tokio::test]
async fn commit_after_the_deadline_reports_the_coordinators_abort() {
    let w = World::start().await;
    let tcc = w.direct.tcc().options(TxOptions {
        deadline_ms: 300,
        ..quick()
    });
    let gid = tcc.gid().to_owned();
    let (hotel, direct) = (w.hotel(), &w.direct);
    let booked = tcc
        .run(|scope| async move {
            scope.try_branch(hotel).await?;
            // Past the deadline the coordinator aborts it by itself.
            let tx = direct.wait(scope.gid(), WAIT).await?;
            assert_eq!(tx.status, Status::Aborted);
            Ok::<_, ClientError>(())
        })
        .await;
    match &booked {
        Err(ClientError::Aborted {
            gid: aborted,
            reason,
            ..
        }) => {
            assert_eq!(aborted, &gid);
            assert!(reason.contains("deadline"), "{reason}");
        }
        other => panic!("expected ClientError::Aborted, got {other:?}"),
    }
    w.assert_calls(0, 1);
}
