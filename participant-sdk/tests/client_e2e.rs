//! The initiator client against a real coordinator process and a fake
//! participant: sagas, TCC scopes (commit, failure, panic, refused Try) and
//! the errors a caller must be able to tell apart.

mod common;

use common::Coordinator;
use dtx_sdk::client::{Registered, SagaBranch, TccBranch};
use dtx_sdk::{Client, ClientError, Status};
use dtx_tests::participant::{Answer, FakeParticipant};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn saga_branch(fake: &FakeParticipant, id: &str) -> SagaBranch {
    SagaBranch::new(id)
        .action(fake.url(&format!("/{id}/action")))
        .compensate(fake.url(&format!("/{id}/compensate")))
        .payload(json!({"branch": id}))
}

fn tcc_branch(fake: &FakeParticipant, id: &str) -> TccBranch {
    TccBranch::new(id)
        .try_url(fake.url(&format!("/{id}/try")))
        .confirm(fake.url(&format!("/{id}/confirm")))
        .cancel(fake.url(&format!("/{id}/cancel")))
        .payload(json!({"branch": id}))
}

#[tokio::test]
async fn saga_submit_and_wait_reports_committed() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let tx = client
        .saga()
        .branch(saga_branch(&fake, "stock"))
        .branch(saga_branch(&fake, "pay"))
        .submit_and_wait(WAIT)
        .await
        .unwrap();
    assert_eq!(tx.status, Status::Committed);
    assert!(tx.is_committed());
    assert_eq!(fake.count("/stock/action"), 1);
    assert_eq!(fake.count("/pay/action"), 1);
    assert_eq!(
        fake.count("/stock/compensate") + fake.count("/pay/compensate"),
        0
    );
    let call = &fake.calls_to("/pay/action")[0];
    assert_eq!(call.gid(), Some(tx.gid.as_str()));
    assert_eq!(call.op(), Some("action"));
    assert_eq!(call.body, json!({"branch": "pay"}));
}

#[tokio::test]
async fn saga_refused_is_aborted_and_compensated() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    fake.set_default("/pay/action", Answer::Status(409));
    let client = Client::new(&coordinator.url()).unwrap();
    let tx = client
        .saga()
        .branch(saga_branch(&fake, "stock"))
        .branch(saga_branch(&fake, "pay"))
        .submit_and_wait(WAIT)
        .await
        .unwrap();
    assert_eq!(tx.status, Status::Aborted);
    let cause = tx.abort_cause().expect("the history says why");
    assert_eq!(cause.branch_id, Some("pay"));
    assert!(cause.reason.contains("refused"), "{cause:?}");
    assert_eq!(fake.count("/stock/compensate"), 1);
}

#[tokio::test]
async fn resubmitting_a_saga_is_idempotent_and_another_body_conflicts() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let saga = client
        .saga()
        .with_gid("order-42")
        .branch(saga_branch(&fake, "stock"));
    assert!(matches!(
        saga.submit().await.unwrap(),
        Registered::Created(_)
    ));
    assert!(matches!(
        saga.submit().await.unwrap(),
        Registered::Existing(_)
    ));
    let other = client
        .saga()
        .with_gid("order-42")
        .branch(saga_branch(&fake, "pay"));
    let err = other.submit().await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict { .. }), "{err:?}");
}

