//! Every bound of `dtx::limits` at its limit and one past it, against a real
//! `dtx serve`: the refusal is a problem+json with the right status, names
//! the flag, and writes nothing; slow clients and idle connections cannot
//! hold the server.

mod common;

use common::*;
use dtx_tests::participant::{Answer, FakeParticipant};
use dtx_tests::process::Http;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn saga(gid: &str, branches: Vec<Value>) -> Value {
    let options = json!({"retry": {"initial_ms": 50, "max_ms": 200, "multiplier": 2.0}});
    json!({"gid": gid, "mode": "saga", "branches": branches, "options": options})
}

fn branch(id: &str, url: &str, payload: Value, depends_on: &[&str]) -> Value {
    let mut b = json!({"id": id, "action": url, "compensate": url, "payload": payload});
    if !depends_on.is_empty() {
        b["depends_on"] = json!(depends_on);
    }
    b
}

/// `branch` with `n` headers of its own.
fn with_headers(mut branch: Value, n: usize) -> Value {
    let headers: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("x-header-{i}"), json!("v")))
        .collect();
    branch["headers"] = Value::Object(headers);
    branch
}

async fn count(c: &Coordinator) -> usize {
    let (_, page) = Http::new().get_json(&c.url("/v1/transactions")).await;
    page["transactions"].as_array().unwrap().len()
}

#[tokio::test]
async fn each_registration_bound_admits_its_limit_and_refuses_one_more() {
    let c = Coordinator::sqlite(&[
        "--max-branches",
        "3",
        "--max-url-bytes",
        "40",
        "--max-payload-bytes",
        "20",
        "--max-dependencies",
        "2",
        "--min-retry-ms",
        "50",
        "--max-branch-headers",
        "2",
    ])
    .await;
    let url = "http://127.0.0.1:9/a"; // nothing listens: the saga just retries
    let url_at_limit = format!("http://127.0.0.1:9/{}", "a".repeat(21));
    assert_eq!(url_at_limit.len(), 40);
    let small = || branch("a", url, json!(1), &[]);
    let slow = |initial_ms: u64| {
        json!({"gid": format!("r{initial_ms}"), "mode": "saga",
        "branches": [small()], "options": {"retry": {"initial_ms": initial_ms, "max_ms": 1000, "multiplier": 2.0}}})
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            saga(
                "b3",
                vec![
                    branch("a", url, json!(1), &[]),
                    branch("b", url, json!(1), &[]),
                    branch("c", url, json!(1), &[]),
                ],
            ),
            201,
            "",
        ),
        (
            saga(
                "b4",
                vec![
                    branch("a", url, json!(1), &[]),
                    branch("b", url, json!(1), &[]),
                    branch("c", url, json!(1), &[]),
                    branch("d", url, json!(1), &[]),
                ],
            ),
            400,
            "--max-branches",
        ),
        (
            saga("u40", vec![branch("a", &url_at_limit, json!(1), &[])]),
            201,
            "",
        ),
        (
            saga(
                "u41",
                vec![branch("a", &format!("{url_at_limit}b"), json!(1), &[])],
            ),
            400,
            "--max-url-bytes",
        ),
        (
            saga("p20", vec![branch("a", url, json!("x".repeat(18)), &[])]),
            201,
            "",
        ),
        (
            saga("p21", vec![branch("a", url, json!("x".repeat(19)), &[])]),
            413,
            "--max-payload-bytes",
        ),
        (
            saga(
                "d2",
                vec![
                    small(),
                    branch("b", url, json!(1), &["a"]),
                    branch("c", url, json!(1), &["b"]),
                ],
            ),
            201,
            "",
        ),
        (
            saga(
                "d3",
                vec![
                    small(),
                    branch("b", url, json!(1), &["a"]),
                    branch("c", url, json!(1), &["a", "b"]),
                ],
            ),
            400,
            "--max-dependencies",
        ),
        (saga("h2", vec![with_headers(small(), 2)]), 201, ""),
        (
            saga("h3", vec![with_headers(small(), 3)]),
            400,
            "--max-branch-headers",
        ),
        (slow(50), 201, ""),
        (slow(49), 400, "--min-retry-ms"),
    ];
    for (body, expected, flag) in cases {
        let before = count(&c).await;
        let (code, answer, kind) = Http::new()
            .post_json(&c.url("/v1/transactions"), &body)
            .await;
        assert_eq!(code, expected, "{}: {answer}", body["gid"]);
        if expected >= 400 {
            assert_eq!(kind, "application/problem+json");
            assert!(
                answer["detail"].as_str().unwrap().contains(flag),
                "{answer}"
            );
            assert_eq!(count(&c).await, before, "a refusal wrote nothing");
        }
    }

    // TCC branches registered one by one count against the same bound.
    let http = Http::new();
    let (code, _, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": "t", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201);
    let tcc = |id: &str| json!({"id": id, "confirm": url, "cancel": url});
    for id in ["a", "b", "c"] {
        let (code, answer, _) = http
            .post_json(&c.url("/v1/transactions/t/branches"), &tcc(id))
            .await;
        assert_eq!(code, 201, "{answer}");
    }
    let (code, answer, _) = http
        .post_json(&c.url("/v1/transactions/t/branches"), &tcc("d"))
        .await;
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("--max-branches"),
        "{answer}"
    );
    let (code, answer, _) = http
        .post_json(&c.url("/v1/transactions/t/branches"), &tcc("c"))
        .await;
    assert_eq!(
        code, 200,
        "registering a branch again is still answered: {answer}"
    );
    let (_, view) = http.get_json(&c.url("/v1/transactions/t")).await;
    assert_eq!(view["branches"].as_array().unwrap().len(), 3);
}

