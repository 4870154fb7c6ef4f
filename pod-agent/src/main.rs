//! `lks-agent`: the in-container half of lks. It serves `lks.agent.v1`, applies
//! what the host sends beneath its root (and nowhere else), runs the steps that
//! follow a batch and, under `supervise`, runs and restarts the app.
// One `unsafe` block, allowed where it is: entering a step's or the app's
// working directory by descriptor between fork and exec (children.rs).
#![deny(unsafe_code)]

mod apply;
mod auth;
mod children;
mod followup;
mod forward;
mod install;
mod manifest;
mod output;
mod root;
mod service;
mod steps;
mod supervise;
mod turns;
mod watch;
mod webhook;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lks_proto::v1::agent_server::AgentServer;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Events kept for slow subscribers before they start missing some.
const EVENTS_CAPACITY: usize = 1024;

/// After SIGTERM and the app's stop, how long open calls get to finish.
const DRAIN_CALLS: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "lks-agent",
    version,
    about = "The in-container lks agent: applies synced files beneath its root, runs steps, \
             supervises the app",
    after_help = "Examples:\n  LKS_TOKEN=secret lks-agent serve --root /app\n  \
                  lks-agent serve --root ./dst --listen 127.0.0.1:0 --token-file token.txt\n  \
                  LKS_TOKEN=secret lks-agent supervise --root /app -- node server.js\n  \
                  lks-agent install /.lks/lks-agent\n  \
                  lks-agent webhook --tls-cert tls.crt --tls-key tls.key --agent-image REGISTRY/lks-agent:TAG"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the lks.agent.v1 protocol for one root directory.
    Serve(ServeArgs),
    /// Serve like `serve`, and run CMD (in the root) as the app: its output is
    /// passed through, it is restarted when a batch asks and when it crashes.
    Supervise(SuperviseArgs),
    /// Copy this binary to DEST atomically (the injected init container runs it
    /// from the FROM-scratch agent image, which has no shell nor cp).
    Install {
        /// Path of the file to create or replace; its directory is created.
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Serve the mutating admission webhook (HTTPS) that injects the agent
    /// into pods annotated lks.dev/agent: "true".
    Webhook(webhook::WebhookArgs),
}

#[derive(clap::Args)]
struct SuperviseArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Seconds the app gets to exit after SIGTERM before it is killed.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    grace_period: f64,
    /// Do not start the app until a batch asks for a restart (after its steps,
    /// which may build the app).
    #[arg(long, conflicts_with = "wait_for_sync")]
    no_start: bool,
    /// Start the app with the first batch (whatever it asks), so it never
    /// serves the image's files before lks synced them; start it anyway when
    /// no lks connects within SECS (or a connected one sends nothing for 60 s).
    #[arg(long, value_name = "SECS")]
    wait_for_sync: Option<f64>,
    /// The app's working directory (default: the root). A relative path is
    /// taken from the agent's own, so `.` keeps the container's WORKDIR.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// The app's command and arguments; CMD is looked up in PATH.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
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
    /// Shut down (stopping the app) when standard input closes, as on
    /// SIGTERM: the process that started the agent holds the other end of a
    /// pipe, so the agent does not outlive it however it dies.
    #[arg(long)]
    exit_with_stdin: bool,
    /// Do not watch the root for changes made by others: every Manifest after
    /// the first looks at the whole root again (a watch costs one of the
    /// user's inotify instances; the kernel allows 128 by default).
    #[arg(long)]
    no_watch_root: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LKS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // A closed stderr (the host that read it is gone) is not worth a
        // panic: tracing would report the failed write with `eprintln!`.
        .log_internal_errors(false)
        // Escape codes only for a terminal that wants them (agent.log and
        // CI logs stay plain text).
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve(args, None)),
        Command::Supervise(args) => match app_spec(&args) {
            Ok(spec) => rt.block_on(serve(args.serve, Some(spec))),
            Err(e) => Err(e),
        },
        Command::Webhook(args) => rt.block_on(webhook::run(args)),
        Command::Install { dest } => install::run(&dest),
    };
    // A task stuck in a blocking call must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lks-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The app of `supervise`, checked; `cwd` is filled in once the root exists.
