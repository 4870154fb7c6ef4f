//! The tunnel to an agent: a byte stream carrying gRPC, and a client that adds
//! the bearer token to every call. Today the stream is TCP; the kube runtime will
//! plug a port-forward stream in the same place. Bytes are counted at the
//! stream, so reported figures are what really crossed the wire.

use hyper_util::rt::TokioIo;
use lks_proto::v1::agent_client::AgentClient;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// Bytes written to the tunnel (what a batch really cost on the wire).
#[derive(Default, Debug)]
pub struct WireCounter {
    sent: AtomicU64,
}

impl WireCounter {
    /// Bytes written to the wire so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut()
            .insert(lks_proto::AUTHORIZATION, self.0.clone());
        Ok(req)
    }
}

/// A connected, authenticated client.
pub type Client = AgentClient<InterceptedService<Channel, Bearer>>;

/// Why the tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The URL is not usable.
    #[error("bad agent URL {url:?}: {reason} (expected something like http://127.0.0.1:7690)")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The token cannot be sent as a header.
    #[error("the token contains characters that cannot be sent in a header")]
    BadToken,
    /// Nothing answered.
    #[error("cannot reach the agent at {url}: {reason}{hint}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
        /// What to check (for a TCP address: is an agent listening there).
        hint: &'static str,
    },
}

/// A byte stream gRPC can run over: TCP, a Kubernetes port-forward, a pipe.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A dial in progress.
pub type DialFuture = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Stream>>> + Send>>;

/// How to reach an agent: a TCP URL, or any function that opens a fresh
/// byte stream to it (called again on every reconnection, so it can follow
/// a replaced pod).
#[derive(Clone)]
pub enum Dialer {
    /// `http://HOST:PORT`.
    Tcp(String),
    /// A custom stream; `name` is what messages call it.
    Custom {
        /// For messages (e.g. `pod default/web-abc, port 7690`).
        name: String,
        /// Opens a stream.
        dial: Arc<dyn Fn() -> DialFuture + Send + Sync>,
    },
}

impl std::fmt::Display for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::Tcp(url) => f.write_str(url),
            Dialer::Custom { name, .. } => f.write_str(name),
        }
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dialer({self})")
    }
}

/// Connects to the agent through `dialer` with `token`; the returned counter
/// counts the bytes written to the stream.
pub async fn connect_with(
    dialer: &Dialer,
    token: &str,
) -> Result<(Client, Arc<WireCounter>), TunnelError> {
    let header: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| TunnelError::BadToken)?;
    let counter = Arc::new(WireCounter::default());
    let (uri, dial): (Uri, Arc<dyn Fn() -> DialFuture + Send + Sync>) = match dialer {
        Dialer::Tcp(url) => {
            let bad = |reason: String| TunnelError::BadUrl {
                url: url.to_string(),
                reason,
            };
            let uri: Uri = url
                .parse()
                .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(e.to_string()))?;
            if uri.scheme_str() != Some("http") {
                return Err(bad(
                    "only http:// is supported (the tunnel itself is loopback or a port-forward)"
                        .into(),
                ));
            }
            let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
            let port = uri.port_u16().unwrap_or(80);
            let dial = Arc::new(move || -> DialFuture {
                let host = host.clone();
                Box::pin(async move {
                    let tcp = TcpStream::connect((host.as_str(), port)).await?;
                    tcp.set_nodelay(true)?;
                    Ok(Box::new(tcp) as Box<dyn Stream>)
                })
            });
            (uri, dial)
        }
        // The URI only names the authority in requests; the stream is the dialer's.
        Dialer::Custom { dial, .. } => (Uri::from_static("http://lks-agent"), dial.clone()),
    };
    let c2 = counter.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let dial = dial.clone();
        let counter = c2.clone();
        async move {
            let inner = dial().await?;
            Ok::<_, std::io::Error>(TokioIo::new(Counted { inner, counter }))
        }
    });
    let endpoint = Endpoint::from(uri)
        // A port-forward dial may first wait for a pod to become ready.
        .connect_timeout(std::time::Duration::from_secs(match dialer {
            Dialer::Tcp(_) => 5,
            Dialer::Custom { .. } => 90,
        }))
        .tcp_nodelay(true)
        // A tunnel that dies silently (a frozen port-forward, a peer that
        // vanished without a FIN) is found within 25 s, also between
        // batches and in the middle of one: the call fails, and the caller
        // reconnects and resyncs.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .http2_adaptive_window(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20));
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TunnelError::Unreachable {
            url: dialer.to_string(),
            reason: source_chain(&e),
            hint: match dialer {
                Dialer::Tcp(_) => ". Is `lks-agent serve` running and listening there?",
                Dialer::Custom { .. } => "",
            },
        })?;
    let client = AgentClient::with_interceptor(channel, Bearer(header))
        .max_decoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES);
    Ok((client, counter))
}

/// How often the client pings the agent over HTTP/2. A silent tunnel is
/// found within interval + timeout (25 s); a tighter timeout drops healthy
/// tunnels on a loaded machine (at 5 s, 300 services starting at once on two
/// cores lost some: lks-bench-scale).
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a ping may go unanswered before the tunnel counts as dead.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The innermost message of an error chain (tonic wraps the useful part).
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg = s.to_string();
        cur = s.source();
    }
    msg
}

/// A stream that counts the bytes through it.
struct Counted<S> {
    inner: S,
    counter: Arc<WireCounter>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.counter.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.counter.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
