//! The life of a live service: one mirror per life (a session per sync
//! mapping), a first full sync that builds and starts the app, then every
//! batch of changes turned into a sync (with steps and a restart) or a
//! rebuild, while readiness is checked between batches.

use super::source_paths::SourcePaths;
use super::start::{self, Reach};
use super::{Cx, End, Lived, State, readiness};
use crate::config::{Service, SyncMapping};
use crate::events::{Event, Status, Summary, SyncKind};
use crate::filter::Filter;
use crate::ignores::Ignores;
use crate::mirror::{Mirror, Part, Pending, Plan};
use crate::rules::{Batch, Decision, decide};
use crate::runtime::{Live, Mode, Runtime, Tunnel};
use crate::session::{Followup, Report};
use crate::steer::{Asks, LiveGuard};
use crate::watch::Changes;
use anyhow::{anyhow, bail};
use lks_proto::RelPath;
use lks_proto::v1;
use std::time::Instant;

/// What a batch left to do.
enum After {
    /// Nothing more.
    Done,
    /// The app restarted (or is not ready yet): check readiness again.
    Recheck,
    /// The service must be rebuilt.
    Rebuild,
}

/// Runs a live service until it must be rebuilt or its agent is gone.
pub(super) async fn live<R: Runtime>(cx: &Cx<R>, reach: Reach, rebuilding: bool) -> Lived {
    let Mode::Live(live) = &reach.mode else {
        bail!("{} is not live updated", cx.service.name);
    };
    let service = &cx.service;
    let parts = connect_parts(service, &reach.tunnel, start::patience(cx, &reach)).await?;
    // Watched before the first scan, so nothing that happens meanwhile is lost.
    let mut mirror = Mirror::watch(&service.dir, parts)?;
    let agent = mirror.agent();
    let paths = SourcePaths::new(&service.live_update.sync, &agent.agent_root);
    let mut gone = start::follow_agent(&cx.to, agent, &reach, paths).await?;
    let outside = Ignores::load(&service.dir, &service.live_update.ignore);

    let build_steps = live.first_batch.as_deref().unwrap_or_default();
    cx.to.status(if build_steps.is_empty() {
        Status::Syncing
    } else {
        Status::Building
    });
    let started = Instant::now();
    let report = first_sync(&mut mirror, service, live).await?;
    cx.to.send(Event::Synced {
        kind: if rebuilding {
            SyncKind::Rebuilt
        } else {
            SyncKind::First
        },
        summary: Summary::from(&report),
        ms: started.elapsed().as_millis(),
    });
    check_report(&report, &cx.to)?;
    let mut check_readiness = true;
    // Subscribed before it says it is live: nothing asked after is missed.
    let mut asks = cx.steer.subscribe();
    let mut seen = asks.borrow_and_update().clone();
    let _live = LiveGuard::new(&cx.steer);
    let mut held = Held::default();

    loop {
        let (changed, session) = mirror.split();
        // Readiness is checked while watching: a change that arrives first
        // is handled at once (the check starts over after it).
        let ready_check = async {
            if check_readiness {
                readiness::through_agent(service, session, &cx.to, &cx.state).await;
            }
            std::future::pending::<()>().await
        };
        let wake = tokio::select! {
            _ = ready_check => unreachable!("pending"),
            c = changed.next() => Wake::Changes(c),
            g = gone.wait() => return Ok(End::Gone(g)),
            Ok(()) = asks.changed() => Wake::Asked(asks.borrow_and_update().clone()),
        };
        // An interrupted check runs again after this batch.
        check_readiness = *cx.state.borrow() != State::Ready;
        let after = match wake {
            Wake::Changes(None) => bail!("the file watcher stopped"),
            // The mode as it is now (it may have changed since `seen`).
            Wake::Changes(Some(changes)) if asks.borrow().manual && held.wants(&changes) => {
                held.add(cx, &mirror, &outside, changes);
                After::Done
            }
            Wake::Changes(Some(changes)) => {
                on_changes(cx, &mut mirror, live, &outside, changes).await?
            }
            Wake::Asked(now) => {
                let after =
                    on_asked(cx, &mut mirror, live, &outside, &mut held, &seen, &now).await?;
                seen = now;
                after
            }
        };
        match after {
            After::Done => {}
            After::Recheck => check_readiness = true,
            After::Rebuild => return Ok(End::Rebuild),
        }
    }
}

