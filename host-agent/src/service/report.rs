//! What a service's agent and its pods say, turned into events: the agent's
//! event stream (its app's output, restarts, crashes, step output) and what
//! the cluster says keeps its pods from running.

use super::source_paths::SourcePaths;
use crate::events::{Event, Reporter, Status};
use crate::kube::pods::Pods;
use crate::runtime::AppPid;
use crate::session::AgentEvents;
use lks_proto::v1::{self, event::Kind};
use std::time::{Duration, Instant};

/// Forwards the agent's events until its stream ends (the agent went away).
/// The steps of the loop's own probes (readiness checks) are not the user's
/// business and stay out.
/// Paths beneath the agent's root in output lines are told as the local
/// files they come from (`paths`).
pub async fn agent_events(
    to: Reporter,
    mut events: AgentEvents,
    app_pid: AppPid,
    paths: SourcePaths,
) {
    while let Some(ev) = events.next().await {
        match ev.kind {
            Kind::Output(o) if o.source == v1::OutputSource::Step as i32 && !ev.probe => {
                to.send(Event::StepOutput(paths.rewrite(o.line)));
            }
            Kind::Output(o) if o.source == v1::OutputSource::Step as i32 => {}
            Kind::Output(o) => to.send(Event::AppOutput(paths.rewrite(o.line))),
            Kind::StepStarted(s) if !ev.probe => {
                to.status(Status::RunningStep(s.argv.join(" ")));
            }
            Kind::AppStarted(a) => {
                app_pid.store(a.pid, std::sync::atomic::Ordering::Relaxed);
                to.send(Event::AppStarted {
                    pid: a.pid,
                    restarts: a.restarts,
                });
            }
            // Asked for by the loop, which says so itself and checks
            // readiness after: from here, `restarting` could come after that
            // check's `ready`, and stay the status of an app that runs.
            Kind::AppExited(e) if e.requested => {}
            Kind::AppExited(e) => {
                let how = if e.signal != 0 {
                    format!("signal {}", e.signal)
                } else {
                    format!("exit code {}", e.exit_code)
                };
                to.send(Event::AppExited {
                    how,
                    crashes_in_a_row: e.crashes_in_a_row,
                    restart_in_ms: e.restart_in_ms,
                });
                if e.crashes_in_a_row >= 3 {
                    to.status(Status::Error(format!(
                        "crash loop: {} crashes in a row",
                        e.crashes_in_a_row
                    )));
                }
            }
            Kind::Warning(w) => to.send(Event::AgentWarning(w.message)),
            _ => {}
        }
    }
}

/// Reports what stands in the way of a service's pods, in the cluster's
/// words, each time it changes: at once for what will not pass by itself
/// (an image that cannot be pulled, a crash loop, an unschedulable pod, an API
/// server that went away), after a few seconds for what usually does (a
/// container being created, a pod not ready yet).
pub async fn pods(to: Reporter, pods: Pods) {
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
                    to.send(Event::PodProblem(t.clone()));
                    if urgent {
                        to.status(Status::Error(t.clone()));
                    }
                }
                None if said.is_some() => {
                    if let Some(pod) = &view.current {
                        to.send(Event::PodRuns(pod.clone()));
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
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
