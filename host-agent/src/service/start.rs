//! The start of a life: start the service (or reach the agent of the
//! instance that runs), report where it is, and run the life its mode asks
//! for. The lives of a service without an agent and of one that is only
//! watched are here; a live one's is in [`update`](super::update).

use super::report::{self, AbortOnDrop};
use super::source_paths::SourcePaths;
use super::{AgentGone, Begin, Cx, End, Lived, readiness, update};
use crate::backoff::Backoff;
use crate::events::{Event, Reporter, Status};
use crate::kube::pods::Pods;
use crate::runtime::{AppPid, Mode, Runtime, RuntimeError, Tunnel};
use crate::session::Session;
use std::time::{Duration, Instant};

/// What a life needs of its instance (which stays in its slot).
pub(super) struct Reach {
    pub tunnel: Tunnel,
    pub mode: Mode,
    pub app_pid: AppPid,
    pub pods: Option<Pods>,
}

/// One life of the service, begun as `begin` says.
pub(super) async fn live<R: Runtime>(cx: &Cx<R>, begin: Begin) -> Lived {
    cx.to.status(Status::Starting);
    let reach = match begin {
        Begin::Reconnect => cx.slot.lock().await.as_ref().map(|i| Reach {
            tunnel: i.tunnel.clone(),
            mode: i.mode.clone(),
            app_pid: i.app_pid.clone(),
            pods: i.pods.clone(),
        }),
        Begin::Start { .. } => None,
    };
    let reach = match reach {
        Some(r) => r,
        None => match start(cx, matches!(begin, Begin::Start { fresh: true })).await {
            Ok(reach) => reach,
            Err(e) if !e.is_retryable() => return Ok(End::Misconfigured(e.explain())),
            Err(e) => return Err(anyhow::Error::msg(e.explain())),
        },
    };
    // A pod's troubles (image pulls, crash loops, probes), as the cluster
    // tells them, while the life waits for it or works with it.
    let _pods_report = reach
        .pods
        .clone()
        .map(|p| AbortOnDrop(tokio::spawn(report::pods(cx.to.clone(), p))));
    match &reach.mode {
        Mode::Unmanaged => unmanaged(cx).await,
        Mode::Watched => watched(cx, &reach).await,
        Mode::Live(_) => {
            update::live(cx, reach, matches!(begin, Begin::Start { fresh: true })).await
        }
    }
}

/// Starts the service and puts its instance in the slot.
async fn start<R: Runtime>(cx: &Cx<R>, fresh: bool) -> Result<Reach, RuntimeError> {
    let instance = cx.runtime.start(&cx.service, fresh, &cx.to).await?;
    cx.to.send(Event::AgentStarted {
        pid: instance.pid,
        at: instance.tunnel.dialer.to_string(),
        location: instance.location.clone(),
    });
    let reach = Reach {
        tunnel: instance.tunnel.clone(),
        mode: instance.mode.clone(),
        app_pid: instance.app_pid.clone(),
        pods: instance.pods.clone(),
    };
    *cx.slot.lock().await = Some(instance);
    Ok(reach)
}

/// Runs as its manifests say, without an agent: readiness only.
async fn unmanaged<R: Runtime>(cx: &Cx<R>) -> Lived {
    cx.to.send(Event::NotLive);
    readiness::without_agent(&cx.service, &cx.to, &cx.state).await;
    std::future::pending().await
}

/// Not live updated: it runs its image as it is; its readiness and its
/// agent are watched.
async fn watched<R: Runtime>(cx: &Cx<R>, reach: &Reach) -> Lived {
    let mut session = connect(&reach.tunnel, patience(cx, reach)).await?;
    // Its image's files are not the working tree's: its paths stay.
    let paths = SourcePaths::default();
    let mut gone = follow_agent(&cx.to, &mut session, reach, paths).await?;
    cx.to.send(Event::NotLive);
    readiness::through_agent(&cx.service, &mut session, &cx.to, &cx.state).await;
    Ok(End::Gone(gone.wait().await))
}

/// How long to keep trying to reach an agent.
#[derive(Clone, Copy)]
pub(super) enum Patience<'a> {
    /// A few seconds: the agent was just started and should answer.
    Brief,
    /// Until it answers: the agent is in a pod that comes and goes (a
    /// rollout, a scale to 0 and back, an API server that went away); each
    /// new reason it cannot be reached is reported once.
    Always(&'a Reporter),
}

/// An agent in pods is waited for as long as it takes.
pub(super) fn patience<'a, R: Runtime>(cx: &'a Cx<R>, reach: &Reach) -> Patience<'a> {
    if reach.pods.is_some() {
        Patience::Always(&cx.to)
    } else {
        Patience::Brief
    }
}

/// A session with the agent, retried as `patience` says.
pub(super) async fn connect(tunnel: &Tunnel, patience: Patience<'_>) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut said = String::new();
    // Brief: every 100 ms; always: 100 ms doubling to 2 s.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let delay = match Session::open_with(&tunnel.dialer, &tunnel.token).await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() => match patience {
                Patience::Brief if Instant::now() < deadline => Duration::from_millis(100),
                Patience::Brief => return Err(e.into()),
                Patience::Always(to) => {
                    let why = e.to_string();
                    if why != said {
                        to.send(Event::Unreachable(why.clone()));
                        said = why;
                    }
                    backoff.next_delay()
                }
            },
            Err(e) => return Err(e.into()),
        };
        tokio::time::sleep(delay).await;
    }
}

/// Knows when the agent a life talks to is gone.
pub(super) struct Gone {
    stopped: tokio::sync::oneshot::Receiver<()>,
    pods: Option<Pods>,
    _events: AbortOnDrop,
}

impl Gone {
    /// Resolves when the agent's event stream ends, or another pod runs.
    pub async fn wait(&mut self) -> AgentGone {
        let moved = async {
            match &self.pods {
                Some(p) => p.moved().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut self.stopped => AgentGone::Stopped,
            () = moved => AgentGone::Moved,
        }
    }
}

/// Forwards the agent's events (from `session`) to the console, its output's
/// paths told by `paths`, and says when the agent is gone.
pub(super) async fn follow_agent(
    to: &Reporter,
    session: &mut Session,
    reach: &Reach,
    paths: SourcePaths,
) -> anyhow::Result<Gone> {
    let events = session.events().await?;
    let (tx, stopped) = tokio::sync::oneshot::channel();
    let (to, app_pid) = (to.clone(), reach.app_pid.clone());
    let task = tokio::spawn(async move {
        report::agent_events(to, events, app_pid, paths).await;
        let _ = tx.send(());
    });
    Ok(Gone {
        stopped,
        pods: reach.pods.clone(),
        _events: AbortOnDrop(task),
    })
}
