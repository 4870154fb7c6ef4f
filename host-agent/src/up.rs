//! `lks up`: launch targets and their dependencies, in dependency order, each
//! waiting for its dependencies' readiness, and keep the local ones live
//! updated until Ctrl-C / SIGTERM, then stop everything lks started.

use crate::config::{self, Workspace};
use crate::console::Console;
use crate::events::{self, Hub};
use crate::fleet::Fleet;
use crate::kube::target::{self, Selection};
use crate::registry::Registry;
use crate::reload::ConfigWatch;
use crate::runtime::Runtime;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::kubernetes::KubeRuntime;
use crate::runtime::local::Local;
use anyhow::bail;
use std::path::PathBuf;
use std::sync::Arc;

/// What `lks up` was asked.
pub struct UpOptions {
    /// The workspace file (default: `lks.yaml` here or in a parent).
    pub file: Option<PathBuf>,
    /// Services or aliases to launch (with their dependencies).
    pub targets: Vec<String>,
    /// Services built from the working tree and live updated.
    pub local: Vec<String>,
    /// Services whose app runs under its debugger.
    pub debug: Vec<String>,
    /// Which runtime (None: kube when a context or namespace is chosen, or
    /// the kubeconfig context is the workspace's kind cluster; else local).
    pub runtime: Option<RuntimeKind>,
    /// The kubeconfig context and namespace (kube runtime).
    pub kube: Selection,
    /// `lks ci`: stop once every service is ready or one failed, or after
    /// this long.
    pub ci: Option<std::time::Duration>,
    /// The web UI's port (the next free one if taken; 0: any); None: no
    /// web UI (the API still serves the shell's commands).
    pub ui: Option<u16>,
}

pub use crate::runtime::Kind as RuntimeKind;

/// The runtime when none is named: kube when `--context` or `--namespace`
/// (or `kube.context`/`kube.namespace` in `lks.yaml`) chose a cluster, or the
/// kubeconfig context is the workspace's own cluster (`kind-NAME`, as `lks
/// cluster create` makes it); else local.
pub fn default_runtime(ws: &Workspace, sel: &Selection) -> RuntimeKind {
    let chosen = sel.is_set() || ws.kube.context.is_some() || ws.kube.namespace.is_some();
    if chosen || is_workspace_cluster(ws, sel) {
        RuntimeKind::Kube
    } else {
        RuntimeKind::Local
    }
}

/// Whether the chosen kubeconfig context is the workspace's kind cluster.
pub fn is_workspace_cluster(ws: &Workspace, sel: &Selection) -> bool {
    let cluster = ws
        .cluster
        .as_ref()
        .map(|c| c.name.as_str())
        .unwrap_or("lks");
    target::choose(&ws.kube, sel).is_ok_and(|(_, context, _)| context == format!("kind-{cluster}"))
}

/// Runs `lks up` until a signal.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    // Before anything starts: a signal from here on stops what started.
    let shutdown = crate::sync::shutdown_signal();
    let mut ws = config::load(opts.file.as_deref())?;
    crate::debug::apply(&mut ws, &opts.debug)?;
    let ws = ws;
    for l in &opts.local {
        if !ws.services.contains_key(l) {
            bail!("--local {l}: not a service of {}", ws.file.display());
        }
    }
    // None named: every service (also those a reload adds).
    let mut targets = opts.targets.clone();
    targets.extend(opts.local.iter().cloned());
    let order = ws.resolve(&targets)?;
    let kind = opts
        .runtime
        .unwrap_or_else(|| default_runtime(&ws, &opts.kube));
    let token = hex::encode(rand::random::<[u8; 24]>());
    let work = ws.root.join(crate::config::WORK_DIR);
    // Held until this run ends, however it ends.
    let _claim = crate::claim::Claim::take(&work)?;
    for s in crate::claim::stop_leftovers(&work) {
        crate::console::say(&format!(
            "stopped the agent of {} (pid {}) and its app, left running by an earlier lks up",
            s.service, s.pid
        ));
    }
    let registry = || Registry::of(Some(&ws));
    let live = ws.live(&opts.targets, &opts.local);
    let say = crate::console::say;
    match kind {
        RuntimeKind::Local => {
            run(
                &ws,
                &targets,
                &order,
                &opts,
                Local::new(&work, &token)?,
                shutdown,
            )
            .await
        }
        RuntimeKind::Docker => {
            let r = DockerRuntime::new(&ws.root, registry()?, &token, live, &say).await?;
            run(&ws, &targets, &order, &opts, r, shutdown).await
        }
        RuntimeKind::Kube => {
            let target = target::connect(&ws.kube, &opts.kube, true).await?;
            let r = KubeRuntime::new(&ws.root, target, registry()?, &token, live, &say).await?;
            run(&ws, &targets, &order, &opts, r, shutdown).await
        }
    }
}

/// Resolves on the signal that stops the run.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Launches on `runtime` until a signal, then removes what the run created.
async fn run<R: Runtime + 'static>(
    ws: &Workspace,
    targets: &[String],
    order: &[String],
    opts: &UpOptions,
    runtime: R,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime);
    let result = launch(ws, targets, order, opts, runtime.clone(), shutdown).await;
    runtime.shutdown().await;
    result
}