/// What woke a live service's loop.
enum Wake {
    /// Files changed (None: the watcher stopped).
    Changes(Option<Changes>),
    /// Someone asked something of it by hand (what has been asked so far).
    Asked(Asks),
}

/// Changes that wait for a trigger (manual mode).
#[derive(Default)]
struct Held(Option<Changes>);

impl Held {
    /// Whether `changes` should wait: not an empty batch (a retry of
    /// refused operations, which goes on at once).
    fn wants(&self, changes: &Changes) -> bool {
        changes.rescan || !changes.paths.is_empty()
    }

    /// Keeps `changes` until released; says how many paths wait.
    fn add(&mut self, cx: &Cx<impl Runtime>, mirror: &Mirror, outside: &Ignores, changes: Changes) {
        let held = self.0.get_or_insert_with(Changes::default);
        held.paths.extend(changes.paths);
        held.rescan |= changes.rescan;
        let waiting = mirror
            .touched(held, outside)
            .len()
            .max(usize::from(held.rescan));
        cx.steer.set_held(waiting);
        cx.to.send(Event::ChangesWaiting(waiting));
    }

    /// What waited, timed from now (the wait is not the sync's).
    fn take(&mut self, cx: &Cx<impl Runtime>) -> Option<Changes> {
        let mut changes = self.0.take()?;
        changes.first_event = Some(Instant::now());
        cx.steer.set_held(0);
        cx.to.send(Event::ChangesWaiting(0));
        Some(changes)
    }
}

/// What was asked by hand since `seen`: restart the app alone; apply the
/// changes that waited (a trigger, or manual mode switched off).
async fn on_asked<R: Runtime>(
    cx: &Cx<R>,
    mirror: &mut Mirror,
    live: &Live,
    outside: &Ignores,
    held: &mut Held,
    seen: &Asks,
    now: &Asks,
) -> anyhow::Result<After> {
    let mut after = After::Done;
    if now.release > seen.release
        && let Some(changes) = held.take(cx)
    {
        after = on_changes(cx, mirror, live, outside, changes).await?;
    }
    if now.restart > seen.restart && !matches!(after, After::Rebuild) {
        after = restart_app(cx, mirror).await?;
    }
    Ok(after)
}

/// Restarts the app alone: a batch without changes whose follow-up is the
/// restart.
async fn restart_app<R: Runtime>(cx: &Cx<R>, mirror: &mut Mirror) -> anyhow::Result<After> {
    let Pending::Planned(plan) = mirror.take(Changes::default()).await else {
        bail!("cannot restart the app: its directory cannot be synced now");
    };
    cx.to.status(Status::Restarting);
    let followup = Followup {
        steps: Vec::new(),
        restart: true,
        sync_point: false,
    };
    let report = mirror.apply(plan, followup).await?;
    if report_failed(cx, &report) {
        return Ok(After::Done);
    }
    cx.state.send_replace(State::Pending);
    Ok(After::Recheck)
}

