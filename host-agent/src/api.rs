//! The API of a running `lks up`: a small HTTP server on 127.0.0.1 over the
//! [`board`](crate::board), for `lks status` and `lks logs` (and, to come,
//! the web page). Every request carries the run's token (`Authorization:
//! Bearer TOKEN`): another local user or a web page cannot read the logs.
//! Where to find it is written to `.lks/api.json` (mode 0600) for the run and
//! removed when it ends.
//!
//! - `GET /api/state`: `{"services": [ServiceState...]}` in launch order.
//! - `POST /api/trigger|disable|enable?service=NAME`: `{"done": "..."}`, or
//!   404 with `{"error": "..."}` (see [`Action`]).
//! - `GET /api/logs?service=A,B&after=SEQ&since_ms=T&tail=N` (every
//!   parameter optional; no service: all): `{"lines": [{service, seq,
//!   at_ms, source, text}...]}` in order.

use crate::board::Shared;
use crate::fleet::Action;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

/// The file beside the run's work dir that says where its API is.
pub const DISCOVERY: &str = "api.json";

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

/// The API of one run; stops serving and removes its discovery file when
/// dropped.
pub struct Api {
    file: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Serves `board` on a free port of 127.0.0.1 and writes `work/api.json`;
/// actions go to `actions`.
pub async fn serve(
    board: Shared,
    work: &Path,
    actions: mpsc::UnboundedSender<Asked>,
) -> std::io::Result<Api> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let token = hex::encode(rand::random::<[u8; 24]>());
    let file = work.join(DISCOVERY);
    write_private(
        &file,
        &serde_json::to_vec(&Discovery {
            url,
            token: token.clone(),
            pid: std::process::id(),
        })
        .map_err(std::io::Error::other)?,
    )?;
    let expected = format!("Bearer {token}");
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let board = board.clone();
            let expected = expected.clone();
            let actions = actions.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (board, expected, actions) =
                        (board.clone(), expected.clone(), actions.clone());
                    async move { Ok::<_, Infallible>(answer(req, &board, &expected, &actions).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(Api { file, task })
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

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a valid response")
}

fn refused(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": why }))
}

/// The answer to one request.
async fn answer<B>(
    req: Request<B>,
    board: &Shared,
    expected: &str,
    actions: &mpsc::UnboundedSender<Asked>,
) -> Response<Full<Bytes>> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| subtle::ConstantTimeEq::ct_eq(v.as_bytes(), expected.as_bytes()).into());
    if !authorized {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this run's token is needed (Authorization: Bearer TOKEN, from .lks/api.json)",
        );
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let path = req.uri().path();
    if req.method() == hyper::Method::POST {
        let action = match path {
            "/api/trigger" => Action::Trigger,
            "/api/disable" => Action::Disable,
            "/api/enable" => Action::Enable,
            _ => return refused(StatusCode::NOT_FOUND, "no such action"),
        };
        let Some(service) = param("service") else {
            return refused(StatusCode::BAD_REQUEST, "which service? (?service=NAME)");
        };
        let (reply, done) = oneshot::channel();
        let asked = Asked {
            action,
            service: service.to_string(),
            reply,
        };
        if actions.send(asked).is_err() {
            return refused(StatusCode::SERVICE_UNAVAILABLE, "lks up is stopping");
        }
        return match done.await {
            Ok(Ok(done)) => json(StatusCode::OK, &serde_json::json!({ "done": done })),
            Ok(Err(why)) => refused(StatusCode::NOT_FOUND, &why),
            Err(_) => refused(StatusCode::SERVICE_UNAVAILABLE, "lks up is stopping"),
        };
    }
    if req.method() != hyper::Method::GET {
        return refused(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
    }
    let board = board.lock().unwrap();
    match path {
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
                Ok(lines) => {
                    let lines: Vec<serde_json::Value> = lines
                        .into_iter()
                        .map(|(service, l)| {
                            serde_json::json!({
                                "service": service,
                                "seq": l.seq,
                                "at_ms": l.at_ms,
                                "source": l.source,
                                "text": l.text,
                            })
                        })
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ "lines": lines }))
                }
                Err(why) => refused(StatusCode::NOT_FOUND, &why),
            }
        }
        _ => refused(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}
