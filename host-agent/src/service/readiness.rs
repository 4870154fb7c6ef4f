//! The readiness stage of a service: run its check (over the network, or
//! through its agent for an `exec` check) until it passes or gives up, and
//! tell the console and the services that depend on it.

use super::State;
use crate::config::Service;
use crate::events::{Reporter, Status};
use crate::readiness;
use crate::session::Session;
use lks_proto::v1;
use tokio::sync::watch;

/// Waits for a service without an agent: http and tcp checks only.
pub async fn without_agent(service: &Service, to: &Reporter, state: &watch::Sender<State>) {
    let Some(readiness) = &service.readiness else {
        return ready(to, state);
    };
    to.status(Status::CheckingReadiness);
    let result = readiness::wait(readiness, &mut NoAgent).await;
    settle(result, service, to, state);
}

/// Waits for a service whose agent answers on `session` (an `exec` check
/// runs there, as a probe; a tcp check of a port lks forwards connects
/// there).
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
    let mut agent = Agent {
        session,
        env: &service.env,
        ports: crate::debug::forwarded_ports(service),
    };
    let result = readiness::wait(readiness, &mut agent).await;
    settle(result, service, to, state);
}

/// Checks from here only.
struct NoAgent;

impl readiness::Where for NoAgent {
    async fn exec(&mut self, _: Vec<String>) -> Result<(), String> {
        Err(
            "an exec readiness check needs the agent: name the service --local, or use http or tcp"
                .to_string(),
        )
    }

    async fn connect(&mut self, _: u16) -> Option<Result<(), String>> {
        None
    }
}

/// Checks through the service's agent.
struct Agent<'a> {
    session: &'a mut Session,
    env: &'a std::collections::BTreeMap<String, String>,
    /// The ports lks forwards to where the app runs: a connection to one
    /// here is accepted by lks whether or not the app listens, so it is
    /// made by the agent instead.
    ports: Vec<u16>,
}

impl readiness::Where for Agent<'_> {
    async fn exec(&mut self, argv: Vec<String>) -> Result<(), String> {
        let step = v1::Step {
            argv,
            workdir: String::new(),
            env: self.env.clone().into_iter().collect(),
        };
        match self.session.probe(step).await.map_err(|e| e.to_string())? {
            Some(r) if r.success => Ok(()),
            Some(r) => Err(super::update::step_failure(&r)),
            None => Err("the check did not run".into()),
        }
    }

    async fn connect(&mut self, port: u16) -> Option<Result<(), String>> {
        if !self.ports.contains(&port) {
            return None;
        }
        let connect = self.session.connect(port);
        Some(
            match tokio::time::timeout(std::time::Duration::from_secs(2), connect).await {
                Ok(r) => r,
                Err(_) => Err("the agent did not connect within 2 s".into()),
            },
        )
    }
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