#[tokio::test]
async fn tcc_scope_commits_when_it_succeeds() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    fake.set_default("/hotel/try", Answer::Json(200, json!({"room": 12})));
    let client = Client::new(&coordinator.url()).unwrap();
    let tcc = client.tcc().wait_for_outcome(WAIT);
    let gid = tcc.gid().to_owned();
    let room = tcc
        .run(|scope| async move {
            let hotel = scope.try_branch(tcc_branch(&fake, "hotel")).await?;
            scope.try_branch(tcc_branch(&fake, "flight")).await?;
            Ok::<_, ClientError>((hotel, fake))
        })
        .await
        .unwrap();
    let (hotel, fake) = room;
    assert_eq!(hotel, json!({"room": 12}));
    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed);
    for id in ["hotel", "flight"] {
        assert_eq!(fake.count(&format!("/{id}/try")), 1);
        assert_eq!(fake.count(&format!("/{id}/confirm")), 1);
        assert_eq!(fake.count(&format!("/{id}/cancel")), 0);
    }
    // The Try carries the same branch context the coordinator sends.
    let try_call = &fake.calls_to("/hotel/try")[0];
    assert_eq!(try_call.gid(), Some(gid.as_str()));
    assert_eq!(try_call.branch(), Some("hotel"));
    assert_eq!(try_call.op(), Some("try"));
    assert_eq!(try_call.mode(), Some("tcc"));
    assert_eq!(try_call.body, json!({"branch": "hotel"}));
    let confirm = &fake.calls_to("/hotel/confirm")[0];
    assert_eq!(
        try_call.traceparent().map(|t| &t[..36]),
        confirm.traceparent().map(|t| &t[..36]),
        "the Try is in the transaction's trace"
    );
}

/// A caller's own error type: the scope returns it unchanged.
#[derive(Debug)]
enum BookingError {
    NoSeat,
    // Only read through `Debug`, in failure messages.
    Client(#[allow(dead_code)] ClientError),
}

impl From<ClientError> for BookingError {
    fn from(e: ClientError) -> Self {
        BookingError::Client(e)
    }
}

#[tokio::test]
async fn tcc_scope_aborts_when_it_fails() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let tcc = client.tcc();
    let gid = tcc.gid().to_owned();
    let fake_ref = &fake;
    let err = tcc
        .run(|scope| async move {
            scope.try_branch(tcc_branch(fake_ref, "hotel")).await?;
            Err::<(), _>(BookingError::NoSeat)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, BookingError::NoSeat), "{err:?}");
    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Aborted);
    assert_eq!(fake.count("/hotel/cancel"), 1);
    assert_eq!(fake.count("/hotel/confirm"), 0);
}

#[tokio::test]
async fn tcc_scope_aborts_when_it_panics() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let tcc = client.tcc();
    let gid = tcc.gid().to_owned();
    let branch = tcc_branch(&fake, "hotel");
    let task = tokio::spawn(async move {
        tcc.run(|scope| async move {
            scope.try_branch(branch).await?;
            if scope.gid().is_empty() {
                return Ok(());
            }
            panic!("the booking code has a bug");
        })
        .await
    });
    let joined: Result<Result<(), ClientError>, _> = task.await;
    assert!(joined.unwrap_err().is_panic(), "the panic goes on");
    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Aborted);
    assert_eq!(fake.count("/hotel/cancel"), 1);
    assert_eq!(fake.count("/hotel/confirm"), 0);
}

