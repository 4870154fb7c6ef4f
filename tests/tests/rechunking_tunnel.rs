//! A tunnel that cuts and joins the byte stream arbitrarily (as a
//! port-forward or a slow link does) changes nothing: every file arrives
//! whole. The proxy here forwards between `lks` and the agent in random
//! pieces, from 1 byte to 64 KiB, with occasional pauses.

use lks_e2e::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const TOKEN: &str = "rechunk-token";

fn pump(mut from: TcpStream, mut to: TcpStream, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let want = 1 + rng.below(buf.len() as u64) as usize;
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Write what was read in random smaller pieces.
        let mut done = 0;
        while done < n {
            let piece = (1 + rng.below(4096) as usize).min(n - done);
            if to.write_all(&buf[done..done + piece]).is_err() {
                return;
            }
            done += piece;
            if rng.below(200) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Starts the proxy in front of `target`; returns its address.
fn rechunking_proxy(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { break };
            let Ok(server) = TcpStream::connect(&target) else {
                break;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(client, server, 2 * i as u64 + 1));
            std::thread::spawn(move || pump(s2, c2, 2 * i as u64 + 2));
        }
    });
    addr
}

#[test]
fn a_tunnel_that_recuts_the_stream_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    generate_tree(&src, 400, 6_000_000, 21);
    // One large file too, sent whole and then as a delta.
    std::fs::write(src.join("big.bin"), Rng::new(5).bytes(3 << 20)).unwrap();
    let agent = Agent::start(&dst, TOKEN);
    let url = format!("http://{}", rechunking_proxy(agent.addr.clone()));
    let out = sync_once(&src, &url, TOKEN, &[]);
    assert_success(&out);
    let mut big = std::fs::read(src.join("big.bin")).unwrap();
    big[1_500_000] ^= 0xff;
    std::fs::write(src.join("big.bin"), &big).unwrap();
    let out = sync_once(&src, &url, TOKEN, &[]);
    assert_success(&out);
    assert_same_tree(&src, &dst);
}
