//! The readiness stage of a service: run its check (over the network, or
//! through its agent for an `exec` check) until it passes or gives up, and
//! tell the console and the services that depend on it.

use super::State;
use crate::config::Service;
use crate::events::{Reporter, Status};
use crate::readiness;
use crate::session::Session;
use lks_proto::v1;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};

/// Waits for a service without an agent: http and tcp checks only.
pub async fn without_agent(service: &Service, to: &Reporter, state: &watch::Sender<State>) {
    let Some(readiness) = &service.readiness else {
        return ready(to, state);
    };
    to.status(Status::CheckingReadiness);
    let result = readiness::wait(readiness, |_| async {
        Err(
            "an exec readiness check needs the agent: name the service --local, or use http or tcp"
                .to_string(),
        )
    })
    .await;
    settle(result, service, to, state);
}

/// Waits for a service whose agent answers on `session` (an `exec` check
/// runs there, as a probe).
pub async fn through_agent(
    service: &Service,
    session: &mut Session,
    to: &Reporter,
    state: &watch::Sender<State>,
) {
    let Some(readiness) = &service.readiness else {
        return ready(to, state);
    };
    to.status(Status::CheckingReadiness);
    let session = Arc::new(Mutex::new(session));
    let env = service.env.clone();
    let result = readiness::wait(readiness, |argv| {
        let session = session.clone();
        let env = env.clone();
        async move {
            let step = v1::Step {
                argv,
                workdir: String::new(),
                env: env.into_iter().collect(),
            };
            let result = session
                .lock()
                .await
                .probe(step)
                .await
                .map_err(|e| e.to_string())?;
            match result {
                Some(r) if r.success => Ok(()),
                Some(r) => Err(super::update::step_failure(&r)),
                None => Err("the check did not run".into()),
            }
        }
    })
    .await;
    settle(result, service, to, state);
}

fn ready(to: &Reporter, state: &watch::Sender<State>) {
    to.status(Status::Ready);
    let _ = state.send(State::Ready);
}

fn settle(
    result: Result<std::time::Duration, String>,
    service: &Service,
    to: &Reporter,
    state: &watch::Sender<State>,
) {
    match result {
        Ok(took) => {
            tracing::debug!(service = %service.name, "ready after {took:?}");
            ready(to, state);
        }
        Err(why) => {
            to.status(Status::Error(why.clone()));
            let _ = state.send(State::Failed(why));
        }
    }
}