#[tokio::test]
async fn refused_try_aborts_and_cancels_what_ran() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    fake.set_default(
        "/flight/try",
        Answer::Json(409, json!({"detail": "no seat left"})),
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let tcc = client.tcc();
    let gid = tcc.gid().to_owned();
    let fake_ref = &fake;
    let err = tcc
        .run(|scope| async move {
            scope.try_branch(tcc_branch(fake_ref, "hotel")).await?;
            scope.try_branch(tcc_branch(fake_ref, "flight")).await?;
            Ok::<_, ClientError>(())
        })
        .await
        .unwrap_err();
    match &err {
        ClientError::Refused { branch, detail, .. } => {
            assert_eq!(branch, "flight");
            assert_eq!(detail, "no seat left");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Aborted);
    // The scope's abort named the refused Try: the coordinator keeps its
    // reason, though it never saw the Try's answer itself.
    let flight = tx.branch("flight").expect("the flight branch");
    assert_eq!(flight.refusal.as_deref(), Some("no seat left"), "{tx:?}");
    let view = client.get(&gid).await.unwrap();
    let cause = view.abort_cause().expect("an abort cause");
    assert_eq!(cause.branch_id, Some("flight"), "{cause:?}");
    assert_eq!(cause.refusal, Some("no seat left"), "{cause:?}");
    assert_eq!(fake.count("/flight/try"), 1, "a refusal is not retried");
    assert_eq!(fake.count("/hotel/cancel"), 1);
    assert_eq!(
        fake.count("/hotel/confirm") + fake.count("/flight/confirm"),
        0
    );
}

#[tokio::test]
async fn try_with_unknown_outcome_is_retried_then_aborted() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    fake.set_default("/hotel/try", Answer::Status(503));
    let client = Client::new(&coordinator.url()).unwrap();
    let tcc = client.tcc().try_attempts(2);
    let gid = tcc.gid().to_owned();
    let fake_ref = &fake;
    let err = tcc
        .run(|scope| async move { scope.try_branch(tcc_branch(fake_ref, "hotel")).await })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TryUnknown { .. }), "{err:?}");
    assert_eq!(fake.count("/hotel/try"), 2);
    assert_eq!(
        client.wait(&gid, WAIT).await.unwrap().status,
        Status::Aborted
    );
    assert_eq!(
        fake.count("/hotel/cancel"),
        1,
        "a Try that may have run is cancelled"
    );
}

#[tokio::test]
async fn bad_request_carries_the_coordinator_detail() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    let client = Client::new(&coordinator.url()).unwrap();
    let err = client
        .saga()
        .branch(
            SagaBranch::new("stock")
                .action("ftp://example.invalid/x")
                .compensate(fake.url("/c")),
        )
        .submit()
        .await
        .unwrap_err();
    match err {
        ClientError::BadRequest { status, detail } => {
            assert_eq!(status, 400);
            assert!(detail.contains("must use http or https"), "{detail}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    let missing = client.get("no-such-gid").await.unwrap_err();
    assert!(
        matches!(missing, ClientError::NotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn wait_that_ends_before_the_outcome_is_timed_out() {
    let (coordinator, fake) = (
        Coordinator::start(&[]).await,
        FakeParticipant::start().await,
    );
    fake.set_default("/stock/action", Answer::Hang);
    let client = Client::new(&coordinator.url()).unwrap();
    let err = client
        .saga()
        .branch(saga_branch(&fake, "stock"))
        .submit_and_wait(Duration::from_millis(300))
        .await
        .unwrap_err();
    match err {
        ClientError::TimedOut { status, .. } => assert_eq!(status, Status::Running),
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_coordinator_is_reported_as_such() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = client
        .saga()
        .branch(
            SagaBranch::new("a")
                .action("http://x/a")
                .compensate("http://x/c"),
        )
        .submit()
        .await;
    assert!(
        matches!(err, Err(ClientError::Unreachable { .. })),
        "{err:?}"
    );
    let err = client
        .tcc()
        .run(|_| async { Ok::<_, ClientError>(()) })
        .await;
    assert!(
        matches!(err, Err(ClientError::Unreachable { .. })),
        "{err:?}"
    );
    assert!(matches!(
        Client::new("not a url"),
        Err(ClientError::Config(_))
    ));
}

#[tokio::test]
async fn a_branch_missing_a_url_is_refused_before_anything_is_sent() {
    // The fake stands where the coordinator would: any request would show.
    let fake = FakeParticipant::start().await;
    let client = Client::new(&fake.url("")).unwrap();
    let err = client
        .saga()
        .branch(saga_branch(&fake, "complete"))
        .branch(SagaBranch::new("stock").action(fake.url("/a")))
        .submit()
        .await;
    match err {
        Err(ClientError::IncompleteBranch { branch, missing }) => {
            assert_eq!(branch, "stock");
            assert_eq!(missing, [dtx_sdk::BranchOp::Compensate]);
        }
        other => panic!("expected IncompleteBranch, got {other:?}"),
    }
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}
