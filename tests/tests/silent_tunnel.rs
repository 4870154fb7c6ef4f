//! A tunnel that dies silently (it stops carrying bytes but never closes,
//! as a frozen port-forward or a peer gone without a FIN does) is found by
//! `lks sync` within the keepalive's 5 s + 20 s (measured: ~24 s): it
//! reconnects and the change made meanwhile
//! arrives. The proxy here forwards each connection until it is frozen;
//! connections made after that are forwarded normally.

use lks_e2e::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "silent-tunnel-token";

/// Forwards `from` to `to` while connection `id` is not frozen; once it is,
/// holds both sockets open and carries nothing.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, frozen_below: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        if id < frozen_below.load(Ordering::SeqCst) {
            // Silent: no byte, no FIN, until the test ends.
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// A proxy on a free port to `agent`; freezing it silences every connection
/// made so far.
struct Proxy {
    port: u16,
    next: Arc<AtomicU64>,
    frozen_below: Arc<AtomicU64>,
}

impl Proxy {
    fn start(agent: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (next, frozen_below) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (n, f, agent) = (next.clone(), frozen_below.clone(), agent.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(&agent) else {
                    continue;
                };
                let id = n.fetch_add(1, Ordering::SeqCst);
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (f1, f2) = (f.clone(), f.clone());
                std::thread::spawn(move || pump(client, upstream, id, f1));
                std::thread::spawn(move || pump(u2, c2, id, f2));
            }
        });
        Proxy {
            port,
            next,
            frozen_below,
        }
    }

    fn freeze(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[test]
fn a_tunnel_that_goes_silent_is_found_and_the_change_arrives_after_reconnecting() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    write(&src, "a.txt", "one\n");
    let agent = Agent::start(&dst, TOKEN);
    let proxy = Proxy::start(&agent.addr);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let mut watch = Watch::spawn(&src, &url, TOKEN, &[]);
    watch.wait_line("initial sync", Duration::from_secs(30));
    proxy.freeze();
    let t = Instant::now();
    write(&src, "a.txt", "two\n");
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(
            dst.join("a.txt")
        )
        .is_ok_and(|c| c == "two\n")),
        "the change never arrived over a new connection: {:?}",
        watch.stderr.try_iter().collect::<Vec<_>>()
    );
    eprintln!(
        "silent tunnel -> change arrived over a new connection in {} ms",
        t.elapsed().as_millis()
    );
    let status = watch.terminate();
    assert!(status.success(), "{status:?}");
}