/// One batch of changes: planned, decided, synced.
async fn on_changes<R: Runtime>(
    cx: &Cx<R>,
    mirror: &mut Mirror,
    live: &Live,
    outside: &Ignores,
    changes: Changes,
) -> anyhow::Result<After> {
    let service = &cx.service;
    let pending = mirror.take(changes).await;
    warn(service, mirror.take_warnings());
    let plan = match pending {
        Pending::Planned(plan) => plan,
        Pending::Held(why) | Pending::Gone(why) => {
            // Gone: the mirror waits for the directory to come back.
            cx.to.send(Event::Held(why));
            cx.to.status(Status::Error("not synced: see above".into()));
            return Ok(After::Done);
        }
    };
    for p in &plan.problems {
        cx.to.send(Event::Warning(p.clone()));
    }
    let touched = mirror.touched(&plan.changes, outside);
    let touched: Vec<&std::path::Path> = touched.iter().map(|p| p.as_path()).collect();
    let reported: Vec<std::path::PathBuf> = plan
        .changes
        .paths
        .iter()
        .map(|rel| service.dir.join(rel.as_str()))
        .collect();
    let batch = Batch {
        reported: &reported,
        touched: &touched,
        changed: plan.changed(),
    };
    let (steps, restart) = match decide(service, &live.rebuild_on, &batch) {
        Decision::Nothing => return Ok(After::Done),
        Decision::Rebuild { reason } => {
            cx.to.send(Event::Rebuilding(reason));
            cx.to.status(Status::Building);
            return Ok(After::Rebuild);
        }
        Decision::Sync { steps, restart } => (steps, restart),
    };
    cx.to.status(Status::Syncing);
    let followup = Followup {
        steps: steps.iter().map(|i| run_step(service, *i)).collect(),
        restart,
        sync_point: false,
    };
    let first_event = plan.changes.first_event;
    let paths: Vec<String> = plan
        .changed()
        .iter()
        .take(Summary::PATHS)
        .cloned()
        .collect();
    let report = mirror.apply(plan, followup).await?;
    warn(service, mirror.take_warnings());
    let ms = first_event.map(|t| t.elapsed().as_millis()).unwrap_or(0);
    cx.to.send(Event::Synced {
        kind: SyncKind::Batch,
        summary: Summary {
            paths,
            ..Summary::from(&report)
        },
        ms,
    });
    if report_failed(cx, &report) {
        if let Some(delay) = mirror.retry_in() {
            cx.to.send(Event::SyncRetry(delay));
        }
        return Ok(After::Done);
    }
    if report.restarted || *cx.state.borrow() != State::Ready {
        // A restarted app is not ready until its check passes again.
        cx.state.send_replace(State::Pending);
        Ok(After::Recheck)
    } else {
        cx.to.status(Status::Ready);
        Ok(After::Done)
    }
}

fn warn(service: &Service, warnings: Vec<String>) {
    for w in warnings {
        tracing::warn!(service = %service.name, "{w}");
    }
}

/// One session per sync mapping, each restricted to its remote directory
/// (they do not nest: `config` checks it); they share the agent.
async fn connect_parts(
    service: &Service,
    tunnel: &Tunnel,
    patience: start::Patience<'_>,
) -> anyhow::Result<Vec<Part>> {
    let specs = &service.live_update.sync;
    if specs.is_empty() {
        bail!(
            "{}: live_update.sync is empty: nothing to sync",
            service.name
        );
    }
    let prefixes: Vec<Option<RelPath>> = specs
        .iter()
        .map(remote_prefix)
        .collect::<anyhow::Result<_>>()?;
    let mut parts = Vec::with_capacity(specs.len());
    for (spec, prefix) in specs.iter().zip(prefixes) {
        let mut session = start::connect(tunnel, patience).await?;
        session.set_prefix(prefix);
        // Kept in the work dir between runs: a new `lks up` reads only what
        // changed since (an image's files often carry other mtimes).
        let hashes = service
            .work_dir()
            .map(|w| w.join(&service.name).join("hashes"));
        parts.push(Part::new(
            &spec.local,
            &sync_filter(service, spec),
            session,
            hashes.as_deref(),
        ));
    }
    Ok(parts)
}

