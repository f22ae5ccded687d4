//! How a [`Directory`] turns host names into endpoints and keeps them
//! current, with a resolver whose answers the tests choose (no network:
//! nothing here sends a request).

use super::*;
use std::sync::Mutex as StdMutex;

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(2),
    max: Duration::from_secs(10),
};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A directory of `url`, whose name resolves to what `answers` holds at
/// each lookup.
fn directory(url: &str, answers: Arc<StdMutex<io::Result<Vec<IpAddr>>>>) -> Directory {
    let base = Url::parse(url).unwrap();
    let name = base.host_str().map(str::to_owned);
    let resolve: Arc<ResolveFn> = Arc::new(move |_name| {
        let answer = match &*answers.lock().unwrap() {
            Ok(addrs) => Ok(addrs.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        Box::pin(async move { answer })
    });
    Directory::new(
        vec![Target { base, name }],
        reqwest::Client::new(),
        Some(Expansion {
            resolve,
            user_agent: "test",
        }),
        Settings {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            backoff: BACKOFF,
        },
    )
}

fn addresses(directory: &Directory) -> Vec<Option<IpAddr>> {
    directory.endpoints().iter().map(|e| e.addr).collect()
}

#[tokio::test]
async fn an_address_that_stays_keeps_its_endpoint_and_its_health() {
    let answers = Arc::new(StdMutex::new(Ok(vec![ip(1), ip(2)])));
    let directory = directory("http://coordinators.test:7707", answers.clone());
    assert!(
        directory.endpoints().is_empty(),
        "nothing before the first use"
    );
    directory.resolve(|_| true).await;
    assert_eq!(addresses(&directory), [Some(ip(1)), Some(ip(2))]);
    let second = directory.endpoints()[1].clone();
    second.request_failed(BACKOFF);

    *answers.lock().unwrap() = Ok(vec![ip(2), ip(3), ip(2)]);
    directory.resolve(|_| true).await;
    assert_eq!(
        addresses(&directory),
        [Some(ip(2)), Some(ip(3))],
        "in the resolver's order, once each"
    );
    let kept = directory.endpoints()[0].clone();
    assert!(
        Arc::ptr_eq(&kept, &second),
        "the same endpoint, not a new one"
    );
    assert!(!kept.health().is_up(), "its failure is remembered");
    assert!(directory.endpoints()[1].health().is_up());
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_known_addresses() {
    let answers = Arc::new(StdMutex::new(Ok(vec![ip(1)])));
    let directory = directory("http://coordinators.test:7707", answers.clone());
    directory.resolve(|_| true).await;
    *answers.lock().unwrap() = Err(io::Error::other("the DNS server is down"));
    directory.resolve(|_| true).await;
    assert_eq!(addresses(&directory), [Some(ip(1))]);
    *answers.lock().unwrap() = Ok(Vec::new());
    directory.resolve(|_| true).await;
    assert_eq!(
        addresses(&directory),
        [Some(ip(1))],
        "no addresses is no better"
    );
}

#[tokio::test]
async fn a_name_that_never_resolved_is_left_to_the_http_client() {
    let answers = Arc::new(StdMutex::new(Err(io::Error::other("NXDOMAIN"))));
    let directory = directory("http://coordinators.test:7707", answers.clone());
    directory.resolve(|_| true).await;
    let endpoints = directory.endpoints();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].addr, None);
    assert_eq!(endpoints[0].base.as_str(), "http://coordinators.test:7707/");
    // Once it resolves, the addresses replace the stand-in.
    *answers.lock().unwrap() = Ok(vec![ip(1), ip(2)]);
    directory.resolve(|_| true).await;
    assert_eq!(addresses(&directory), [Some(ip(1)), Some(ip(2))]);
}

#[tokio::test]
async fn names_are_due_again_after_a_while_or_sooner_when_everything_is_down() {
    let answers = Arc::new(StdMutex::new(Ok(vec![ip(1), ip(2)])));
    let directory = directory("http://coordinators.test:7707", answers);
    let now = Instant::now();
    assert!(
        !directory.resolution_due(now),
        "the first lookup is the first request's"
    );
    directory.resolve(|_| true).await;
    let now = Instant::now();
    assert!(!directory.resolution_due(now));
    assert!(directory.resolution_due(now + RESOLVE_EVERY));
    for endpoint in directory.endpoints() {
        endpoint.probe_failed(BACKOFF, "test", false);
    }
    assert!(!directory.resolution_due(now + Duration::from_secs(1)));
    assert!(directory.resolution_due(now + BACKOFF.initial));
}

#[tokio::test]
async fn a_failed_probe_that_got_no_answer_abandons_requests_in_flight() {
    let answers = Arc::new(StdMutex::new(Ok(vec![ip(1)])));
    let directory = directory("http://coordinators.test:7707", answers);
    directory.resolve(|_| true).await;
    let endpoint = directory.endpoints()[0].clone();
    let mut abandoned = Box::pin(endpoint.marked_down());
    // An answer that is not "ready" (a 503) leaves requests alone.
    endpoint.probe_failed(BACKOFF, "/readyz answered 503", false);
    assert!(futures_util::poll!(abandoned.as_mut()).is_pending());
    endpoint.probe_failed(BACKOFF, "no answer", true);
    abandoned.await;
    // A request that starts now waits for the next silence.
    let later = Box::pin(endpoint.marked_down());
    assert!(futures_util::poll!(later).is_pending());
}
