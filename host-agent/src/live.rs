//! One service under `lks up`: start it, fill its root, wait for readiness,
//! then turn every batch of file changes into a sync (with steps and a
//! restart) or a rebuild, as its live-update rules say.

use crate::config::{Service, SyncMapping};
use crate::console::{Console, Status};
use crate::ignores::Ignores;
use crate::kube::pods::Pods;
use crate::plan::{Op, plan};
use crate::readiness;
use crate::rules::{Decision, decide};
use crate::runtime::{Instance, Runtime};
use crate::session::{Followup, Report, Session};
use crate::source::Source;
use crate::tunnel::Dialer;
use crate::watch::{Changes, TreeWatcher};
use anyhow::{Context, anyhow, bail};
use lks_proto::RelPath;
use lks_proto::v1::{self, event::Kind as EventKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};
use tokio_stream::StreamExt;

/// Where a service stands, for the services that depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not ready yet.
    Pending,
    /// Ready: dependents may start.
    Ready,
    /// Failed; it may recover on the next good change.
    Failed(String),
}

/// The running instance of a service, shared so `lks up` can stop it whatever
/// the service's task is doing.
pub type Slot = Arc<Mutex<Option<Instance>>>;

/// Runs one service until its task is cancelled. Failures are reported and
/// retried with backoff; they never stop the other services.
pub async fn run<R: Runtime>(
    service: Service,
    runtime: Arc<R>,
    console: Console,
    deps: Vec<(String, watch::Receiver<State>)>,
    state: watch::Sender<State>,
    slot: Slot,
) {
    // `${host:NAME}` in the environment: how this runtime reaches NAME.
    let service = Service {
        env: crate::runtime::expand_env(&service.env, |n| runtime.host_of(n)),
        ..service
    };
    for (name, mut rx) in deps {
        console.status(&service.name, Status::Waiting(name.clone()));
        let _ = rx.wait_for(|s| *s == State::Ready).await;
    }
    let mut delay = Duration::from_millis(500);
    let mut rebuilding = false;
    let mut reuse = false;
    loop {
        let once = run_once(
            &service, &*runtime, &console, &state, &slot, rebuilding, reuse,
        );
        reuse = false;
        let err = match once.await {
            Ok(Rebuild) => {
                // A rebuild is a fresh start: new agent, fresh root (in a
                // cluster: applied again, a rolling update).
                if let Some(instance) = slot.lock().await.take() {
                    let _ = runtime.retire(&service, instance).await;
                }
                rebuilding = true;
                continue;
            }
            Err(e) => e,
        };
        rebuilding = false;
        if console.is_stopping() {
            return;
        }
        // A pod that restarted or was replaced: the instance's dialer finds
        // the new one; reconnect and resync without starting anew.
        let reconnectable = slot.lock().await.as_ref().is_some_and(|i| i.reconnectable);
        if reconnectable && let Some(gone) = err.downcast_ref::<AgentGone>() {
            console.line(&service.name, &format!("{gone}; reconnecting"));
            let _ = state.send(State::Pending);
            reuse = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let msg = format!("{err:#}");
        console.status(&service.name, Status::Error(msg.clone()));
        let _ = state.send(State::Failed(msg));
        if let Some(instance) = slot.lock().await.take() {
            let _ = runtime.retire(&service, instance).await;
        }
        console.line(
            &service.name,
            &format!("starting again in {:.1}s", delay.as_secs_f64()),
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The part of a service's tree that one sync mapping covers, and the
/// session that syncs it (one per mapping, each restricted to its remote
/// directory; they share the agent).
struct Mapping {
    spec: SyncMapping,
    source: Source,
    session: Session,
}

impl Mapping {
    /// Connects one session per sync mapping (their remote directories do
    /// not nest: `config` checks it).
    async fn connect_all(
        service: &Service,
        dialer: &Dialer,
        token: &str,
        patience: Patience<'_>,
    ) -> anyhow::Result<Vec<Mapping>> {
        let specs = &service.live_update.sync;
        if specs.is_empty() {
            bail!(
                "{}: live_update.sync is empty: nothing to sync",
                service.name
            );
        }
        // Mappings whose remotes nest were refused with the configuration.
        let prefixes: Vec<Option<RelPath>> = specs
            .iter()
            .map(remote_prefix)
            .collect::<anyhow::Result<_>>()?;
        let mut out = Vec::with_capacity(specs.len());
        for (spec, prefix) in specs.iter().zip(prefixes) {
            let mut session = connect(dialer, token, patience).await?;
            session.set_prefix(prefix);
            out.push(Mapping {
                source: Source::new(&spec.local, &sync_excludes(service, spec)),
                spec: spec.clone(),
                session,
            });
        }
        Ok(out)
    }

    /// A session to a service that is not synced (for readiness checks
    /// through its agent), with an empty tree.
    async fn unsynced(
        service: &Service,
        dialer: &Dialer,
        token: &str,
        patience: Patience<'_>,
    ) -> anyhow::Result<Mapping> {
        Ok(Mapping {
            spec: SyncMapping {
                local: service.dir.clone(),
                remote: String::new(),
            },
            source: Source::new(&service.dir, &[]),
            session: connect(dialer, token, patience).await?,
        })
    }

    fn rescan(&mut self, service: &Service) {
        for w in self.source.rescan() {
            tracing::warn!(service = %service.name, "{w}");
        }
    }

    /// The path of `p` (absolute) relative to the mapping, if inside it.
    fn relative(&self, p: &Path) -> Option<Option<RelPath>> {
        let rel = p.strip_prefix(&self.spec.local).ok()?;
        if rel.as_os_str().is_empty() {
            return Some(None);
        }
        Some(rel.to_str().and_then(|s| RelPath::new(s).ok()))
    }
}

/// The watch loop ended because the service must be rebuilt.
struct Rebuild;

/// The agent is not reachable where the loop talked to it any more.
#[derive(Debug)]
enum AgentGone {
    /// Its event stream ended: the agent (its process, container or pod)
    /// went away.
    Stopped,
    /// Another pod runs now (a rollout's new pod).
    Moved,
}

impl std::fmt::Display for AgentGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AgentGone::Stopped => {
                "the agent went away (its process, container or pod stopped or was replaced)"
            }
            AgentGone::Moved => "a new pod runs",
        })
    }
}

