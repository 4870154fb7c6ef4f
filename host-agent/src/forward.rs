//! A service's ports on 127.0.0.1 of this machine, each connection carried
//! to the same port where the app runs: through a pod port-forward (kube) or
//! the agent's `Forward` call (docker). Both reach the app's own loopback, so
//! an app that listens on 127.0.0.1 in its container is reached, as `kubectl
//! port-forward` reaches it. The ports stay open across new starts of the
//! service (a rebuild, a new pod): only where they lead changes.

use crate::runtime::Tunnel;
use crate::tunnel::{Client, DialFuture, Stream};
use lks_proto::v1::ForwardData;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// Opens a stream to a port where the app runs now (and reports its own
/// failures: a pod that is not there, an app that does not listen).
pub type Opener = Arc<dyn Fn(u16) -> DialFuture + Send + Sync>;

/// Something to say to the developer.
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// Bytes read from a local connection per message to the agent.
const READ_BYTES: usize = 64 << 10;

/// A service's forwarded ports.
pub struct Forwards {
    to: watch::Sender<Opener>,
    /// Each port's listener.
    tasks: Vec<(u16, tokio::task::JoinHandle<()>)>,
}

impl Forwards {
    /// Listens on 127.0.0.1 on each of `ports`, every connection carried by
    /// `opener`; a port that cannot be listened on is reported.
    pub fn start(opener: Opener, ports: &[u16], report: Report) -> Forwards {
        let (to, _) = watch::channel(opener);
        let mut forwards = Forwards { to, tasks: vec![] };
        forwards.listen(ports, &report);
        forwards
    }

    /// From now on, connections are carried by `opener`, and `ports` are
    /// served (a port kept keeps its listener; one no longer named closes).
    pub fn retarget(&mut self, opener: Opener, ports: &[u16], report: &Report) {
        self.to.send_replace(opener);
        self.tasks.retain(|(port, task)| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        self.listen(ports, report);
    }

    /// Starts listening on those of `ports` not served yet.
    fn listen(&mut self, ports: &[u16], report: &Report) {
        for &port in ports {
            if !self.tasks.iter().any(|(p, _)| *p == port) {
                let task = tokio::spawn(serve_port(self.to.subscribe(), port, report.clone()));
                self.tasks.push((port, task));
            }
        }
    }
}

/// Forwards `ports` of service `name` (kept in `all`, each service's) from
/// now on through `opener`: its forwards retargeted, or started.
pub fn to_service(
    all: &mut std::collections::BTreeMap<String, Forwards>,
    name: &str,
    opener: Opener,
    ports: &[u16],
    report: Report,
) {
    match all.get_mut(name) {
        Some(f) => f.retarget(opener, ports, &report),
        None => {
            all.insert(name.to_string(), Forwards::start(opener, ports, report));
        }
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
    }
}

/// Serves 127.0.0.1:`port` until aborted.
async fn serve_port(to: watch::Receiver<Opener>, port: u16, report: Report) {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            report(format!(
                "cannot forward 127.0.0.1:{port} to the app: {e} (is something else using it?)"
            ));
            return;
        }
    };
    loop {
        let Ok((mut local, _)) = listener.accept().await else {
            continue;
        };
        let _ = local.set_nodelay(true);
        let open = to.borrow().clone();
        tokio::spawn(async move {
            if let Ok(mut remote) = open(port).await {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
            }
        });
    }
}

/// An opener through the agent's `Forward` call over `tunnel`, every
/// connection a stream of one HTTP/2 connection to the agent (made again
/// when it fails); a failure is reported once until the next success (a
/// browser retrying a port nobody listens on does not flood the output).
pub fn through_agent(tunnel: Tunnel, report: Report) -> Opener {
    let last_failure: Arc<Mutex<Option<String>>> = Arc::default();
    let agent: Arc<tokio::sync::Mutex<Option<Client>>> = Arc::default();
    Arc::new(move |port| -> DialFuture {
        let (tunnel, report) = (tunnel.clone(), report.clone());
        let (last_failure, agent) = (last_failure.clone(), agent.clone());
        Box::pin(async move {
            let opened = open_on(&tunnel, &agent, port).await;
            let mut last = last_failure.lock().unwrap();
            match &opened {
                Ok(_) => *last = None,
                Err(e) => {
                    let why = format!("forwarding 127.0.0.1:{port} to the app: {e}");
                    if last.as_deref() != Some(why.as_str()) {
                        report(why.clone());
                        *last = Some(why);
                    }
                }
            }
            opened
        })
    })
}

