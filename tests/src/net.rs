//! Loopback networking: free ports and minimal HTTP clients.

use std::time::Duration;

/// A loopback port that was free a moment ago, and that no other call in
/// this test process has handed out: the kernel may give the same ephemeral
/// port to two binds in a row once the first is closed, and two tests (or
/// the app and debug ports of one test) would then meet on it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The body of `GET path` on `127.0.0.1:port` (HTTP/1.0), if anything answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_exchange(port, path).map(|raw| http_body(&raw))
}

/// The status code and body of `GET path` on `127.0.0.1:port` (HTTP/1.0), if
/// anything answers with a status line.
pub fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    let raw = http_exchange(port, path)?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, http_body(&raw)))
}

/// The whole response to `GET path` on `127.0.0.1:port`.
fn http_exchange(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    Some(raw)
}

/// The body of `GET path` on `127.0.0.1:port` over HTTP/1.1, read by its
/// length (Content-Length or chunks), not until the connection closes: a
/// pod port-forward passes the server's close on only about a second later.
pub fn http11_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_nodelay(true).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16384];
    let complete = |raw: &[u8]| -> Option<String> {
        let text = std::str::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let head = head.to_ascii_lowercase();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return (body.len() >= len).then(|| body[..len].to_string());
        }
        if head.contains("transfer-encoding: chunked") {
            let mut out = String::new();
            let mut rest = body;
            loop {
                let (size, after) = rest.split_once("\r\n")?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                if size == 0 {
                    return Some(out);
                }
                if after.len() < size + 2 {
                    return None;
                }
                out.push_str(&after[..size]);
                rest = &after[size + 2..];
            }
        }
        None
    };
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(body) = complete(&raw) {
            return Some(body);
        }
    }
}

fn http_body(raw: &str) -> String {
    raw.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}
