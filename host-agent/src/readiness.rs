//! Readiness checks: run until the service answers, or give up.

use crate::config::{Check, Readiness};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One attempt: `Ok` when the service is ready, else why not. `exec` checks
/// run through `exec`, which the caller provides (they run in the service's
/// environment, through its agent).
pub async fn probe<F, Fut>(check: &Check, exec: F) -> Result<(), String>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    match check {
        Check::Tcp { address } => tcp(address).await.map(|_| ()),
        Check::Http { url } => http(url).await,
        Check::Exec { argv } => exec(argv.clone()).await,
    }
}

async fn tcp(address: &str) -> Result<TcpStream, String> {
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {address}: {e}")),
        Err(_) => Err(format!("connecting to {address} timed out")),
    }
}

/// A plain HTTP/1.0 GET; 2xx and 3xx mean ready.
async fn http(url: &str) -> Result<(), String> {
    let (code, _) = http_get(url).await?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("{url} answered {code}"))
    }
}

/// A plain HTTP/1.1 GET (`Connection: close`): the status code and the
/// body (at most 64 KiB). The answer is read by its length (Content-Length,
/// chunks), not until the server closes: through a pod port-forward a close
/// arrives only about a second later. Reading the whole answer before
/// closing keeps the server from seeing a reset.
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// readiness URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tcp(&address).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: lks\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() >= 64 * 1024 || answer_complete(&buf) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("{url}: no complete answer within 5 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let head = String::from_utf8_lossy(&buf);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer: {head:?}"))?;
    let body = match head.find("\r\n\r\n") {
        Some(i)
            if head[..i]
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(&head[i + 4..])
        }
        Some(i) => head[i + 4..].to_string(),
        None => String::new(),
    };
    Ok((code, body))
}

/// A chunked body's content.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

/// Whether `raw` holds a whole HTTP answer: its head, and a body as long as
/// its Content-Length, or chunks up to the last, or none (204, 304, 1xx).
fn answer_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    let code = head.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('1') || code == "204" || code == "304" {
        return true;
    }
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    // Neither: the answer ends when the server closes.
    false
}

/// Probes until ready or `readiness.timeout` passes; returns the last reason
/// on failure.
pub async fn wait<F, Fut>(readiness: &Readiness, mut exec: F) -> Result<Duration, String>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    // Most services are up within tens of milliseconds: probe fast at first,
    // then every `period`.
    let mut pause = Duration::from_millis(10).min(readiness.period);
    loop {
        match probe(&readiness.check, &mut exec).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(why) if start.elapsed() >= readiness.timeout => {
                return Err(format!("not ready after {:?}: {why}", readiness.timeout));
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(readiness.period);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn no_exec(_: Vec<String>) -> Result<(), String> {
        Err("no exec here".into())
    }

    #[tokio::test]
    async fn an_answer_is_read_by_its_length_not_until_the_server_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1\r\n!\r\n0\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
                // Like a pod port-forward: the close comes much later.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(s);
                });
            }
        });
        let url = format!("http://{addr}/");
        let t = Instant::now();
        assert_eq!(http_get(&url).await.unwrap(), (200, "ok\n".to_string()));
        assert_eq!(http_get(&url).await.unwrap(), (200, "ok!".to_string()));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn http_readiness_accepts_2xx_and_reports_other_codes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 503 Unavailable\r\n\r\n",
                "HTTP/1.1 200 OK\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let check = Check::Http {
            url: format!("http://{addr}/health"),
        };
        assert_eq!(
            probe(&check, no_exec).await,
            Err(format!("http://{addr}/health answered 503"))
        );
        assert_eq!(probe(&check, no_exec).await, Ok(()));
    }

    #[tokio::test]
    async fn tcp_readiness_waits_for_a_listener_and_times_out_with_the_reason() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = Readiness {
            check: Check::Tcp {
                address: addr.to_string(),
            },
            period: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
        };
        let err = wait(&r, no_exec).await.unwrap_err();
        assert!(
            err.starts_with("not ready after 200ms: cannot connect to"),
            "{err}"
        );
        let _l = tokio::net::TcpListener::bind(addr).await.unwrap();
        assert!(wait(&r, no_exec).await.is_ok());
    }
}
