//! Runtimes: where a service runs and how its agent is reached. One trait;
//! `local` runs the agent as a child process with its root in a work dir,
//! `docker` runs each service in a container of its image, `kube` applies its
//! manifests to a cluster.

pub mod agent_binary;
pub mod docker;
mod error;
pub mod kubernetes;
pub mod local;
pub mod needs;

use crate::config::Service;
use crate::events::Reporter;
use std::future::Future;

pub use error::{RuntimeError, StartError};

/// The runtimes `lks up` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Child processes with their roots under `.lks/`; no containers.
    Local,
    /// A container per service from its image, on one network per run.
    Docker,
    /// The services' `k8s:` manifests, applied to the current kubeconfig
    /// context's cluster, the agent injected into live pods.
    Kube,
}

impl Kind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Docker => "docker",
            Kind::Kube => "kube",
        }
    }
}

/// How to reach an agent.
#[derive(Clone)]
pub struct Tunnel {
    /// A local TCP URL, or a port-forward.
    pub dialer: crate::tunnel::Dialer,
    /// The bearer token the agent expects.
    pub token: String,
}

/// What lks does with a started service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// It has no agent (a kube service that is not live runs its manifests
    /// untouched): readiness checks over the network only.
    Unmanaged,
    /// It has an agent but is not synced: it runs its image as it is,
    /// watched for readiness and its app's events.
    Watched,
    /// It is live updated: synced, its steps run, restarted.
    Live(Live),
}

/// How a live service's root is filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// The root already holds files lks did not put there (an image's): the
    /// first sync leaves the paths only the agent has (build outputs such as
    /// `node_modules`) alone rather than deleting them, and an app that
    /// started with them restarts when the sync changed anything.
    pub seeded: bool,
    /// The app waits for the first batch to start, after these steps (the
    /// runtime's notion of "build", local: `build.local`); `None`: it starts
    /// by itself (held by its supervisor until the first sync).
    pub first_batch: Option<Vec<Vec<String>>>,
    /// Local files whose change needs a rebuild whatever the rules say (the
    /// Dockerfile of an image, the manifests applied to a cluster).
    pub rebuild_on: Vec<std::path::PathBuf>,
}

/// The app's process id as last reported by its agent (0: none yet). The app
/// leads its own process group, so a runtime whose agent died can still stop
/// what it left behind.
pub type AppPid = std::sync::Arc<std::sync::atomic::AtomicU32>;

/// A started service: how to reach its agent, what lks does with it, and the
/// runtime's own handle on it.
pub struct Instance<H> {
    /// How to reach the agent.
    pub tunnel: Tunnel,
    /// What lks does with it.
    pub mode: Mode,
    /// The agent's process id, when it is a local process (for messages).
    pub pid: Option<u32>,
    /// Where the service's files live, for messages.
    pub location: String,
    /// The app's process id, as its agent reports it.
    pub app_pid: AppPid,
    /// The pods the agent runs in (kube): followed as they come and go, and
    /// what keeps them from running, as the cluster says it. An agent in a
    /// pod that went away is reached again through the same tunnel rather
    /// than started anew.
    pub pods: Option<crate::kube::pods::Pods>,
    /// What the runtime keeps for itself (a child process, a container).
    pub handle: H,
}

/// The environment of a service with each `${host:NAME}` replaced by the
/// address under which service NAME is reached (`host`): `127.0.0.1` on the
/// local runtime, the service's name on a container network.
pub fn expand_env(
    env: &std::collections::BTreeMap<String, String>,
    host: impl Fn(&str) -> String,
) -> std::collections::BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| (k.clone(), crate::config::substitute_hosts(v, &host)))
        .collect()
}

/// Where and how services run.
pub trait Runtime: Send + Sync {
    /// What the runtime keeps of a started service.
    type Handle: Send + Sync + 'static;

    /// The runtime's name, for messages.
    fn name(&self) -> &'static str;

    /// The address under which the service `name` is reached by the others
    /// (what `${host:NAME}` in `env` becomes): by default its name, as on a
    /// container network or through a Kubernetes Service named after it.
    fn host_of(&self, name: &str) -> String {
        name.to_string()
    }

    /// Where the service's agent root is, as its app sees it: by default
    /// `live_update.root` (a container's path).
    fn root_of_app(&self, service: &Service) -> String {
        service.live_update.root.clone()
    }

    /// Starts the service's agent (and, where the files are already there,
    /// the app). `fresh` asks for a clean slate (a rebuild): nothing left from
    /// an earlier instance. Long work (image builds) reports to `to`, and so
    /// does what the runtime keeps running for the service (port-forwards).
    fn start(
        &self,
        service: &Service,
        fresh: bool,
        to: &Reporter,
    ) -> impl Future<Output = Result<Instance<Self::Handle>, RuntimeError>> + Send;

    /// Stops everything the runtime started for the service.
    fn stop(
        &self,
        service: &Service,
        instance: Instance<Self::Handle>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Lets go of an instance that a fresh start of the same service is
    /// about to replace (a rebuild, a retry after a failure). By default it
    /// is stopped; a runtime that replaces in place (kube: applied again, a
    /// rolling update) keeps what runs.
    fn retire(
        &self,
        service: &Service,
        instance: Instance<Self::Handle>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.stop(service, instance)
    }

    /// Removes what the runtime created for the whole run (after every
    /// service stopped).
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
