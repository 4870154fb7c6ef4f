//! One service under `lks up`, as a small state machine: each life of the
//! service starts it (or reaches its agent again), fills its root, waits for
//! readiness and then turns every batch of file changes into a sync (with
//! steps and a restart) or a rebuild; how a life ends decides how the next
//! begins. Everything it does goes out as typed [events](crate::events).
//!
//! - [`start`]: start the service or reach its agent again; the lives of a
//!   service without an agent and of one only watched.
//! - [`update`]: the life of a live service (first sync, then batches).
//! - [`readiness`]: its readiness check.
//! - [`report`]: what its agent and its pods say; [`source_paths`]: paths
//!   in its output told as the developer's files.
//! - [`host`]: a host-side resource (`host:`), which has no runtime.

pub mod host;
mod readiness;
mod report;
mod source_paths;
mod start;
mod update;

use crate::backoff::Backoff;
use crate::config::Service;
use crate::events::{Event, Reporter, Status};
use crate::runtime::{Instance, Runtime};
use crate::steer::Steer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};

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
pub type Slot<H> = Arc<Mutex<Option<Instance<H>>>>;

/// A life that lasted this long without failing was healthy: the next
/// failure is retried after the shortest delay again.
const HEALTHY: Duration = Duration::from_secs(60);

/// Runs one service until its task is cancelled. Failures are reported and
/// retried with backoff; they never stop the other services.
pub async fn run<R: Runtime>(
    service: Service,
    runtime: Arc<R>,
    to: Reporter,
    deps: Vec<(String, watch::Receiver<State>)>,
    state: Arc<watch::Sender<State>>,
    slot: Slot<R::Handle>,
    steer: Arc<Steer>,
) {
    // `${host:NAME}` in the environment: how this runtime reaches NAME.
    let service = Service {
        env: crate::runtime::expand_env(&service.env, |n| runtime.host_of(n)),
        ..service
    };
    for (name, mut rx) in deps {
        to.status(Status::Waiting(name.clone()));
        let _ = rx.wait_for(|s| *s == State::Ready).await;
    }
    let machine = Machine {
        cx: Cx {
            service,
            runtime,
            to,
            state,
            slot,
            steer,
        },
        backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
    };
    let span = tracing::info_span!("service", name = %machine.cx.service.name);
    tracing::Instrument::instrument(machine.run(), span).await
}

/// What every stage of a service works with.
struct Cx<R: Runtime> {
    service: Service,
    runtime: Arc<R>,
    to: Reporter,
    state: Arc<watch::Sender<State>>,
    slot: Slot<R::Handle>,
    /// The hand on its live updates (manual mode, restart the app alone).
    steer: Arc<Steer>,
}

/// How the next life of a service begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// Start it; `fresh` asks for a clean slate (a rebuild).
    Start { fresh: bool },
    /// Reach the agent of the instance that runs (a pod that restarted or
    /// was replaced is found through the same tunnel) and resync.
    Reconnect,
}

/// How a life of a service ended.
enum End {
    /// A change needs a new image or new objects.
    Rebuild,
    /// The agent is not reachable where the life talked to it any more.
    Gone(AgentGone),
    /// Something failed.
    Failed(anyhow::Error),
    /// It cannot start as it is defined (why): starting it again cannot help.
    Misconfigured(String),
}

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

/// What a life runs to: its end, or an error (a failure).
type Lived = anyhow::Result<End>;

struct Machine<R: Runtime> {
    cx: Cx<R>,
    backoff: Backoff,
}

impl<R: Runtime> Machine<R> {
    async fn run(mut self) {
        let mut begin = Begin::Start { fresh: false };
        loop {
            let born = Instant::now();
            let end = match start::live(&self.cx, begin).await {
                Ok(end) => end,
                Err(e) => End::Failed(e),
            };
            let next = match end {
                End::Rebuild => self.on_rebuild().await,
                _ if self.cx.to.is_stopping() => return,
                End::Gone(gone) if self.reconnectable().await => self.on_gone(gone).await,
                End::Gone(gone) => self.on_failure(anyhow::anyhow!("{gone}"), born).await,
                End::Failed(e) => self.on_failure(e, born).await,
                End::Misconfigured(why) => return self.on_misconfigured(why).await,
            };
            begin = next;
        }
    }

    /// Whether the instance's agent can be reached again without starting
    /// it anew (it lives in pods that come and go).
    async fn reconnectable(&self) -> bool {
        self.cx
            .slot
            .lock()
            .await
            .as_ref()
            .is_some_and(|i| i.pods.is_some())
    }

    /// A rebuild is a fresh start: new agent, fresh root (in a cluster:
    /// applied again, a rolling update).
    async fn on_rebuild(&mut self) -> Begin {
        self.retire().await;
        Begin::Start { fresh: true }
    }

    /// A pod that restarted or was replaced: its tunnel finds the new one.
    async fn on_gone(&mut self, gone: AgentGone) -> Begin {
        self.cx.to.send(Event::Reconnecting(gone.to_string()));
        let _ = self.cx.state.send(State::Pending);
        tokio::time::sleep(Duration::from_millis(500)).await;
        Begin::Reconnect
    }

    /// Reported, then started again after a delay that doubles with each
    /// failure in a row (a healthy life in between starts it over).
    async fn on_failure(&mut self, e: anyhow::Error, born: Instant) -> Begin {
        if born.elapsed() >= HEALTHY {
            self.backoff.reset();
        }
        let msg = format!("{e:#}");
        self.cx.to.status(Status::Error(msg.clone()));
        let _ = self.cx.state.send(State::Failed(msg));
        self.retire().await;
        let delay = self.backoff.next_delay();
        self.cx.to.send(Event::Retrying(delay));
        tokio::time::sleep(delay).await;
        Begin::Start { fresh: false }
    }

    /// Reported once; the service is not started again (the others run on).
    async fn on_misconfigured(&mut self, why: String) {
        self.cx.to.status(Status::Error(why.clone()));
        let _ = self.cx.state.send(State::Failed(why));
        self.retire().await;
        self.cx.to.send(Event::NotRetried);
        std::future::pending().await
    }

    async fn retire(&self) {
        if let Some(instance) = self.cx.slot.lock().await.take() {
            let _ = self.cx.runtime.retire(&self.cx.service, instance).await;
        }
    }
}
