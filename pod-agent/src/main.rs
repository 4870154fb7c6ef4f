//! `lks-agent`: the in-container half of lks. It serves `lks.agent.v1` and applies
//! what the host sends beneath its root, and nowhere else.
#![forbid(unsafe_code)]

mod apply;
mod auth;
mod manifest;
mod root;
mod service;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lks_proto::v1::agent_server::AgentServer;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Parser)]
#[command(
    name = "lks-agent",
    version,
    about = "The in-container lks agent: applies synced files beneath its root",
    after_help = "Examples:\n  LKS_TOKEN=secret lks-agent serve --root /app\n  \
                  lks-agent serve --root ./dst --listen 127.0.0.1:0 --token-file token.txt"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the lks.agent.v1 protocol for one root directory.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory to keep in sync; created if missing. Nothing outside it is written.
    #[arg(long)]
    root: PathBuf,
    /// Address to listen on. Loopback by default: in a pod only a port-forward reaches it.
    /// Port 0 picks a free port.
    #[arg(long, default_value = lks_proto::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// File holding the bearer token (default: the LKS_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LKS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lks-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token = auth::Token::load(args.token_file.as_deref())?;
    let root = root::Root::open(&args.root)
        .with_context(|| format!("cannot open the root {}", args.root.display()))?;
    let stale = root.remove_stale_staging();
    if stale > 0 {
        tracing::warn!("removed {stale} staging file(s) left by an interrupted write");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(root = %root.path().display(), "serving");
    let server = AgentServer::new(service::AgentService::new(root))
        .max_decoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES);
    let service =
        tonic::service::interceptor::InterceptedService::new(server, move |req| token.check(req));
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown())
        .await
        .context("server failed")?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
