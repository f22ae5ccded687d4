//! A client that knows several coordinators, against real `dtx serve`
//! processes sharing one PostgreSQL database: registrations spread over
//! them and go on when one is killed (SIGKILL) or paused (SIGSTOP), a
//! coordinator back from a crash takes requests again once probed, a host
//! name resolving to two addresses is two coordinators, and when every
//! coordinator fails the error says whether any answered.

mod common;

use dtx_sdk::client::{Decision, SagaBranch, TccBranch, TransactionView};
use dtx_sdk::{Client, ClientError, Status};
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::postgres::{PostgresServer, fresh_database};
use dtx_tests::process::{DtxProcess, Http};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A coordinator process that can be killed and started again on the same
/// address (the client knows it by its URL).
struct Node {
    process: DtxProcess,
    db: String,
    id: String,
    addr: SocketAddr,
}

impl Node {
    async fn start(db: &str, id: &str, listen: &str) -> Node {
        let process = spawn(db, id, listen)
            .await
            .unwrap_or_else(|e| panic!("dtx serve starts: {e}"));
        Node {
            addr: process.addr(),
            process,
            db: db.to_owned(),
            id: id.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn kill(&mut self) {
        self.process.kill9().await;
    }

    async fn restart(&mut self) {
        self.process = spawn(&self.db, &self.id, &self.addr.to_string())
            .await
            .unwrap_or_else(|e| panic!("dtx serve starts again on {}: {e}", self.addr));
    }

    /// The coordinator that registered (and so owns) `gid`, read from the
    /// shared store through this one.
    async fn owner_of(&self, gid: &str) -> String {
        let url = format!("{}/v1/transactions/{gid}", self.url());
        let (code, body) = Http::new().get_json(&url).await;
        assert_eq!(code, 200, "{body}");
        body["owner"].as_str().expect("an owner").to_owned()
    }
}

async fn spawn(db: &str, id: &str, listen: &str) -> Result<DtxProcess, String> {
    let args: Vec<String> = [
        "serve",
        "--listen",
        listen,
        "--db",
        db,
        "--node-id",
        id,
        "--lease-ms",
        "1500",
        "--claim-interval-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = DtxProcess::spawn(common::dtx_binary(), &args, &[]).await?;
    process.wait_ready(Duration::from_secs(30)).await?;
    Ok(process)
}

async fn shared_db() -> String {
    fresh_database()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)")
}

/// Short pauses of failed coordinators, so that one back from a crash is
/// probed again quickly.
fn client_of(urls: &[String]) -> Client {
    Client::builder_for(urls)
        .down_backoff(Duration::from_millis(300), Duration::from_secs(1))
        .build()
        .expect("client")
}

fn saga(client: &Client, fake: &FakeParticipant) -> dtx_sdk::client::SagaBuilder {
    client.saga().branch(
        SagaBranch::new("a")
            .action(fake.url("/a/action"))
            .compensate(fake.url("/a/compensate")),
    )
}

async fn committed_saga(client: &Client, fake: &FakeParticipant) -> TransactionView {
    let tx = saga(client, fake).submit_and_wait(WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed, "{tx:?}");
    tx
}

/// Waits (polling the client's own view, at most 30 s) until the endpoint
/// of `url` takes requests again.
async fn until_healthy(client: &Client, url: &str) {
    let url = format!("{url}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !client.endpoints().iter().any(|e| e.url == url && e.healthy) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never became healthy: {:?}",
            client.endpoints()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn healthy(client: &Client, url: &str) -> bool {
    let url = format!("{url}/");
    client.endpoints().iter().any(|e| e.url == url && e.healthy)
}

#[tokio::test]
async fn registrations_go_on_when_a_coordinator_dies_and_use_it_again_once_it_is_back() {
    let db = shared_db().await;
    let mut a = Node::start(&db, "fo-kill-a", "127.0.0.1:0").await;
    let b = Node::start(&db, "fo-kill-b", "127.0.0.1:0").await;
    let fake = FakeParticipant::start().await;
    let client = client_of(&[a.url(), b.url()]);

    // Both up: registrations take them in turn.
    let mut owners = BTreeSet::new();
    for _ in 0..4 {
        let registered = saga(&client, &fake).submit().await.unwrap();
        owners.insert(b.owner_of(&registered.transaction().gid).await);
    }
    assert_eq!(
        owners,
        BTreeSet::from(["fo-kill-a".into(), "fo-kill-b".into()])
    );
    let before = committed_saga(&client, &fake).await;

    a.kill().await;
    for _ in 0..6 {
        let tx = committed_saga(&client, &fake).await;
        assert_eq!(b.owner_of(&tx.gid).await, "fo-kill-b");
    }
    assert!(!healthy(&client, &a.url()), "{:?}", client.endpoints());
    // What was registered before the crash is still there, through b.
    assert_eq!(
        client.get(&before.gid).await.unwrap().status,
        Status::Committed
    );
    let waited = client.wait(&before.gid, WAIT).await.unwrap();
    assert_eq!(waited.status, Status::Committed);
    let decision = client.decision(&before.gid).await.unwrap();
    assert_eq!(decision.decision, Decision::Commit);

    a.restart().await;
    until_healthy(&client, &a.url()).await;
    // Two registrations in a row take both coordinators, one each.
    let mut owners = BTreeSet::new();
    for _ in 0..2 {
        let registered = saga(&client, &fake).submit().await.unwrap();
        owners.insert(b.owner_of(&registered.transaction().gid).await);
    }
    assert!(owners.contains("fo-kill-a"), "{owners:?}");
}

#[tokio::test]
async fn a_tcc_scope_commits_through_another_coordinator_when_its_own_dies() {
    let db = shared_db().await;
    let nodes = tokio::sync::Mutex::new(vec![
        Node::start(&db, "fo-tcc-a", "127.0.0.1:0").await,
        Node::start(&db, "fo-tcc-b", "127.0.0.1:0").await,
    ]);
    let urls: Vec<String> = nodes.lock().await.iter().map(Node::url).collect();
    let fake = FakeParticipant::start().await;
    let client = client_of(&urls);
    let branch = TccBranch::new("t")
        .try_url(fake.url("/t/try"))
        .confirm(fake.url("/t/confirm"))
        .cancel(fake.url("/t/cancel"));

    let nodes_ref = &nodes;
    let (gid, killed) = client
        .tcc()
        .wait_for_outcome(WAIT)
        .run(|scope| async move {
            scope.try_branch(branch).await?;
            // The coordinator that opened the transaction dies before the
            // commit: the commit must go to the other one.
            let mut nodes = nodes_ref.lock().await;
            let owner = nodes[0].owner_of(scope.gid()).await;
            let home = nodes
                .iter_mut()
                .find(|n| n.id == owner)
                .expect("a known owner");
            home.kill().await;
            Ok::<_, ClientError>((scope.gid().to_owned(), owner))
        })
        .await
        .unwrap();

    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Committed, "{tx:?}");
    assert_eq!(fake.count("/t/confirm"), 1);
    assert_eq!(fake.count("/t/cancel"), 0);
    let nodes = nodes.lock().await;
    let survivor = nodes.iter().find(|n| n.id != killed).unwrap();
    assert_eq!(
        survivor.owner_of(&gid).await,
        survivor.id,
        "it took the commit over"
    );
}

#[tokio::test]
async fn a_paused_coordinator_is_left_without_waiting_for_the_request_timeout() {
    let db = shared_db().await;
    let a = Node::start(&db, "fo-pause-a", "127.0.0.1:0").await;
    let b = Node::start(&db, "fo-pause-b", "127.0.0.1:0").await;
    let fake = FakeParticipant::start().await;
    // A timeout nobody waits for: only the failover can end a request to a
    // paused coordinator.
    let client = Client::builder_for([a.url(), b.url()])
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(
        client.failover_time(),
        dtx_sdk::client::DEFAULT_FAILOVER_TIME
    );

    // The first request of a client goes to the first coordinator; a's call
    // to the participant is answered late, so the registration (which
    // waits for the outcome) is in flight at a when a is paused.
    fake.script(
        "/slow/action",
        [Answer::delayed(Duration::from_secs(5), Answer::Status(200))],
    );
    let in_flight = tokio::spawn({
        let client = client.clone();
        let branch = SagaBranch::new("slow")
            .action(fake.url("/slow/action"))
            .compensate(fake.url("/slow/compensate"));
        async move { client.saga().branch(branch).submit_and_wait(WAIT).await }
    });
    fake.wait_for_calls("/slow/action", 1, WAIT).await.unwrap();
    a.process.pause();

    let guard = Duration::from_secs(120);
    let tx = tokio::time::timeout(guard, in_flight)
        .await
        .expect("the registration waiting on the paused coordinator went elsewhere")
        .unwrap()
        .unwrap();
    assert_eq!(tx.status, Status::Committed, "{tx:?}");
    assert_eq!(b.owner_of(&tx.gid).await, "fo-pause-b", "b took it over");
    let sequential = async {
        for _ in 0..3 {
            let tx = committed_saga(&client, &fake).await;
            assert_eq!(b.owner_of(&tx.gid).await, "fo-pause-b");
        }
    };
    tokio::time::timeout(guard, sequential)
        .await
        .expect("requests complete while a coordinator is paused");
    assert!(!healthy(&client, &a.url()));

    a.process.resume();
    until_healthy(&client, &a.url()).await;
}

/// A port free on both 127.0.0.1 and 127.0.0.2 a moment ago.
fn port_free_on_two_addresses() -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn a_name_with_two_addresses_is_two_coordinators() {
    // The name has no DNS record anywhere: the test's resolver answers it
    // with two loopback addresses, on which two coordinators listen on the
    // same port. A request reaches them only if the client pins each
    // address while keeping the name in its URL.
    let db = shared_db().await;
    let port = port_free_on_two_addresses();
    let mut one = Node::start(&db, "fo-dns-1", &format!("127.0.0.1:{port}")).await;
    let two = Node::start(&db, "fo-dns-2", &format!("127.0.0.2:{port}")).await;
    let fake = FakeParticipant::start().await;
    let lookups = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(&format!("http://coordinators.dtx.test:{port}"))
        .resolver({
            let lookups = lookups.clone();
            move |name| {
                lookups.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert_eq!(name, "coordinators.dtx.test");
                    Ok(vec![
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                    ])
                }
            }
        })
        .build()
        .unwrap();
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        0,
        "resolved at first use only"
    );

    let mut owners = BTreeSet::new();
    for _ in 0..4 {
        let tx = committed_saga(&client, &fake).await;
        owners.insert(two.owner_of(&tx.gid).await);
    }
    assert_eq!(
        owners,
        BTreeSet::from(["fo-dns-1".into(), "fo-dns-2".into()])
    );
    let addresses: Vec<Option<IpAddr>> = client.endpoints().iter().map(|e| e.address).collect();
    assert_eq!(
        addresses,
        [
            Some("127.0.0.1".parse().unwrap()),
            Some("127.0.0.2".parse().unwrap())
        ]
    );
    assert!(
        client
            .endpoints()
            .iter()
            .all(|e| e.url == format!("http://coordinators.dtx.test:{port}/"))
    );

    one.kill().await;
    for _ in 0..3 {
        let tx = committed_saga(&client, &fake).await;
        assert_eq!(two.owner_of(&tx.gid).await, "fo-dns-2");
    }
}

#[tokio::test]
async fn the_system_resolver_expands_localhost() {
    let coordinator = common::Coordinator::start(&[]).await;
    let port = coordinator.process.addr().port();
    let fake = FakeParticipant::start().await;
    let client = Client::new(&format!("http://localhost:{port}")).unwrap();
    committed_saga(&client, &fake).await;
    // Whatever else localhost resolves to here (::1 too, perhaps), its
    // IPv4 address is one endpoint, pinned.
    let endpoints = client.endpoints();
    assert!(
        endpoints
            .iter()
            .any(|e| e.address == Some(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        "{endpoints:?}"
    );
    assert!(
        endpoints
            .iter()
            .all(|e| e.address.is_some_and(|a| a.is_loopback()))
    );
}

/// A URL where nothing listens (a port that was free a moment ago).
fn nothing_listens() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn every_coordinator_down_is_unreachable() {
    let client = client_of(&[nothing_listens(), nothing_listens()]);
    let fake = FakeParticipant::start().await;
    for _ in 0..3 {
        let error = saga(&client, &fake).submit().await.unwrap_err();
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert!(error.is_unreachable());
        let error = client.decision("g1").await.unwrap_err();
        assert!(error.is_unreachable(), "{error:?}");
    }
}

#[tokio::test]
async fn a_503_from_one_coordinator_beats_no_answer_from_the_other() {
    let pg = PostgresServer::start()
        .await
        .expect("PostgreSQL for tests (run tests/images/build-images.sh)");
    let answering = Node::start(&pg.url(), "fo-503", "127.0.0.1:0").await;
    pg.stop().await.unwrap();
    let client = Client::builder_for([answering.url(), nothing_listens()])
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let fake = FakeParticipant::start().await;
    // The coordinator answers 503 only after its connection timeout (5 s),
    // long after its probes have given up on it: the client must still
    // wait for it rather than report that nobody answered. Twice: the
    // second time both are known to be down, and are tried all the same.
    for _ in 0..2 {
        let error = saga(&client, &fake).submit().await.unwrap_err();
        assert!(
            matches!(error, ClientError::Unavailable { .. }),
            "{error:?}\n{}",
            answering.process.log()
        );
        assert!(!error.is_unreachable(), "a coordinator answered");
        let error = client.decision("g1").await.unwrap_err();
        assert!(
            matches!(error, ClientError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(!error.is_unreachable());
    }
}

#[tokio::test]
async fn a_definitive_answer_is_never_sent_elsewhere() {
    // Two coordinators on stores of their own (which a real deployment
    // must not do): a transaction exists on one only, so a 404 from the
    // other would turn into the transaction if the client tried further.
    let (one, other) = (
        common::Coordinator::start(&[]).await,
        common::Coordinator::start(&[]).await,
    );
    let fake = FakeParticipant::start().await;
    let tx = committed_saga(&Client::new(&one.url()).unwrap(), &fake).await;
    let client = client_of(&[one.url(), other.url()]);
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(match client.get(&tx.gid).await {
            Ok(found) => found.status.to_string(),
            Err(ClientError::NotFound { .. }) => "not found".to_owned(),
            Err(e) => panic!("{e:?}"),
        });
    }
    answers.sort();
    assert_eq!(answers, ["committed", "not found"]);
}
