//! A loopback HTTP proxy between the SDK and a real coordinator that loses
//! chosen requests or their answers, the way a network does: a request can
//! vanish before it arrives, its answer can vanish after the coordinator
//! acted on it, or it can be held and arrive later than a request sent
//! after it.
//!
//! Each client connection carries one request: the proxy forwards it on a
//! fresh upstream connection with `connection: close`, so the answer ends
//! where the upstream closes and needs no parsing, and the client opens a
//! new connection for its next request (which also keeps the client from
//! silently resending a request on a reused connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which requests a fate applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/transactions/{gid}/commit`
    Commit,
    /// `POST /v1/transactions/{gid}/abort`
    Abort,
    /// `GET /v1/transactions/{gid}`
    Get,
    /// Anything else (open, register a branch, ...).
    Other,
}

impl Route {
    fn of(method: &str, path: &str) -> Route {
        let path = path.split('?').next().unwrap_or(path);
        match method {
            "POST" if path.ends_with("/commit") => Route::Commit,
            "POST" if path.ends_with("/abort") => Route::Abort,
            "GET" if path.starts_with("/v1/transactions/") => Route::Get,
            _ => Route::Other,
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded, and its answer returned.
    Forward,
    /// The connection is closed before the request is forwarded: it never
    /// reaches the coordinator.
    DropRequest,
    /// Forwarded; the coordinator's whole answer is read (so it acted), then
    /// the client's connection is closed without it.
    DropAnswer,
    /// The client's connection is closed at once; the request reaches the
    /// coordinator later, just before the next request of this route.
    HoldUntil(Route),
}

#[derive(Default)]
struct State {
    /// Fates still to apply, per route, first first.
    fates: HashMap<Route, Vec<Fate>>,
    /// Requests held, per the route whose next request releases them.
    held: HashMap<Route, Vec<Vec<u8>>>,
    /// Requests seen, per route.
    seen: HashMap<Route, usize>,
}

/// The proxy; it runs until dropped.
pub struct LossyProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// A proxy on `127.0.0.1:0` in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> LossyProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the coordinator's address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A broken connection is what this proxy is for.
                    let _ = serve(client, upstream, state).await;
                });
            }
        });
        LossyProxy { addr, state, task }
    }

    /// `http://ADDR` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `times` requests of `route` meet `fate`.
    pub fn then(&self, route: Route, fate: Fate, times: usize) {
        let mut state = self.state.lock().unwrap();
        state
            .fates
            .entry(route)
            .or_default()
            .extend(std::iter::repeat_n(fate, times));
    }

    /// How many requests of `route` the proxy received.
    pub fn seen(&self, route: Route) -> usize {
        *self.state.lock().unwrap().seen.get(&route).unwrap_or(&0)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let Some((route, request)) = read_request(&mut client).await? else {
        return Ok(());
    };
    let (fate, released) = {
        let mut state = state.lock().unwrap();
        *state.seen.entry(route).or_default() += 1;
        let fates = state.fates.entry(route).or_default();
        let fate = if fates.is_empty() {
            Fate::Forward
        } else {
            fates.remove(0)
        };
        let released = state.held.remove(&route).unwrap_or_default();
        (fate, released)
    };
    for late in released {
        forward(upstream, &late).await?;
    }
    match fate {
        Fate::Forward => {
            let answer = forward(upstream, &request).await?;
            client.write_all(&answer).await?;
            client.shutdown().await
        }
        Fate::DropRequest => Ok(()),
        Fate::DropAnswer => forward(upstream, &request).await.map(drop),
        Fate::HoldUntil(release) => {
            let mut state = state.lock().unwrap();
            state.held.entry(release).or_default().push(request);
            Ok(())
        }
    }
}

/// Sends one request on a new connection and reads the answer to the end.
async fn forward(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(upstream).await?;
    conn.write_all(request).await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Reads one request (head and `content-length` body) and returns its route
/// and its bytes, rewritten to `connection: close`; `None` at end of stream.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(Route, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let route = Route::of(parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    let mut rewritten = format!("{request_line}\r\n");
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name == "content-length" {
            length = line[line.find(':').unwrap() + 1..]
                .trim()
                .parse()
                .unwrap_or(0);
        }
        if name != "connection" {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("connection: close\r\n\r\n");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut request = rewritten.into_bytes();
    request.extend_from_slice(&body);
    Ok(Some((route, request)))
}
