//! Readiness checks: run until the service answers, or give up.

use crate::config::{Check, Readiness};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What a check asks of where the app runs: the caller's (through the
/// service's agent, or the host itself for a host resource).
pub trait Where {
    /// Runs an `exec` check (in the service's environment); Ok when it
    /// succeeds.
    fn exec(&mut self, argv: Vec<String>) -> impl Future<Output = Result<(), String>>;

    /// Connects to `port` of the loopback where the app runs, for a TCP
    /// check of `127.0.0.1:port`; None to connect from here instead.
    fn connect(&mut self, port: u16) -> impl Future<Output = Option<Result<(), String>>>;
}

/// One attempt: `Ok` when the service is ready, else why not.
pub async fn probe(check: &Check, at: &mut impl Where) -> Result<(), String> {
    match check {
        Check::Tcp { address } => {
            if let Some(port) = loopback_port(address)
                && let Some(result) = at.connect(port).await
            {
                return result.map_err(|e| format!("{address} where the app runs: {e}"));
            }
            tcp_alive(address).await
        }
        Check::Http { url } => http(url).await,
        Check::Exec { argv } => at.exec(argv.clone()).await,
    }
}

/// The port of a loopback address (`127.0.0.1:P`, `localhost:P`, `[::1]:P`).
fn loopback_port(address: &str) -> Option<u16> {
    let (host, port) = address.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        .then(|| port.parse().ok())
        .flatten()
}

/// How long a connection must stay open to count, when it is made from
/// here to a port lks forwards without an agent to ask (a pod port-forward
/// accepts at once and closes when nothing listens behind it).
const TCP_SETTLE: Duration = Duration::from_millis(100);

/// A TCP check: the connection opens, and is not closed at once (or the
/// server speaks first).
async fn tcp_alive(address: &str) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut s = tcp(address).await?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(TCP_SETTLE, s.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(format!(
            "{address} accepted and closed at once (nothing listens behind it yet)"
        )),
        Ok(Ok(_)) | Err(_) => Ok(()),
    }
}

async fn tcp(address: &str) -> Result<TcpStream, String> {
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("cannot connect to {address}: {e}")),
        Err(_) => Err(format!("connecting to {address} timed out")),
    }
}

/// An HTTP GET; 2xx and 3xx mean ready.
async fn http(url: &str) -> Result<(), String> {
    let (code, _) = http_get(url).await?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("{url} answered {code}"))
    }
}

/// An HTTP GET (hyper's client), `http://` or `https://`: the status code
/// and the body (at most 64 KiB). The answer is read by its length, not until
/// the server closes (through a pod port-forward a close arrives only about a
/// second later).
///
/// Like a Kubernetes `httpGet` probe with `scheme: HTTPS`, an https check
/// does not verify the service's certificate: a service under development
/// has a self-signed one, and the probe sends nothing secret.
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    http_get_with(url, None).await
}

/// [`http_get`], with an `Authorization` header when one is given.
pub async fn http_get_with(
    url: &str,
    authorization: Option<&str>,
) -> Result<(u16, String), String> {
    http_call(hyper::Method::GET, url, authorization).await
}

/// A request without a body (GET, or a POST whose query says it all), with
/// an `Authorization` header when one is given: the status code and the
/// body, as [`http_get`].
pub async fn http_call(
    method: hyper::Method,
    url: &str,
    authorization: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{url}: only http:// and https:// URLs are supported"
        ));
    }
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(unverified_tls())
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<hyper::body::Bytes>>(connector);
    let mut request = hyper::Request::builder().method(method).uri(uri);
    if let Some(a) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, a);
    }
    let request = request
        .header(hyper::header::USER_AGENT, "lks")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let why = crate::tunnel::source_chain(&e);
            if e.is_connect() {
                format!("cannot connect to {authority}: {why}")
            } else {
                format!("{url}: {why}")
            }
        })?;
        let code = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("{url}: no complete answer within 5 s"))?
}

/// A TLS client configuration that accepts any server certificate (see
/// [`http_get`]); built once.
fn unverified_tls() -> rustls::ClientConfig {
    static CONFIG: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        })
        .clone()
}

/// Accepts whatever certificate the server shows, still checking that the
/// handshake is signed by it (the signature algorithms are ring's).
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Probes until ready or `readiness.timeout` passes; returns the last reason
/// on failure.
pub async fn wait(readiness: &Readiness, at: &mut impl Where) -> Result<Duration, String> {
    let start = Instant::now();
    // Most services are up within tens of milliseconds: probe fast at first,
    // then every `period`.
    let mut pause = Duration::from_millis(10).min(readiness.period);
    loop {
        match probe(&readiness.check, at).await {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Here;

    impl Where for Here {
        async fn exec(&mut self, _: Vec<String>) -> Result<(), String> {
            Err("no exec here".into())
        }

        async fn connect(&mut self, _: u16) -> Option<Result<(), String>> {
            None
        }
    }

    #[test]
    fn only_loopback_addresses_are_connected_to_where_the_app_runs() {
        assert_eq!(loopback_port("127.0.0.1:8080"), Some(8080));
        assert_eq!(loopback_port("localhost:1"), Some(1));
        assert_eq!(loopback_port("[::1]:443"), Some(443));
        assert_eq!(loopback_port("db:5432"), None);
        assert_eq!(loopback_port("10.0.0.1:80"), None);
        assert_eq!(loopback_port("127.0.0.1:http"), None);
    }

    #[tokio::test]
    async fn a_port_that_accepts_and_closes_at_once_is_not_ready() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let keep = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let k = keep.clone();
        tokio::spawn(async move {
            let mut held = vec![];
            loop {
                let (s, _) = listener.accept().await.unwrap();
                // A forwarded port with nothing behind it closes at once.
                if k.load(std::sync::atomic::Ordering::SeqCst) {
                    held.push(s);
                }
            }
        });
        let e = tcp_alive(&addr).await.unwrap_err();
        assert!(e.contains("closed at once"), "{e}");
        keep.store(true, std::sync::atomic::Ordering::SeqCst);
        tcp_alive(&addr).await.unwrap();
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
            probe(&check, &mut Here).await,
            Err(format!("http://{addr}/health answered 503"))
        );
        assert_eq!(probe(&check, &mut Here).await, Ok(()));
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
        let err = wait(&r, &mut Here).await.unwrap_err();
        assert!(
            err.starts_with("not ready after 200ms: cannot connect to"),
            "{err}"
        );
        let _l = tokio::net::TcpListener::bind(addr).await.unwrap();
        assert!(wait(&r, &mut Here).await.is_ok());
    }
}
