//! `Forward`: a TCP connection to a port on the agent's own loopback, its
//! bytes carried in gRPC messages both ways. The agent runs in the app's
//! network namespace (its container or pod), so an app that listens on
//! 127.0.0.1 there is reached, as `kubectl port-forward` reaches it; only
//! loopback is dialled, never another address.

use lks_proto::v1::ForwardData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

/// Bytes read from the app per message.
const READ_BYTES: usize = 64 << 10;

/// Messages on their way to the host before reading from the app waits.
const AHEAD: usize = 8;

/// Connects to the port the first message names and starts carrying bytes;
/// the returned receiver is the answer's stream.
pub async fn open(
    mut from_host: Streaming<ForwardData>,
) -> Result<mpsc::Receiver<Result<ForwardData, Status>>, Status> {
    let first = match from_host.next().await {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(e),
        None => return Err(Status::invalid_argument("a Forward names its port first")),
    };
    let port = u16::try_from(first.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Status::invalid_argument(format!("no such port: {}", first.port)))?;
    let app = connect(port).await?;
    let (mut reader, mut writer) = app.into_split();
    let (tx, rx) = mpsc::channel(AHEAD);
    // Host -> app; the host ending its stream closes our sending side. It
    // holds no sender of the answer: the app closing the connection ends
    // the answer, whatever the host still sends.
    tokio::spawn(async move {
        let mut next = Some(first.data);
        loop {
            if let Some(data) = next.take()
                && !data.is_empty()
                && writer.write_all(&data).await.is_err()
            {
                break;
            }
            match from_host.next().await {
                Some(Ok(m)) => next = Some(m.data),
                Some(Err(e)) => {
                    tracing::debug!(port, "forward: the host's stream failed: {e}");
                    break;
                }
                None => break,
            }
        }
        let _ = writer.shutdown().await;
    });
    // App -> host, until the app closes the connection.
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let data = ForwardData {
                        port: 0,
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(Ok(data)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::aborted(format!(
                            "reading from 127.0.0.1:{port}: {e}"
                        ))))
                        .await;
                    break;
                }
            }
        }
    });
    Ok(rx)
}

/// The app on `port` of loopback: IPv4 first, then IPv6.
async fn connect(port: u16) -> Result<TcpStream, Status> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let first = match TcpStream::connect(v4).await {
        Ok(s) => return Ok(nodelay(s)),
        Err(e) => e,
    };
    match TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
        Ok(s) => Ok(nodelay(s)),
        Err(_) => Err(Status::unavailable(format!(
            "nothing listens on port {port} where the app runs ({first}): is the app up, and \
             listening on that port?"
        ))),
    }
}

fn nodelay(s: TcpStream) -> TcpStream {
    let _ = s.set_nodelay(true);
    s
}
