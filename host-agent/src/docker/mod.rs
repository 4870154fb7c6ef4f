//! The Docker engine, through bollard: connecting with a clear error when it
//! is missing, the labels that mark what lks created, and the image work
//! (build contexts, builds, pushes, pulls) the docker runtime and the
//! registry command share.

pub mod context;
pub mod image;
pub mod reference;

use bollard::Docker;
use std::collections::HashMap;

/// Label on everything lks creates (containers, networks, volumes).
pub const LABEL_MANAGED: &str = "dev.lks.managed";
/// Label: the workspace file's directory a resource belongs to.
pub const LABEL_WORKSPACE: &str = "dev.lks.workspace";
/// Label: the `lks up` run a resource belongs to.
pub const LABEL_RUN: &str = "dev.lks.run";
/// Label: the service a container runs.
pub const LABEL_SERVICE: &str = "dev.lks.service";
/// Label: the local registry's container (not removed by `lks down`).
pub const LABEL_REGISTRY: &str = "dev.lks.registry";

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No engine answers.
    #[error(
        "cannot reach the Docker engine ({why}).\n  Is it running? Start it with `sudo systemctl start docker` \
         (or `sudo dockerd &` where there is no systemd); install it with `sudo apt-get install docker.io`. \
         Set DOCKER_HOST if it listens elsewhere."
    )]
    Unreachable {
        /// What the client said.
        why: String,
    },
    /// Any other engine error, with what lks was doing.
    #[error("{doing}: {cause}")]
    Api {
        /// What lks was doing.
        doing: String,
        /// The engine's answer.
        cause: bollard::errors::Error,
    },
    /// A build, push or pull reported an error in its stream.
    #[error("{doing}: {message}")]
    Failed {
        /// What lks was doing.
        doing: String,
        /// The engine's message.
        message: String,
    },
}

impl EngineError {
    /// Wraps an API error with what lks was doing.
    pub fn api(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
        let doing = doing.into();
        move |cause| EngineError::Api { doing, cause }
    }
}

/// Whether an engine error is "no such object" (HTTP 404).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Connects to the local engine (`DOCKER_HOST` or the default socket), checks
/// that it answers, and agrees on an API version with it.
pub async fn connect() -> Result<Docker, EngineError> {
    let unreachable = |e: bollard::errors::Error| {
        let mut why = e.to_string();
        if why.to_ascii_lowercase().contains("permission denied") {
            why.push_str("; to use Docker without root, join the docker group: `sudo usermod -aG docker $USER`, then log in again");
        }
        EngineError::Unreachable { why }
    };
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    docker.negotiate_version().await.map_err(unreachable)
}

/// The labels of a resource lks creates for `workspace`.
pub fn labels(workspace: &str, run: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_WORKSPACE.to_string(), workspace.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
    ])
}
