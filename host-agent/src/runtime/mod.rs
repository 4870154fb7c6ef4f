//! Runtimes: where a service runs and how its agent is reached. One trait; the
//! `local` runtime runs the agent as a child process with its root in a work
//! dir (docker and kube come next).

pub mod local;

use crate::config::Service;
use std::future::Future;

/// A started service: how to reach its agent, and what it needs first.
pub struct Instance {
    /// The agent's URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The bearer token the agent expects.
    pub token: String,
    /// The agent's process id, when lks started it as a process.
    pub pid: Option<u32>,
    /// Whether the app waits for a first batch (with `restart`) to start,
    /// because its root had to be filled first.
    pub start_with_first_batch: bool,
    /// Steps the first batch (and a rebuild) runs before the app starts: the
    /// runtime's notion of "build" (local: `build.local`).
    pub build_steps: Vec<Vec<String>>,
    /// Where the service's files live, for messages.
    pub location: String,
    /// Process handle, for runtimes that own one.
    pub(crate) child: Option<tokio::process::Child>,
    /// The app's process id as last reported by the agent (0: none yet). The
    /// app leads its own process group, so a runtime whose agent died can
    /// still stop what it left behind.
    pub app_pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// Why a runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The agent binary is not where lks looked.
    #[error(
        "cannot find lks-agent (looked in {looked}); build it with `cargo build --workspace --bins` or set LKS_AGENT_BIN"
    )]
    AgentNotFound {
        /// Where lks looked.
        looked: String,
    },
    /// The agent did not start.
    #[error("the agent for {service} did not start: {reason}")]
    AgentFailed {
        /// The service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// An I/O error preparing the service.
    #[error("{service}: {context}: {source}")]
    Io {
        /// The service.
        service: String,
        /// What lks was doing.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where and how services run.
pub trait Runtime: Send + Sync {
    /// The runtime's name, for messages.
    fn name(&self) -> &'static str;

    /// Starts the service's agent (and, where the files are already there,
    /// the app). `fresh` asks for a clean slate (a rebuild): nothing left from
    /// an earlier instance.
    fn start(
        &self,
        service: &Service,
        fresh: bool,
    ) -> impl Future<Output = Result<Instance, RuntimeError>> + Send;

    /// Stops everything the runtime started for the service.
    fn stop(
        &self,
        service: &Service,
        instance: Instance,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