fn app_spec(args: &SuperviseArgs) -> anyhow::Result<supervise::AppSpec> {
    let grace = Duration::try_from_secs_f64(args.grace_period)
        .ok()
        .filter(|g| *g <= Duration::from_secs(3600))
        .with_context(|| {
            format!(
                "--grace-period {} is not a number of seconds between 0 and 3600",
                args.grace_period
            )
        })?;
    let start = match args.wait_for_sync {
        _ if args.no_start => supervise::Start::OnRestart,
        None => supervise::Start::Now,
        Some(secs) => supervise::Start::AfterSync {
            wait: Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|w| *w <= Duration::from_secs(3600))
                .with_context(|| {
                    format!("--wait-for-sync {secs} is not a number of seconds between 0 and 3600")
                })?,
        },
    };
    Ok(supervise::AppSpec {
        argv: args.command.clone(),
        cwd: supervise::AppDir::Path(args.workdir.clone().unwrap_or_default()),
        grace,
        start,
    })
}

/// `supervise` without a token (an injected pod whose namespace has no
/// `lks-agent-token` Secret: no `lks up` runs there): nothing can connect, so
/// the agent serves nothing and only runs the app, at once, restarting it
/// when it crashes, until SIGTERM.
async fn supervise_only(
    mut spec: supervise::AppSpec,
    root: &std::path::Path,
    exit_with_stdin: bool,
    why: auth::TokenError,
) -> anyhow::Result<()> {
    tracing::info!("{why}: not serving lks, only supervising the app");
    let shutdown = shutdown_signal(exit_with_stdin)?;
    let children = children::Children::start().context("cannot watch for SIGCHLD")?;
    adopt_orphans();
    // By path: nothing connects here, so nothing lks does changes the tree.
    if spec.cwd.is_unset() {
        spec.cwd = supervise::AppDir::Path(root.to_path_buf());
    }
    spec.start = supervise::Start::Now;
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let app = supervise::App::start(spec, children, events, output::Console::start());
    shutdown.await;
    app.stop().await;
    Ok(())
}

/// Serves the protocol until SIGTERM or SIGINT; with `app`, also supervises it.
async fn serve(args: ServeArgs, app: Option<supervise::AppSpec>) -> anyhow::Result<()> {
    let token = match (auth::Token::load(args.token_file.as_deref()), app) {
        (Ok(token), app) => (token, app),
        (Err(why @ (auth::TokenError::Missing | auth::TokenError::Empty(_))), Some(spec)) => {
            return supervise_only(spec, &args.root, args.exit_with_stdin, why).await;
        }
        (Err(e), _) => return Err(e.into()),
    };
    let (token, app) = token;
    let root = root::Root::open(&args.root)
        .with_context(|| format!("cannot open the root {}", args.root.display()))?;
    let stale = root.remove_stale_staging();
    if stale > 0 {
        tracing::warn!("removed {stale} staging file(s) left by an interrupted write");
    }
    let root = Arc::new(root);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal(args.exit_with_stdin)?;
    let children = children::Children::start().context("cannot watch for SIGCHLD")?;
    adopt_orphans();
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tracing::info!(root = %root.path().display(), "serving");
    // The first line on stdout, before the app can write anything there.
    println!("{}{addr}", lks_proto::launch::LISTENING);
    std::io::stdout().flush()?;
    let app = app.map(|mut spec| {
        spec.cwd = spec.cwd.settle(&root);
        supervise::App::start(
            spec,
            children.clone(),
            events.clone(),
            output::Console::start(),
        )
    });
    let followup = followup::Followup {
        steps: steps::StepRunner {
            root: root.clone(),
            children,
            events: events.clone(),
            shutdown: shutdown_rx.clone(),
        },
        app: app.clone(),
    };
    let server = AgentServer::new(service::AgentService::new(
        root,
        !args.no_watch_root,
        events,
        followup,
        shutdown_rx.clone(),
    ))
    .max_decoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(lks_proto::limits::MAX_MESSAGE_BYTES);
    let service =
        tonic::service::interceptor::InterceptedService::new(server, move |req| token.check(req));
    let mut stop_serving = shutdown_rx;
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Large receive windows: a batch is one long upload.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        // A client gone silently (a frozen tunnel) is found within 30 s: its
        // calls end, and a batch it left half-sent frees the batch lock for
        // the client that reconnects. Not tighter: on a machine loaded with
        // hundreds of starting services a ping can wait seconds for its
        // answer (at 5 s, lks-bench-scale lost agents at 300 services); and
        // every ping costs lks a wake-up per service (lks pings every 5 s
        // itself, so it finds a dead tunnel first).
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(service)
        .serve_with_incoming_shutdown(
            // Server::tcp_nodelay does not apply to a custom incoming stream:
            // without this, Nagle delays small acks by ~40 ms.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop_serving.wait_for(|&down| down).await;
            },
        );
    tokio::pin!(server);
    let failed = tokio::select! {
        r = &mut server => Some(r),
        () = shutdown => None,
    };
    // Running steps and event streams end, the app stops, open calls finish.
    let _ = shutdown_tx.send(true);
    if let Some(app) = app {
        app.stop().await;
    }
    if let Some(r) = failed {
        return r.context("server failed");
    }
    match tokio::time::timeout(DRAIN_CALLS, server).await {
        Ok(r) => r.context("server failed"),
        Err(_) => {
            tracing::warn!(
                "calls still open {}s after shutdown; exiting",
                DRAIN_CALLS.as_secs()
            );
            Ok(())
        }
    }
}