impl std::error::Error for AgentGone {}

/// What the loop needs of an instance (it stays in its slot).
struct Reach {
    dialer: Dialer,
    token: String,
    first_batch_starts_app: bool,
    build_steps: Vec<Vec<String>>,
    app_pid: Arc<std::sync::atomic::AtomicU32>,
    live: bool,
    seeded: bool,
    rebuild_on: Vec<PathBuf>,
    has_agent: bool,
    reconnectable: bool,
    pods: Option<Pods>,
}

impl Reach {
    fn of(i: &Instance) -> Reach {
        Reach {
            reconnectable: i.reconnectable,
            pods: i.pods.clone(),
            dialer: i.dialer.clone(),
            token: i.token.clone(),
            first_batch_starts_app: i.start_with_first_batch,
            build_steps: i.build_steps.clone(),
            app_pid: i.app_pid.clone(),
            live: i.live,
            seeded: i.seeded,
            rebuild_on: i.rebuild_on.clone(),
            has_agent: i.has_agent,
        }
    }
}

async fn run_once<R: Runtime>(
    service: &Service,
    runtime: &R,
    console: &Console,
    state: &watch::Sender<State>,
    slot: &Slot,
    rebuilding: bool,
    reuse: bool,
) -> anyhow::Result<Rebuild> {
    let name = &service.name;
    console.status(name, Status::Starting);
    let progress = |line: &str| {
        if line.starts_with("building ") {
            console.status(name, Status::Building);
        }
        console.line(name, line);
    };
    let reused = if reuse {
        slot.lock().await.as_ref().map(Reach::of)
    } else {
        None
    };
    let reach = match reused {
        Some(r) => r,
        None => {
            let instance = runtime.start(service, rebuilding, &progress).await?;
            let pid = instance
                .pid
                .map(|p| format!(" pid {p}"))
                .unwrap_or_default();
            console.line(
                name,
                &format!("agent{pid} at {} ({})", instance.dialer, instance.location),
            );
            let reach = Reach::of(&instance);
            *slot.lock().await = Some(instance);
            reach
        }
    };
    let Reach {
        dialer,
        token,
        first_batch_starts_app,
        build_steps,
        app_pid,
        live,
        seeded,
        rebuild_on,
        has_agent,
        reconnectable,
        pods,
    } = reach;
    // A pod's troubles (image pulls, crash loops, probes), as the cluster
    // tells them, while the loop waits for it or works with it.
    let _pods_report = pods
        .clone()
        .map(|p| AbortOnDrop(tokio::spawn(report_pods(name.clone(), console.clone(), p))));
    if !has_agent {
        // Runs as its manifests say, without an agent: readiness only.
        console.line(name, "not live updated (not named --local)");
        wait_ready_without_agent(service, console, state).await;
        std::future::pending::<()>().await;
    }

    let say = |l: &str| console.line(name, l);
    let patience = if reconnectable {
        Patience::Always(&say)
    } else {
        Patience::Brief
    };
    let mut mappings = if live {
        Mapping::connect_all(service, &dialer, &token, patience).await?
    } else {
        vec![Mapping::unsynced(service, &dialer, &token, patience).await?]
    };
    // The pod it talks to is no longer the one that runs (a rollout's new
    // pod runs): as if the agent went away.
    let moved = async {
        match &pods {
            Some(p) => p.moved().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(moved);
    let events = mappings[0].session.events().await?;
    let (gone_tx, mut agent_gone) = tokio::sync::oneshot::channel();
    let (printer_name, printer_console) = (name.clone(), console.clone());
    let _printer = AbortOnDrop(tokio::spawn(async move {
        print_events(printer_name, printer_console, events, app_pid).await;
        let _ = gone_tx.send(());
    }));

    if !live {
        // Not live updated: it runs its image as it is; watch its readiness
        // and its agent only.
        console.line(name, "not live updated (not named --local)");
        wait_ready(service, &mut mappings[0], console, state).await;
        let gone = tokio::select! {
            _ = agent_gone => AgentGone::Stopped,
            () = &mut moved => AgentGone::Moved,
        };
        return Err(gone.into());
    }

    // Watch before the first scan so nothing that happens meanwhile is lost.
    let mut watcher = TreeWatcher::start(&service.dir)
        .with_context(|| format!("cannot watch {}", service.dir.display()))?;
    let service_ignores = Ignores::load(&service.dir, &service.live_update.ignore);

    console.status(
        name,
        if build_steps.is_empty() {
            Status::Syncing
        } else {
            Status::Building
        },
    );
    for m in &mut mappings {
        m.rescan(service);
    }
    let started = Instant::now();
    let report = full_sync(
        &mut mappings,
        service,
        &build_steps,
        first_batch_starts_app,
        seeded,
    )
    .await?;
    let what = if rebuilding { "rebuilt:" } else { "synced" };
    console.line(
        name,
        &format!(
            "{what} {} in {} ms",
            describe(&report),
            started.elapsed().as_millis()
        ),
    );
    check_report(&report)?;
    let mut check_readiness = true;

    loop {
        // Readiness is checked while watching: a change that arrives first
        // is handled at once (the check starts over after it).
        let ready_check = async {
            if check_readiness {
                wait_ready(service, &mut mappings[0], console, state).await;
            }
            std::future::pending::<()>().await
        };
        let next = tokio::select! {
            _ = ready_check => unreachable!("pending"),
            c = watcher.next() => c,
            _ = &mut agent_gone => return Err(AgentGone::Stopped.into()),
            () = &mut moved => return Err(AgentGone::Moved.into()),
        };
        // An interrupted check runs again after this batch.
        check_readiness = *state.borrow() != State::Ready;
        let Some(mut changes) = next else {
            bail!("the file watcher stopped")
        };
        watcher.drain_into(&mut changes);
        for m in &mut mappings {
            refresh(m, service, &changes);
        }
        // Deletions wait until the events stop: if they are an `rm -rf` of a
        // whole directory, the safety stop below sees its end.
        if mappings.iter().any(|m| {
            m.source.safety_stop(&m.session.remote).is_none()
                && m.source.deletes_pending(&m.session.remote)
        }) {
            let mut more = Changes::default();
            watcher.settle_deletions(&mut more).await;
            if more.first_event.is_some() {
                for m in &mut mappings {
                    refresh(m, service, &more);
                }
                changes.rescan |= more.rescan;
                changes.paths.extend(more.paths);
            }
        }
        if let Some(why) = mappings
            .iter()
            .find_map(|m| m.source.safety_stop(&m.session.remote))
        {
            console.line(name, &why);
            if !service.dir.is_dir() {
                // The watch died with the directory: start over (with backoff)
                // until it is back.
                bail!("{} is gone", service.dir.display());
            }
            console.status(name, Status::Error("not synced: see above".into()));
            continue;
        }
        let touched = touched_paths(service, &changes, &mappings, &service_ignores);
        let mut planned = Vec::with_capacity(mappings.len());
        let mut changed = Vec::new();
        for m in &mut mappings {
            let (ops, problems) = plan(&mut m.source.tree, &m.session.remote);
            for p in problems {
                console.line(name, &format!("warning: {p}"));
            }
            changed.extend(changed_paths(service, m, &ops));
            planned.push(ops);
        }
        let touched_refs: Vec<&Path> = touched.iter().map(|p| p.as_path()).collect();
        // Ignored or not (a manifest is never synced).
        if let Some(p) = changes
            .paths
            .iter()
            .map(|rel| service.dir.join(rel.as_str()))
            .find(|p| rebuild_on.contains(p))
        {
            let why = if service.k8s.contains(&p) {
                "it is applied to the cluster"
            } else {
                "the image is built from it"
            };
            console.line(
                name,
                &format!("rebuilding: {} changed ({why})", p.display()),
            );
            console.status(name, Status::Building);
            return Ok(Rebuild);
        }
        match decide(service, &touched_refs, &changed) {
            Decision::Nothing => {}
            Decision::Rebuild { reason } => {
                console.line(name, &format!("rebuilding: {reason}"));
                console.status(name, Status::Building);
                return Ok(Rebuild);
            }
            Decision::Sync { steps, restart } => {
                console.status(name, Status::Syncing);
                let followup = Followup {
                    steps: steps
                        .iter()
                        .map(|i| step(service, &service.live_update.run[*i].argv))
                        .collect(),
                    restart,
                    label: "",
                    sync_point: false,
                };
                let report = apply_all(&mut mappings, planned, followup).await?;
                let ms = changes
                    .first_event
                    .map(|t| t.elapsed().as_millis())
                    .unwrap_or(0);
                console.line(name, &format!("synced {} in {ms} ms", describe(&report)));
                if report_failed(console, service, &report) {
                    continue;
                }
                if report.restarted || *state.borrow() != State::Ready {
                    // A restarted app is not ready until its check passes again.
                    state.send_replace(State::Pending);
                    check_readiness = true;
                } else {
                    console.status(name, Status::Ready);
                }
            }
        }
    }
}

/// How long to keep trying to reach an agent.
#[derive(Clone, Copy)]
enum Patience<'a> {
    /// A few seconds: the agent was just started and should answer.
    Brief,
    /// Until it answers: the agent is in a pod that comes and goes (a
    /// rollout, a scale to 0 and back, an API server that went away); each
    /// new reason it cannot be reached is reported once.
    Always(&'a (dyn Fn(&str) + Send + Sync)),
}

async fn connect(dialer: &Dialer, token: &str, patience: Patience<'_>) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said = String::new();
    let mut delay = Duration::from_millis(100);
    loop {
        match Session::open_with(dialer, token).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() => match patience {
                Patience::Brief if Instant::now() < deadline => {}
                Patience::Brief => return Err(e.into()),
                Patience::Always(report) => {
                    let why = e.to_string();
                    if why != said {
                        report(&format!("cannot reach the agent yet: {why}"));
                        said = why;
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            },
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(delay).await;
    }
}

/// A mapping's gitignore-style excludes: the service's `ignore`, plus what
/// lks reads itself (the service's file, its manifests) when inside the
/// mapping: they are not the app's, and an image does not hold them.
fn sync_excludes(service: &Service, spec: &SyncMapping) -> Vec<String> {
    let mut out = service.live_update.ignore.clone();
    for f in service.own_files() {
        if let Some(rel) = f.strip_prefix(&spec.local).ok().and_then(|r| r.to_str())
            && !rel.is_empty()
        {
            out.push(format!("/{rel}"));
        }
    }
    out
}

fn remote_prefix(m: &SyncMapping) -> anyhow::Result<Option<RelPath>> {
    let r = m.remote.trim_matches('/');
    if r.is_empty() || r == "." {
        return Ok(None);
    }
    RelPath::new(r)
        .map(Some)
        .map_err(|e| anyhow!("sync remote {:?}: {e}", m.remote))
}

fn step(service: &Service, argv: &[String]) -> v1::Step {
    v1::Step {
        argv: argv.to_vec(),
        workdir: String::new(),
        env: service.env.clone().into_iter().collect(),
    }
}

/// A full sync: make every mapped directory on the agent equal, then run the
/// build steps and start (or restart) the app when asked.
///
/// In a `seeded` root (an image's files) the paths only the agent has are
/// left alone: they are what the image's build made (`node_modules`, a
/// compiled binary), not files the developer deleted. The run steps whose
/// triggers match what the sync changed run too (a requirements file newer
/// than the image).
async fn full_sync(
    mappings: &mut [Mapping],
    service: &Service,
    build_steps: &[Vec<String>],
    start_app: bool,
    seeded: bool,
) -> anyhow::Result<Report> {
    let mut planned = Vec::with_capacity(mappings.len());
    let mut changed = Vec::new();
    for m in mappings.iter_mut() {
        m.session.fetch_manifest(&m.source.ignores).await?;
        if seeded {
            let tree = &m.source.tree.nodes;
            let before = m.session.remote.len();
            m.session.remote.retain(|p, _| tree.contains_key(p));
            let kept = before - m.session.remote.len();
            if kept > 0 {
                tracing::debug!(service = %service.name, kept, "paths only the image has, left alone");
            }
        }
        let (ops, problems) = plan(&mut m.source.tree, &m.session.remote);
        for p in problems {
            tracing::warn!(service = %service.name, "{p}");
        }
        changed.extend(changed_paths(service, m, &ops));
        planned.push(ops);
    }
    let mut steps: Vec<v1::Step> = Vec::new();
    if start_app {
        steps.extend(build_steps.iter().map(|argv| step(service, argv)));
    }
    // A seeded root that differed from the tree: the triggered steps run, and
    // an app that already runs (it started with the image's files) restarts.
    let seeded_changed = seeded && !changed.is_empty();
    if seeded_changed
        && let Decision::Sync {
            steps: triggered, ..
        } = decide(service, &[], &changed)
    {
        steps.extend(
            triggered
                .iter()
                .map(|i| step(service, &service.live_update.run[*i].argv)),
        );
    }
    let followup = Followup {
        steps,
        restart: start_app || seeded_changed,
        label: "",
        sync_point: true,
    };
    apply_all(mappings, planned, followup).await
}

/// Applies each mapping's operations; the follow-up (steps, restart) rides
/// on the last batch, so it runs once every mapping is in place.
async fn apply_all(
    mappings: &mut [Mapping],
    planned: Vec<Vec<Op>>,
    followup: Followup,
) -> anyhow::Result<Report> {
    let last = mappings.len() - 1;
    let mut report = Report::default();
    for (i, (m, ops)) in mappings.iter_mut().zip(planned).enumerate() {
        let f = if i == last {
            followup.clone()
        } else {
            Followup::default()
        };
        let r = m.session.apply_with(&m.source.tree, ops, f).await?;
        report.absorb(r);
    }
    Ok(report)
}

fn check_report(report: &Report) -> anyhow::Result<()> {
    if let Some(e) = report.errors.first() {
        bail!("the sync failed: {e}");
    }
    if let Some(s) = report.steps.iter().find(|s| !s.success) {
        bail!("build step {} failed: {}", s.index + 1, step_failure(s));
    }
    Ok(())
}

fn step_failure(s: &v1::StepResult) -> String {
    if !s.error.is_empty() {
        s.error.clone()
    } else {
        format!("exit code {}", s.exit_code)
    }
}

/// Reports sync errors and failed steps; true if the batch failed.
fn report_failed(console: &Console, service: &Service, report: &Report) -> bool {
    for e in &report.errors {
        console.line(&service.name, &format!("sync error: {e}"));
    }
    let failed = report.steps.iter().find(|s| !s.success);
    if let Some(s) = failed {
        let cmd = service
            .live_update
            .run
            .iter()
            .map(|r| r.cmd.as_str())
            .nth(s.index as usize)
            .unwrap_or("step");
        console.line(
            &service.name,
            &format!(
                "step `{cmd}` failed ({}); the app keeps running the previous version",
                step_failure(s)
            ),
        );
        for line in s.output_tail.lines() {
            console.line(&service.name, &format!("  {line}"));
        }
        console.status(&service.name, Status::Error(format!("step `{cmd}` failed")));
    }
    !report.errors.is_empty() || failed.is_some()
}

fn describe(r: &Report) -> String {
    let mut s = format!(
        "{} files, {} deleted, {} bytes sent",
        r.files, r.deleted, r.wire_bytes
    );
    for st in &r.steps {
        s.push_str(&format!(
            ", step {} {} ({} ms)",
            st.index + 1,
            if st.success { "ok" } else { "failed" },
            st.duration_ms
        ));
    }
    if r.restarted {
        s.push_str(", restarted");
    }
    s
}

/// Readiness of a service without an agent: http and tcp checks only.
async fn wait_ready_without_agent(
    service: &Service,
    console: &Console,
    state: &watch::Sender<State>,
) {
    let Some(readiness) = &service.readiness else {
        console.status(&service.name, Status::Ready);
        let _ = state.send(State::Ready);
        return;
    };
    console.status(&service.name, Status::CheckingReadiness);
    let result = readiness::wait(readiness, |_| async {
        Err(
            "an exec readiness check needs the agent: name the service --local, or use http or tcp"
                .to_string(),
        )
    })
    .await;
    match result {
        Ok(_) => {
            console.status(&service.name, Status::Ready);
            let _ = state.send(State::Ready);
        }
        Err(why) => {
            console.status(&service.name, Status::Error(why.clone()));
            let _ = state.send(State::Failed(why));
        }
    }
}

async fn wait_ready(
    service: &Service,
    mapping: &mut Mapping,
    console: &Console,
    state: &watch::Sender<State>,
) {
    let Mapping {
        session, source, ..
    } = mapping;
    let tree = &source.tree;
    let Some(readiness) = &service.readiness else {
        console.status(&service.name, Status::Ready);
        let _ = state.send(State::Ready);
        return;
    };
    console.status(&service.name, Status::CheckingReadiness);
    let session = Arc::new(Mutex::new(session));
    let env = service.env.clone();
    let result = readiness::wait(readiness, |argv| {
        let session = session.clone();
        let env = env.clone();
        let tree = &*tree;
        async move {
            let followup = Followup {
                steps: vec![v1::Step {
                    argv,
                    workdir: String::new(),
                    env: env.into_iter().collect(),
                }],
                restart: false,
                label: "quiet-",
                sync_point: false,
            };
            let mut s = session.lock().await;
            let report = s
                .apply_with(tree, vec![], followup)
                .await
                .map_err(|e| e.to_string())?;
            match report.steps.first() {
                Some(r) if r.success => Ok(()),
                Some(r) => Err(step_failure(r)),
                None => Err("the check did not run".into()),
            }
        }
    })
    .await;
    match result {
        Ok(took) => {
            console.status(&service.name, Status::Ready);
            tracing::debug!(service = %service.name, "ready after {took:?}");
            let _ = state.send(State::Ready);
        }
        Err(why) => {
            console.status(&service.name, Status::Error(why.clone()));
            let _ = state.send(State::Failed(why));
        }
    }
}

/// The absolute paths the watcher reported that matter: not `.git`, not
/// ignored by the mapping's (or, outside it, the service's) rules.
fn touched_paths(
    service: &Service,
    changes: &Changes,
    mappings: &[Mapping],
    service_ignores: &Ignores,
) -> Vec<PathBuf> {
    changes
        .paths
        .iter()
        .filter_map(|rel| {
            if rel.components().any(|c| c == ".git") {
                return None;
            }
            let abs = service.dir.join(rel.as_str());
            let is_dir = abs.is_dir();
            let mut inside = mappings.iter().filter_map(|m| Some((m, m.relative(&abs)?)));
            match inside.next() {
                Some((m, Some(r))) if m.source.ignores.ignores_path(&r, is_dir) => None,
                Some(_) => Some(abs),
                None if service_ignores.ignores_path(rel, is_dir) => None,
                None => Some(abs),
            }
        })
        .collect()
}

fn refresh(mapping: &mut Mapping, service: &Service, changes: &Changes) {
    let rels: Vec<Option<RelPath>> = changes
        .paths
        .iter()
        .filter_map(|p| mapping.relative(&service.dir.join(p.as_str())))
        .collect();
    for w in mapping
        .source
        .apply(changes.rescan, rels.iter().map(Option::as_ref))
    {
        tracing::warn!(service = %service.name, "{w}");
    }
}

/// The planned paths, relative to the service directory (what globs match).
fn changed_paths(service: &Service, mapping: &Mapping, ops: &[Op]) -> Vec<String> {
    let base = mapping
        .spec
        .local
        .strip_prefix(&service.dir)
        .unwrap_or(Path::new(""));
    ops.iter()
        .map(|op| {
            let p = base.join(op.path().as_str());
            p.to_string_lossy().into_owned()
        })
        .collect()
}

/// Prints the agent's events until its stream ends (the agent went away).
async fn print_events(
    name: String,
    console: Console,
    mut events: tonic::Streaming<v1::Event>,
    app_pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    while let Some(Ok(ev)) = events.next().await {
        let Some(kind) = ev.kind else { continue };
        match kind {
            EventKind::Output(o) => {
                if o.source == v1::OutputSource::Step as i32 {
                    if !o.batch_id.starts_with("quiet-") {
                        console.line(&name, &format!("  > {}", o.line));
                    }
                } else {
                    console.line(&name, &o.line);
                }
            }
            EventKind::StepStarted(s) if !s.batch_id.starts_with("quiet-") => {
                console.status(&name, Status::RunningStep(s.argv.join(" ")));
            }
            EventKind::AppStarted(a) => {
                app_pid.store(a.pid, std::sync::atomic::Ordering::Relaxed);
                console.line(
                    &name,
                    &format!("app started (pid {}, restart {})", a.pid, a.restarts),
                );
            }
            EventKind::AppExited(e) if e.requested => console.status(&name, Status::Restarting),
            EventKind::AppExited(e) => {
                let how = if e.signal != 0 {
                    format!("signal {}", e.signal)
                } else {
                    format!("exit code {}", e.exit_code)
                };
                console.line(
                    &name,
                    &format!(
                        "app exited with {how} ({} crash(es) in a row); restarting in {} ms",
                        e.crashes_in_a_row, e.restart_in_ms
                    ),
                );
                if e.crashes_in_a_row >= 3 {
                    console.status(
                        &name,
                        Status::Error(format!(
                            "crash loop: {} crashes in a row",
                            e.crashes_in_a_row
                        )),
                    );
                }
            }
            EventKind::Warning(w) => console.line(&name, &format!("agent warning: {}", w.message)),
            _ => {}
        }
    }
}

/// Reports what stands in the way of a service's pods, in the cluster's
/// words, each time it changes: at once for what will not pass by itself
/// (an image that cannot be pulled, a crash loop, an unschedulable pod, an API
/// server that went away), after a few seconds for what usually does (a
/// container being created, a pod not ready yet).
async fn report_pods(name: String, console: Console, pods: Pods) {
    const PATIENCE: Duration = Duration::from_secs(5);
    let mut rx = pods.subscribe();
    let mut said: Option<String> = None;
    let mut since = Instant::now();
    let mut last: Option<String> = None;
    loop {
        let view = rx.borrow_and_update().clone();
        let (text, urgent) = match (&view.unreachable, &view.tunnel, &view.problem) {
            (Some(e), _, _) => (Some(format!("cannot watch the pods: {e}")), true),
            (None, Some(e), _) => (Some(e.clone()), true),
            (None, None, Some(p)) => (Some(p.text.clone()), !p.transient),
            (None, None, None) => (None, true),
        };
        if text != last {
            since = Instant::now();
            last = text.clone();
        }
        let due = urgent || since.elapsed() >= PATIENCE;
        if due && text != said {
            match &text {
                Some(t) => {
                    console.line(&name, t);
                    if urgent {
                        console.status(&name, Status::Error(t.clone()));
                    }
                }
                None if said.is_some() => {
                    if let Some(pod) = &view.current {
                        console.line(&name, &format!("pod {pod} runs"));
                    }
                }
                None => {}
            }
            said = text.clone();
        }
        let wait = if due || text.is_none() {
            Duration::from_secs(3600)
        } else {
            PATIENCE.saturating_sub(since.elapsed())
        };
        if let Ok(Err(_)) = tokio::time::timeout(wait, rx.changed()).await {
            return;
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