/// What a mapping takes from its folder: not the service's `ignore`
/// (relative to the service directory, also for a mapping of a subfolder),
/// nor what lks reads itself (the service's file, its manifests: they are
/// not the app's, and an image does not hold them); only what its `only:`
/// names, when it has one.
fn sync_filter(service: &Service, spec: &SyncMapping) -> Filter {
    // The patterns' base: the service directory, or the mapping's own folder
    // when it is elsewhere (`../shared`).
    let (base, at) = match spec.local.strip_prefix(&service.dir) {
        Ok(rel) => (
            service.dir.as_path(),
            rel.to_str().unwrap_or_default().to_string(),
        ),
        Err(_) => (spec.local.as_path(), String::new()),
    };
    let mut excludes = service.live_update.ignore.clone();
    for f in service.own_files() {
        if f.starts_with(&spec.local)
            && let Some(rel) = f.strip_prefix(base).ok().and_then(|r| r.to_str())
            && !rel.is_empty()
        {
            excludes.push(format!("/{rel}"));
        }
    }
    Filter {
        excludes,
        at,
        only: spec.only.clone(),
        no_dockerignore: false,
    }
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

/// The service's run step `i`, in its working directory.
fn run_step(service: &Service, i: usize) -> v1::Step {
    let run = &service.live_update.run[i];
    v1::Step {
        workdir: run.workdir.clone(),
        ..step(service, &run.argv)
    }
}

/// A full sync: make every mapped directory on the agent equal, then run the
/// build steps and start (or restart) the app as the root's filling asks.
///
/// In a `seeded` root (an image's files) the paths only the agent has are
/// left alone: they are what the image's build made (`node_modules`, a
/// compiled binary), not files the developer deleted. The run steps whose
/// triggers match what the sync changed run too (a requirements file newer
/// than the image).
async fn first_sync(mirror: &mut Mirror, service: &Service, live: &Live) -> anyhow::Result<Report> {
    let plan: Plan = match mirror.resync(live.seeded).await? {
        Pending::Planned(plan) => plan,
        Pending::Held(why) | Pending::Gone(why) => bail!("{why}"),
    };
    warn(service, mirror.take_warnings());
    for p in &plan.problems {
        tracing::warn!(service = %service.name, "{p}");
    }
    let mut steps: Vec<v1::Step> = Vec::new();
    let start_app = live.first_batch.is_some();
    if let Some(build) = &live.first_batch {
        steps.extend(build.iter().map(|argv| step(service, argv)));
    }
    // A seeded root that differed from the tree: the triggered steps run, and
    // an app that already runs (it started with the image's files) restarts.
    let seeded_changed = live.seeded && !plan.changed().is_empty();
    let batch = Batch {
        reported: &[],
        touched: &[],
        changed: plan.changed(),
    };
    if seeded_changed
        && let Decision::Sync {
            steps: triggered, ..
        } = decide(service, &[], &batch)
    {
        steps.extend(triggered.iter().map(|i| run_step(service, *i)));
    }
    let followup = Followup {
        steps,
        restart: start_app || seeded_changed,
        sync_point: true,
    };
    Ok(mirror.apply(plan, followup).await?)
}

/// A first sync's failure, its failed step's output shown first.
fn check_report(report: &Report, to: &crate::events::Reporter) -> anyhow::Result<()> {
    if let Some(e) = report.errors.first() {
        bail!("the sync failed: {e}");
    }
    if let Some(s) = report.steps.iter().find(|s| !s.success) {
        to.send(Event::StepFailed {
            cmd: format!("build step {}", s.index + 1),
            failure: step_failure(s),
            output_tail: s.output_tail.clone(),
            keeps_previous: false,
        });
        bail!("build step {} failed: {}", s.index + 1, step_failure(s));
    }
    Ok(())
}

/// Why a step failed: its error, or its exit code.
pub(super) fn step_failure(s: &v1::StepResult) -> String {
    if !s.error.is_empty() {
        s.error.clone()
    } else {
        format!("exit code {}", s.exit_code)
    }
}

/// Reports sync errors and failed steps; true if the batch failed.
fn report_failed<R: Runtime>(cx: &Cx<R>, report: &Report) -> bool {
    for e in &report.errors {
        cx.to.send(Event::SyncError(e.clone()));
    }
    let failed = report.steps.iter().find(|s| !s.success);
    if let Some(s) = failed {
        let cmd = cx
            .service
            .live_update
            .run
            .iter()
            .map(|r| r.cmd.as_str())
            .nth(s.index as usize)
            .unwrap_or("step");
        cx.to.send(Event::StepFailed {
            cmd: cmd.to_string(),
            failure: step_failure(s),
            output_tail: s.output_tail.clone(),
            keeps_previous: true,
        });
        cx.to.status(Status::Error(format!("step `{cmd}` failed")));
    }
    !report.errors.is_empty() || failed.is_some()
}
