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

/// A plain HTTP/1.0 GET: the status code and the body (at most 64 KiB).
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
    let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: lks\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Read the whole (HTTP/1.0, so connection-closing) answer: closing with
    // unread data would reset the connection, and servers log that as an error.
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) if buf.len() < 64 * 1024 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("{url}: no complete answer within 5 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let n = buf.len();
    let head = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer: {head:?}"))?;
    let body = match head.find("\r\n\r\n") {
        Some(i) => head[i + 4..].to_string(),
        None => String::new(),
    };
    Ok((code, body))
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