/// Makes the agent the reaper of everything the app and the steps leave
/// behind, PID 1 or not: a process whose parent dies is handed to the agent
/// instead of the container's init (which may not reap at all), so a process
/// group can be waited for until it is empty, and [`children`] reaps it.
fn adopt_orphans() {
    if std::process::id() == 1 {
        tracing::info!("running as PID 1: reaping orphaned processes");
        return;
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!("cannot become a child subreaper ({e}); orphans go to the container's init");
    }
}

/// Handles SIGTERM and SIGINT from now on (as PID 1, a signal without a handler
/// is dropped by the kernel) and, with `stdin`, the end of standard input; the
/// returned future resolves on the first one.
fn shutdown_signal(stdin: bool) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // An agent whose life is its host's (`--exit-with-stdin`, the local
    // runtime's) is in the host's process group: the terminal's Ctrl-C and
    // hang-up reach it too. It leaves them to `lks`, which stops each agent
    // and app in order (dying first, it would be reported as gone). With the
    // handlers installed and not acted on, neither signal kills it.
    let hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let closed = stdin.then(stdin_closed);
    Ok(async move {
        let _hup = hup;
        let closed = async {
            match closed {
                Some(c) => {
                    let _ = c.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv(), if !stdin => tracing::info!("SIGINT: shutting down"),
            () = closed => tracing::info!("standard input closed (the host is gone): shutting down"),
        }
    })
}

/// Resolves when standard input reaches its end (or fails). A thread of its
/// own: a blocking read must not hold up the runtime's shutdown.
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use lks_proto::launch::{Start, Supervise};

    /// What the runtimes and the injection launch is what this agent parses.
    #[test]
    fn the_launch_spec_round_trips_through_the_agents_own_parser() {
        for start in [Start::Now, Start::OnRestart, Start::AfterSync(10)] {
            let spec = Supervise {
                root: "/app".into(),
                listen: "0.0.0.0:7690".into(),
                grace_period: Some(3),
                workdir: Some(".".into()),
                start,
                exit_with_stdin: true,
                watch_root: false,
                app: vec!["node".into(), "--inspect".into(), "server.js".into()],
            };
            let cli =
                Cli::try_parse_from(std::iter::once("lks-agent".to_string()).chain(spec.args()))
                    .unwrap_or_else(|e| panic!("{start:?}: {e}"));
            let Command::Supervise(args) = cli.command else {
                panic!("not supervise")
            };
            assert_eq!(args.serve.root, PathBuf::from("/app"));
            assert_eq!(
                args.serve.listen,
                "0.0.0.0:7690".parse::<SocketAddr>().unwrap()
            );
            assert_eq!(args.grace_period, 3.0);
            assert_eq!(args.workdir, Some(PathBuf::from(".")));
            assert!(args.serve.exit_with_stdin);
            assert!(args.serve.no_watch_root);
            assert_eq!(args.command, spec.app, "the app's own flags stay the app's");
            let app = app_spec(&args).unwrap();
            assert_eq!(
                app.start,
                match start {
                    Start::Now => supervise::Start::Now,
                    Start::OnRestart => supervise::Start::OnRestart,
                    Start::AfterSync(s) => supervise::Start::AfterSync {
                        wait: Duration::from_secs(s.into())
                    },
                }
            );
        }
        // Without the optional parts, the agent's defaults.
        let spec = Supervise {
            root: "r".into(),
            listen: lks_proto::DEFAULT_LISTEN.into(),
            grace_period: None,
            workdir: None,
            start: Start::Now,
            exit_with_stdin: false,
            watch_root: true,
            app: vec!["app".into()],
        };
        let cli = Cli::try_parse_from(std::iter::once("lks-agent".to_string()).chain(spec.args()))
            .unwrap();
        let Command::Supervise(args) = cli.command else {
            panic!("not supervise")
        };
        assert_eq!(args.workdir, None);
        assert!(!args.serve.exit_with_stdin);
        assert!(!args.serve.no_watch_root);
        assert!(!args.no_start && args.wait_for_sync.is_none());
        assert_eq!(
            lks_proto::launch::listening_address(&format!(
                "{}127.0.0.1:1",
                lks_proto::launch::LISTENING
            )),
            Some("127.0.0.1:1")
        );
    }
}