/// Starts `n` requests that each wait `wait_ms` for transaction `gid`,
/// each asking again on a 503 (a probe may hold a permit for a moment), so
/// that all `n` end up holding a permit. Each task ends when its wait does.
fn hold_waiters(
    c: &Coordinator,
    gid: &str,
    n: usize,
    wait_ms: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let url = c.url(&format!("/v1/transactions/{gid}?wait_ms={wait_ms}"));
            tokio::spawn(async move {
                loop {
                    let status = reqwest::get(&url).await.unwrap().status().as_u16();
                    if status != 503 {
                        assert_eq!(status, 200);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// Asks for `gid` with a 1 ms wait until the answer is a 503: once every
/// waiter permit is held. A probe that gets a permit holds it for 1 ms only.
async fn first_refused_waiter(c: &Coordinator, gid: &str) -> reqwest::Response {
    let url = c.url(&format!("/v1/transactions/{gid}?wait_ms=1"));
    for _ in 0..2000 {
        let response = reqwest::get(&url).await.unwrap();
        if response.status().as_u16() == 503 {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no waiter was refused: the permits were never all held");
}

#[tokio::test]
async fn waiters_beyond_the_bound_get_503_with_retry_after() {
    let c = Coordinator::sqlite(&["--max-waiters", "1"]).await;
    let http = Http::new();
    let (code, _, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": "w", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201);
    let first = hold_waiters(&c, "w", 1, 3000).remove(0);
    let second = first_refused_waiter(&c, "w").await;
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    let problem: Value = second.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("--max-waiters"),
        "{problem}"
    );
    // Asking without waiting needs no permit.
    let (code, _) = http.get_json(&c.url("/v1/transactions/w")).await;
    assert_eq!(code, 200);
    first.await.unwrap();
    // The permit is back once the wait ended.
    let (code, _) = http.get_json(&c.url("/v1/transactions/w?wait_ms=10")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let c = Coordinator::sqlite(&["--header-read-timeout-ms", "300"]).await;
    let mut slow = TcpStream::connect(c.process.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: dtx\r\n")
        .await
        .unwrap();
    // The server closes the connection; without the timeout this read
    // would wait for the end of the headers for ever.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the slow client was never disconnected");
    let (code, _) = Http::new().get_json(&c.url("/v1/transactions")).await;
    assert_eq!(code, 200, "others are served");
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let c = Coordinator::sqlite(&["--max-connections", "2"]).await;
    let idle_a = TcpStream::connect(c.process.addr()).await.unwrap();
    let idle_b = TcpStream::connect(c.process.addr()).await.unwrap();
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(1000))
        .build()
        .unwrap();
    let refused = quick.get(c.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "a third connection is not served: {refused:?}"
    );
    drop(idle_a);
    let served = reqwest::Client::new()
        .get(c.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    drop(idle_b);
}

#[tokio::test]
async fn participant_calls_beyond_the_bound_wait_for_a_slot() {
    let c = Coordinator::sqlite(&["--max-outbound-calls", "1"]).await;
    let p = FakeParticipant::start().await;
    p.script("/slow/action", [Answer::Hang]);
    // The hanging call holds the only slot for its whole 5 s timeout: far
    // longer than the checks below take, however slow the machine.
    let options = json!({"request_timeout_ms": 5000, "retry": {"initial_ms": 50, "max_ms": 100, "multiplier": 2.0}});
    let http = Http::new();
    let slow = json!({"gid": "slow", "mode": "saga", "options": options,
        "branches": [saga_branch(&p, "slow")]});
    assert_eq!(
        http.post_json(&c.url("/v1/transactions"), &slow).await.0,
        201
    );
    for _ in 0..200 {
        if p.count("/slow/action") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.count("/slow/action"), 1);
    let quick = json!({"gid": "quick", "mode": "saga", "options": options,
        "branches": [saga_branch(&p, "quick")]});
    assert_eq!(
        http.post_json(&c.url("/v1/transactions"), &quick).await.0,
        201
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        p.count("/quick/action"),
        0,
        "the only slot is held by the hanging call"
    );
    let t = wait_final(&c, "quick").await;
    assert_eq!(status(&t), "committed", "{t}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_is_answered_and_nothing_is_written() {
    let c = Coordinator::sqlite(&["--body-read-timeout-ms", "300"]).await;
    let mut slow = TcpStream::connect(c.process.addr()).await.unwrap();
    slow.write_all(
        b"POST /v1/transactions HTTP/1.1\r\nHost: dtx\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mode\":",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the slow client was never answered");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(count(&c).await, 0);
}

/// The resident memory (kB) and thread count of a process, from /proc.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Sends `n` requests that each bound refuses (too many branches, too large
/// a payload, a waiter past the bound, too long a URL, too many headers,
/// too many `depends_on` edges, retries below the floor), 32 at a time.
async fn refused_requests(c: &Coordinator, n: usize) {
    let client = reqwest::Client::new();
    let url = "http://127.0.0.1:9/a";
    let small = || branch("a", url, json!(1), &[]);
    let too_many = saga(
        "many",
        (0..5)
            .map(|i| branch(&format!("b{i}"), url, json!(1), &[]))
            .collect(),
    );
    let too_large = saga("large", vec![branch("a", url, json!("x".repeat(100)), &[])]);
    let too_long = saga(
        "long",
        vec![branch(
            "a",
            &format!("{url}{}", "a".repeat(100)),
            json!(1),
            &[],
        )],
    );
    let too_many_headers = saga("headers", vec![with_headers(small(), 3)]);
    let too_many_edges = saga(
        "edges",
        vec![
            small(),
            branch("b", url, json!(1), &["a"]),
            branch("c", url, json!(1), &["a", "b"]),
        ],
    );
    let mut too_fast = saga("fast", vec![small()]);
    too_fast["options"]["retry"]["initial_ms"] = json!(1);
    let bodies = [
        too_many,
        too_large,
        too_long,
        too_many_headers,
        too_many_edges,
        too_fast,
    ];
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 32).min(n))
            .map(|i| {
                let client = client.clone();
                let request = match bodies.get(i % (bodies.len() + 1)) {
                    Some(body) => client.post(c.url("/v1/transactions")).json(body),
                    None => client.get(c.url("/v1/transactions/m?wait_ms=5000")),
                };
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        for task in batch {
            let status = task.await.unwrap().unwrap();
            assert!(matches!(status, 400 | 413 | 503), "{status}");
        }
        next += 32;
    }
}

/// The tasks alive in the coordinator's runtime once the count holds still
/// (the same in two reads 200 ms apart; at most 5 s): the connections of a
/// client that just went away end their tasks a moment later, and a leak
/// does not go away.
async fn settled_tasks(c: &Coordinator) -> i64 {
    let mut last = alive_tasks(c).await;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = alive_tasks(c).await;
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// The tasks alive in the coordinator's runtime, from `/metrics`.
async fn alive_tasks(c: &Coordinator) -> i64 {
    let text = reqwest::get(c.url("/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("dtx_runtime_alive_tasks "))
        .unwrap_or_else(|| panic!("no task gauge in /metrics:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn memory_threads_and_tasks_stay_flat_under_requests_refused_at_the_bounds() {
    let c = Coordinator::sqlite(&[
        "--max-branches",
        "3",
        "--max-payload-bytes",
        "20",
        "--max-url-bytes",
        "64",
        "--max-branch-headers",
        "2",
        "--max-dependencies",
        "2",
        "--min-retry-ms",
        "10",
        "--max-waiters",
        "2",
        "--max-wait-ms",
        "300000",
        "--log",
        "warn",
    ])
    .await;
    let http = Http::new();
    let (code, _, _) = http
        .post_json(
            &c.url("/v1/transactions"),
            &json!({"gid": "m", "mode": "tcc"}),
        )
        .await;
    assert_eq!(code, 201);
    // Two waiters hold both permits for the whole test, so every other
    // waiter is refused.
    let holders = hold_waiters(&c, "m", 2, 300_000);
    first_refused_waiter(&c, "m").await;
    // Warm up the allocator and the connection machinery, then measure.
    refused_requests(&c, 1000).await;
    let (rss_before, threads_before) = rss_and_threads(c.process.pid());
    let tasks_before = settled_tasks(&c).await;
    refused_requests(&c, 7000).await;
    let (rss_after, threads_after) = rss_and_threads(c.process.pid());
    let tasks_after = settled_tasks(&c).await;
    // A leak of 4 KiB per request would add 28 MiB; allocator noise is a
    // few MiB at most.
    assert!(
        rss_after < rss_before + 12 * 1024,
        "resident memory grew from {rss_before} kB to {rss_after} kB over 7000 refused requests"
    );
    assert!(
        threads_after <= threads_before + 2,
        "threads grew from {threads_before} to {threads_after}"
    );
    // One task kept per request would be thousands.
    assert!(
        tasks_after <= tasks_before + 2,
        "tasks grew from {tasks_before} to {tasks_after} over 7000 refused requests"
    );
    assert_eq!(count(&c).await, 1, "only the open transaction exists");
    for holder in holders {
        holder.abort();
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_gives_its_slot_back() {
    let c =
        Coordinator::sqlite(&["--max-connections", "1", "--header-read-timeout-ms", "300"]).await;
    // One request, then silence on a kept-alive connection.
    let mut idle = TcpStream::connect(c.process.addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: dtx\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // The only slot is free again once the idle connection is closed.
    let served = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(c.url("/healthz"))
        .send()
        .await;
    assert_eq!(served.map(|r| r.status().as_u16()).ok(), Some(200));
    drop(idle);
}