/// Opens `port` over the connection to the agent in `agent`; on a failure
/// (the connection may have died with its agent), once more over a new one,
/// which is kept.
async fn open_on(
    tunnel: &Tunnel,
    agent: &tokio::sync::Mutex<Option<Client>>,
    port: u16,
) -> std::io::Result<Box<dyn Stream>> {
    let kept = agent.lock().await.clone();
    if let Some(mut client) = kept
        && let Ok(stream) = open(&mut client, port).await
    {
        return Ok(stream);
    }
    let (mut client, _) = crate::tunnel::connect_with(&tunnel.dialer, &tunnel.token)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    *agent.lock().await = Some(client.clone());
    open(&mut client, port).await
}

/// A stream to `port` of the agent's loopback, over a `Forward` call.
pub async fn open(client: &mut Client, port: u16) -> std::io::Result<Box<dyn Stream>> {
    let (ours, theirs) = tokio::io::duplex(READ_BYTES);
    let (tx, rx) = mpsc::channel::<ForwardData>(8);
    let first = ForwardData {
        port: port.into(),
        data: Vec::new(),
    };
    tx.send(first).await.map_err(std::io::Error::other)?;
    let mut from_agent = client
        .forward(ReceiverStream::new(rx))
        .await
        .map_err(|s| std::io::Error::other(s.message().to_string()))?
        .into_inner();
    let (mut reader, mut writer) = tokio::io::split(theirs);
    // Local -> app; our end closing ends the call's stream (the agent then
    // closes the app connection's sending side).
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_BYTES];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let data = ForwardData {
                port: 0,
                data: buf[..n].to_vec(),
            };
            if tx.send(data).await.is_err() {
                break;
            }
        }
    });
    // App -> local.
    tokio::spawn(async move {
        while let Ok(Some(m)) = from_agent.message().await {
            if writer.write_all(&m.data).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    Ok(Box::new(ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An opener that answers with `tag` and closes.
    fn answering(tag: &'static str) -> Opener {
        Arc::new(move |_| -> DialFuture {
            Box::pin(async move {
                let (ours, mut theirs) = tokio::io::duplex(64);
                tokio::spawn(async move {
                    let _ = theirs.write_all(tag.as_bytes()).await;
                });
                Ok(Box::new(ours) as Box<dyn Stream>)
            })
        })
    }

    async fn read_from(port: u16) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let mut text = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut text),
        )
        .await
        .ok()?
        .ok()?;
        Some(text)
    }

    /// Three loopback ports that were free a moment ago, all different:
    /// each is held until the others are chosen, since the kernel may hand
    /// out a port again as soon as it is closed.
    fn three_free_ports() -> (u16, u16, u16) {
        let held: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| held[i].local_addr().unwrap().port();
        (port(0), port(1), port(2))
    }

    async fn listening(port: u16) -> bool {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_new_start_retargets_kept_ports_opens_new_ones_and_closes_the_rest() {
        let (a, b, c) = three_free_ports();
        let report: Report = Arc::new(|_| {});
        let mut f = Forwards::start(answering("one"), &[a, b], report.clone());
        assert!(listening(a).await && listening(b).await);
        assert_eq!(read_from(a).await.as_deref(), Some("one"));
        f.retarget(answering("two"), &[a, c], &report);
        assert!(listening(c).await);
        assert_eq!(read_from(a).await.as_deref(), Some("two"));
        assert_eq!(read_from(c).await.as_deref(), Some("two"));
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", b))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(closed, "port {b} is still served");
        drop(f);
    }
}
