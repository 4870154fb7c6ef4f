//! The API of a running `lks up`: a small HTTP server on 127.0.0.1 over the
//! [`board`](crate::board), for the shell's commands (`lks status`, `lks
//! logs`, `lks trigger`...) and the web page ([`ui`](crate::ui)).
//!
//! Who may use it: only connections from this user's processes (or root's;
//! the peer's uid is looked up in `/proc/net/tcp`), with a `Host` of
//! 127.0.0.1 or localhost (no DNS rebinding), and, except for the page's
//! static assets, the run's token: `Authorization: Bearer TOKEN` (from
//! `.lks/api.json`, mode 0600, removed when the run ends; the page gets it
//! inside its HTML, which another web site cannot read; the event stream
//! takes it as `?token=`, as EventSource cannot send headers). Another web
//! page cannot send the header without a CORS preflight, which is never
//! allowed: no CSRF.
//!
//! - `GET /api/state`: `{"services": [ServiceState...]}` in launch order.
//! - `GET /api/logs?service=A,B&after=SEQ&since_ms=T&tail=N` (every
//!   parameter optional; no service: all): `{"lines": [{service, seq,
//!   at_ms, source, text}...]}` in order.
//! - `GET /api/events`: server-sent events: `snapshot` (every service and
//!   the last log lines), then `delta`s (the services that changed, the new
//!   lines), at most 10 a second.
//! - `POST /api/ACTION?service=NAME`, ACTION one of `trigger`, `restart`,
//!   `disable`, `enable`, `manual`, `auto` (see [`Action`]): `{"done":
//!   "..."}`, or 404 with `{"error": "..."}`.

use crate::board::Shared;
use crate::fleet::Action;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot, watch};

/// The file beside the run's work dir that says where its API is.
pub const DISCOVERY: &str = "api.json";

/// The web UI's port when none is asked (Tilt's: a habit worth keeping).
pub const UI_PORT: u16 = 10350;

/// How many ports after the asked one are tried when it is taken.
const PORTS_TRIED: u16 = 100;

/// What `.lks/api.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Discovery {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The run's token.
    pub token: String,
    /// The pid of the `lks up` that serves it.
    pub pid: u32,
}

/// An action asked through the API, for `up.rs` to do on its fleet.
pub struct Asked {
    /// What to do.
    pub action: Action,
    /// To which service.
    pub service: String,
    /// What was done, or why not.
    pub reply: oneshot::Sender<Result<&'static str, String>>,
}

/// A response of the API.
pub type Answer = Response<BoxBody<Bytes, Infallible>>;

/// The API of one run; stops serving (also its event streams) and removes
/// its discovery file when dropped.
pub struct Api {
    file: PathBuf,
    task: tokio::task::JoinHandle<()>,
    page: Option<String>,
    stop: watch::Sender<bool>,
    streams: Streams,
}

/// How many event streams are open.
pub type Streams = std::sync::Arc<std::sync::atomic::AtomicUsize>;

impl Api {
    /// The web page's address, when the run has one.
    pub fn page(&self) -> Option<&str> {
        self.page.as_deref()
    }