async fn launch<R: Runtime + 'static>(
    ws: &Workspace,
    targets: &[String],
    order: &[String],
    opts: &UpOptions,
    runtime: Arc<R>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ci = opts.ci;
    let (hub, feed) = events::channel();
    let console = Console::new(order);
    let reader_gone = console.reader_gone();
    let board: crate::board::Shared = Default::default();
    *board.lock().unwrap() = crate::board::Board::new(order);
    board.lock().unwrap().describe(ws);
    let console = tokio::spawn(console.run(feed, board.clone()));
    let verdict = {
        let board = board.clone();
        async move {
            match ci {
                Some(timeout) => crate::ci::judge(board, timeout).await,
                None => std::future::pending().await,
            }
        }
    };
    // `lks status` and `lks logs` ask it; without it only they are missing.
    let (actions, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let work = ws.root.join(crate::config::WORK_DIR);
    let api = match crate::api::serve(board.clone(), &work, actions, opts.ui).await {
        Ok(api) => {
            if let Some(url) = api.page() {
                hub.note(format!("web UI at {url}"));
            }
            Some(api)
        }
        Err(e) => {
            hub.note(format!(
                "warning: cannot serve the run's API on 127.0.0.1 ({e}); lks status and lks logs will not find it"
            ));
            None
        }
    };
    hub.note(format!(
        "launching {} on the {} runtime (Ctrl-C stops everything)",
        order.join(", "),
        runtime.name()
    ));
    for name in order.iter().filter(|n| opts.debug.contains(n)) {
        let service = &ws.services[name];
        let root = crate::debug::remote_root(service, &runtime.root_of_app(service));
        hub.note(format!(
            "{name}: {}",
            crate::debug::how_to_attach(service, None, &root)
        ));
    }
    let mut fleet = Fleet::new(runtime, hub.clone());
    fleet.start_all(ws, order);
    crate::panics::test_trigger();
    let mut watch = ConfigWatch::new(ws);
    let panicked = crate::panics::happened();
    tokio::pin!(shutdown, reader_gone, panicked, verdict);
    let stop = loop {
        tokio::select! {
            () = &mut shutdown => break Stop::Signal,
            () = &mut reader_gone => break Stop::ReaderGone,
            () = &mut panicked => break Stop::Panicked,
            v = &mut verdict => break Stop::Judged(v),
            Some(a) = asked.recv() => {
                let done = fleet.act(a.action, &a.service).await;
                if let Ok(what) = &done {
                    hub.note(format!("{}: {what} (asked from the shell)", a.service));
                }
                let _ = a.reply.send(done);
            }
            file = watch.changed() => {
                let file = file.strip_prefix(&ws.root).unwrap_or(&file).display().to_string();
                if let Some((new, order)) = reloaded(ws, targets, &opts.debug, &file, &hub) {
                    let changes = fleet.reload(&new, &order).await;
                    // The stopped ones' last events first: then they leave the board.
                    hub.flush().await;
                    board.lock().unwrap().describe(&new);
                    hub.note(format!("{file} changed: {changes}"));
                    watch = ConfigWatch::new(&new);
                }
            }
        }
    };
    hub.set_stopping();
    match stop {
        Stop::Signal => hub.note("stopping"),
        Stop::ReaderGone => crate::console::say("the reader of stdout went away; stopping"),
        Stop::Panicked => hub.note("stopping after an internal error"),
        Stop::Judged(_) => hub.note("stopping (lks ci)"),
    }
    fleet.stop_all().await;
    hub.flush().await;
    if let Some(api) = api {
        api.close().await;
    }
    drop(fleet);
    drop(hub);
    let _ = console.await;
    match stop {
        Stop::Panicked => {
            bail!("lks up stopped after an internal error (a panic, said above); please report it")
        }
        Stop::Judged(verdict) => {
            println!("{}", verdict.into_result(order.len())?);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Why `lks up` stops.
enum Stop {
    /// SIGTERM, SIGINT (Ctrl-C) or SIGHUP.
    Signal,
    /// The reader of stdout went away (`lks up | head`).
    ReaderGone,
    /// Something in lks panicked.
    Panicked,
    /// `lks ci` has its verdict.
    Judged(crate::ci::Verdict),
}

/// The workspace as its files say now, and the services to run; None (the
/// errors said, everything left running as it was) when it does not load.
fn reloaded(
    ws: &Workspace,
    targets: &[String],
    debug: &[String],
    file: &str,
    hub: &Hub,
) -> Option<(Workspace, Vec<String>)> {
    let loaded = config::load(Some(&ws.file)).map_err(|e| e.to_string());
    let new = loaded.and_then(|mut new| {
        crate::debug::apply(&mut new, debug).map_err(|e| e.to_string())?;
        let order = new.resolve(targets).map_err(|e| e.to_string())?;
        Ok((new, order))
    });
    match new {
        Ok(new) => Some(new),
        Err(errors) => {
            hub.note(format!(
                "{file} changed, but the workspace has errors; everything runs as it was:\n{errors}"
            ));
            None
        }
    }
}
