//! The web page of a running `lks up`: its assets, embedded in the binary
//! (plain HTML, CSS and JavaScript: no build step, no CDN, works offline),
//! and the stream of the board's changes it follows (server-sent events: a
//! snapshot, then deltas at most every [`PACE`]).

use crate::api::{Answer, Streams, full};
use crate::board::{Board, Shared, lines_json};
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Response, StatusCode, header};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Log lines in a stream's snapshot, at most (the page asks for more of a
/// service when it shows that service).
const SNAPSHOT_LINES: usize = 5000;

/// Log lines in one delta, at most (the rest are counted as skipped).
const DELTA_LINES: usize = 5000;

/// Changes are gathered this long before a delta goes out.
const PACE: Duration = Duration::from_millis(100);

/// A comment goes out after this long without a change (proxies and the
/// browser keep the stream open).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The page's assets; the page carries the run's token.
pub fn asset(path: &str, token: &str) -> Answer {
    let (body, kind) = match path {
        "/" | "/index.html" => (
            INDEX.replace("{{TOKEN}}", token),
            "text/html; charset=utf-8",
        ),
        "/app.js" => (APP.to_string(), "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE.to_string(), "text/css; charset=utf-8"),
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(full("not found"))
                .expect("a valid response");
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        )
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(full(body))
        .expect("a valid response")
}

/// `GET /api/events`: the board as server-sent events until the client
/// goes or the run ends (`end`).
pub fn events(board: Shared, stop: watch::Receiver<bool>, streams: Streams) -> Answer {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    streams.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        stream(board, stop, tx).await;
        streams.fetch_sub(1, Ordering::SeqCst);
    });
    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed(body))
        .expect("a valid response")
}

/// Until the run ends.
async fn ended(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|end| *end).await.map(|_| ());
}

/// One server-sent event.
fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A snapshot, then a delta after each change (gathered for [`PACE`]).
async fn stream(board: Shared, mut stop: watch::Receiver<bool>, tx: mpsc::Sender<Bytes>) {
    let (mut tick, mut wake, mut seq, snapshot) = {
        let b = board.lock().unwrap();
        let (tick, wake) = b.watch();
        let lines = b.lines(&[], 0, 0, SNAPSHOT_LINES).unwrap_or_default();
        let snapshot = serde_json::json!({
            "services": b.states(),
            "lines": lines_json(&lines),
        });
        (tick, wake, Board::last_seq(), snapshot)
    };
    if tx.send(event("snapshot", &snapshot)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { break },
            _ = ended(&mut stop) => break,
            () = tx.closed() => return,
            () = tokio::time::sleep(KEEPALIVE) => {
                if tx.send(Bytes::from_static(b": still here\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        }
        tokio::time::sleep(PACE).await;
        let delta = {
            let b = board.lock().unwrap();
            if b.watch().0 == tick {
                continue;
            }
            let services = b.changed_since(tick);
            let lines = b.lines(&[], seq, 0, usize::MAX).unwrap_or_default();
            let skipped = lines.len().saturating_sub(DELTA_LINES);
            (tick, _) = b.watch();
            seq = Board::last_seq();
            let mut delta = serde_json::json!({
                "services": services,
                "lines": lines_json(&lines[skipped..]),
                "skipped": skipped,
            });
            if !services.is_empty() {
                // Which services there are (a reload adds and removes).
                delta["order"] = b.states().iter().map(|s| s.name.as_str()).collect();
            }
            delta
        };
        if tx.send(event("delta", &delta)).await.is_err() {
            return;
        }
    }
    let _ = tx.send(event("end", &serde_json::json!({}))).await;
}