    /// The run ends: no more requests; the event streams say `end` to their
    /// pages (waited for up to a second).
    pub async fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.file);
        self.stop.send_replace(true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.streams.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// What every request is answered with.
#[derive(Clone)]
struct Served {
    board: Shared,
    token: String,
    actions: mpsc::UnboundedSender<Asked>,
    /// The page is served.
    ui: bool,
    /// Its port, for the peer's uid.
    port: u16,
    /// True when the run ends: the event streams end.
    stop: watch::Receiver<bool>,
    streams: Streams,
}

/// Serves `board` on 127.0.0.1 and writes `work/api.json`; actions go to
/// `actions`. With `ui`, the web page too, on that port (or the next free
/// one; 0: any); else on any free port.
pub async fn serve(
    board: Shared,
    work: &Path,
    actions: mpsc::UnboundedSender<Asked>,
    ui: Option<u16>,
) -> std::io::Result<Api> {
    let listener = bind(ui).await?;
    let port = listener.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let token = hex::encode(rand::random::<[u8; 24]>());
    let file = work.join(DISCOVERY);
    write_private(
        &file,
        &serde_json::to_vec(&Discovery {
            url: url.clone(),
            token: token.clone(),
            pid: std::process::id(),
        })
        .map_err(std::io::Error::other)?,
    )?;
    let (stop_tx, stop) = watch::channel(false);
    let streams = Streams::default();
    let served = Served {
        board,
        token,
        actions,
        ui: ui.is_some(),
        port,
        stop,
        streams: streams.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let ours = ours(peer, served.port);
                let service = hyper::service::service_fn(move |req| {
                    let (served, ours) = (served.clone(), ours.clone());
                    async move {
                        Ok::<_, Infallible>(match ours {
                            Ok(()) => answer(req, &served).await,
                            Err(why) => refused(StatusCode::FORBIDDEN, &why),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(Api {
        file,
        task,
        page: ui.map(|_| format!("{url}/")),
        stop: stop_tx,
        streams,
    })
}

/// A listener on 127.0.0.1: `port` or one of the next free ones (0 or
/// None: any).
async fn bind(port: Option<u16>) -> std::io::Result<tokio::net::TcpListener> {
    if let Some(first) = port.filter(|p| *p != 0) {
        for p in first..first.saturating_add(PORTS_TRIED) {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
                return Ok(l);
            }
        }
    }
    tokio::net::TcpListener::bind(("127.0.0.1", 0)).await
}

/// Ok when the connection from `peer` (to our `port`) comes from a process
/// of this user or of root; else why not.
fn ours(peer: SocketAddr, port: u16) -> Result<(), String> {
    let me = rustix::process::geteuid().as_raw();
    match peer_uid(peer, port) {
        Some(uid) if uid == me || uid == 0 => Ok(()),
        Some(uid) => Err(format!(
            "this lks up belongs to uid {me}; uid {uid} cannot use it"
        )),
        None => Err("cannot tell which user connected (/proc/net/tcp)".into()),
    }
}

/// The uid owning the socket at `peer` connected to 127.0.0.1:`port`, from
/// `/proc/net/tcp` (where the peer's end lists `peer` as its local address).
fn peer_uid(peer: SocketAddr, port: u16) -> Option<u32> {
    use crate::procs::TcpSocket;
    let SocketAddr::V4(peer) = peer else {
        return None;
    };
    let local = TcpSocket::v4(*peer.ip(), peer.port());
    let remote = TcpSocket::v4(std::net::Ipv4Addr::LOCALHOST, port);
    crate::procs::tcp_sockets()
        .into_iter()
        .find(|s| s.local == local && s.remote == remote)
        .map(|s| s.uid)
}

/// Writes `bytes` to `path`, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(bytes.into()).boxed()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(full(value.to_string()))
        .expect("a valid response")
}

fn refused(status: StatusCode, why: &str) -> Answer {
    json(status, &serde_json::json!({ "error": why }))
}

/// The request's query parameters, decoded.
fn query<B>(req: &Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Whether the request names this server as 127.0.0.1 or localhost (a
/// rebound DNS name is refused).
fn host_is_ours<B>(req: &Request<B>) -> bool {
    let Some(host) = req.headers().get(hyper::header::HOST) else {
        return false;
    };
    let host = host.to_str().unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost")
}

/// The answer to one request.
async fn answer<B>(req: Request<B>, served: &Served) -> Answer {
    if !host_is_ours(&req) {
        return refused(
            StatusCode::FORBIDDEN,
            "ask for 127.0.0.1 or localhost (this server answers no other name)",
        );
    }
    let query = query(&req);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let path = req.uri().path().to_string();
    let get = req.method() == hyper::Method::GET;
    if get && !path.starts_with("/api/") {
        return match served.ui {
            true => crate::ui::asset(&path, &served.token),
            false => refused(
                StatusCode::NOT_FOUND,
                "this lks up runs without its web UI (--no-ui)",
            ),
        };
    }
    let header_token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Only the event stream takes it in the URL (EventSource sends no headers).
    let token = header_token.or(param("token").filter(|_| get && path == "/api/events"));
    let authorized = token.is_some_and(|t| {
        subtle::ConstantTimeEq::ct_eq(t.as_bytes(), served.token.as_bytes()).into()
    });
    if !authorized {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this run's token is needed (Authorization: Bearer TOKEN, from .lks/api.json)",
        );
    }
    if req.method() == hyper::Method::POST {
        let Some(action) = path.strip_prefix("/api/").and_then(Action::named) else {
            return refused(StatusCode::NOT_FOUND, "no such action");
        };
        let Some(service) = param("service") else {
            return refused(StatusCode::BAD_REQUEST, "which service? (?service=NAME)");
        };
        return act(served, action, service).await;
    }
    if !get {
        return refused(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
    }
    if path == "/api/events" {
        return crate::ui::events(
            served.board.clone(),
            served.stop.clone(),
            served.streams.clone(),
        );
    }
    let board = served.board.lock().unwrap();
    match path.as_str() {
        "/api/state" => json(
            StatusCode::OK,
            &serde_json::json!({ "services": board.states() }),
        ),
        "/api/logs" => {
            let services: Vec<String> = param("service")
                .map(|s| {
                    s.split(',')
                        .filter(|n| !n.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let number = |name: &str| param(name).and_then(|v| v.parse::<u64>().ok());
            let tail = number("tail").map_or(usize::MAX, |t| t as usize);
            match board.lines(
                &services,
                number("after").unwrap_or(0),
                number("since_ms").unwrap_or(0),
                tail,
            ) {
                Ok(lines) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "lines": crate::board::lines_json(&lines) }),
                ),
                Err(why) => refused(StatusCode::NOT_FOUND, &why),
            }
        }
        _ => refused(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Hands `action` on `service` to the run's loop and waits for what it did.
async fn act(served: &Served, action: Action, service: &str) -> Answer {
    let (reply, done) = oneshot::channel();
    let asked = Asked {
        action,
        service: service.to_string(),
        reply,
    };
    if served.actions.send(asked).is_err() {
        return refused(StatusCode::SERVICE_UNAVAILABLE, "lks up is stopping");
    }
    match done.await {
        Ok(Ok(done)) => json(StatusCode::OK, &serde_json::json!({ "done": done })),
        Ok(Err(why)) => refused(StatusCode::NOT_FOUND, &why),
        Err(_) => refused(StatusCode::SERVICE_UNAVAILABLE, "lks up is stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_of_a_loopback_connection_is_this_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(peer_uid(peer, port), Some(me));
        assert_eq!(ours(peer, port), Ok(()));
        // No such connection: cannot tell, refused.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(ours(nobody, port).is_err());
    }
}
