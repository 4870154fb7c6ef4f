//! The agent's event stream, each event marked with whether one of the
//! session's own probes (a readiness check) caused it.

use lks_proto::v1;
use std::sync::Arc;
use tokio_stream::StreamExt;

/// The ids of the last probes a session sent.
#[derive(Clone, Default)]
pub(super) struct Probes(Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Probes {
    /// Enough for the probes whose events may still be on their way.
    const KEPT: usize = 64;

    pub(super) fn add(&self, id: &str) {
        let mut ids = self.0.lock().unwrap();
        if ids.len() == Self::KEPT {
            ids.pop_front();
        }
        ids.push_back(id.to_string());
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap().iter().any(|p| p == id)
    }
}

/// One event of the agent, and whether it comes from a probe of the loop
/// (a readiness check) rather than from the user's steps and app.
pub struct AgentEvent {
    /// What happened.
    pub kind: v1::event::Kind,
    /// Whether a probe caused it.
    pub probe: bool,
}

/// The agent's event stream.
pub struct AgentEvents {
    pub(super) stream: tonic::Streaming<v1::Event>,
    pub(super) probes: Probes,
}

impl AgentEvents {
    /// The next event; `None` when the stream ended (the agent went away).
    pub async fn next(&mut self) -> Option<AgentEvent> {
        use v1::event::Kind;
        loop {
            let kind = match self.stream.next().await? {
                Ok(event) => event.kind,
                Err(status) => {
                    tracing::info!("the agent's event stream broke off: {}", status.message());
                    return None;
                }
            };
            let Some(kind) = kind else {
                continue;
            };
            let batch = match &kind {
                Kind::Output(o) if o.source == v1::OutputSource::Step as i32 => Some(&o.batch_id),
                Kind::StepStarted(s) => Some(&s.batch_id),
                Kind::StepFinished(s) => Some(&s.batch_id),
                _ => None,
            };
            let probe = batch.is_some_and(|b| self.probes.contains(b));
            return Some(AgentEvent { kind, probe });
        }
    }
}
