//! Why a runtime could not do what was asked, and whether trying again can
//! help.

use crate::docker::EngineError;
use crate::docker::image::ImageError;
use crate::kube::ClusterError;
use crate::kube::apply::ApplyError;
use crate::kube::render::RenderError;

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
    /// No statically linked agent (containers may have no libc).
    #[error(
        "cannot find a statically linked lks-agent for containers (looked in {looked}); build it with \
         `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p lks-agent --target x86_64-unknown-linux-gnu` \
         or set LKS_AGENT_BIN to one"
    )]
    StaticAgentNotFound {
        /// Where lks looked.
        looked: String,
    },
    /// The local agent did not say where it listens.
    #[error("{service} did not start: {reason}")]
    AgentFailed {
        /// The service.
        service: String,
        /// What happened.
        reason: String,
    },
    /// A port the service's app is to listen on is taken already: another
    /// app would answer for it.
    #[error("{service} did not start: {taken}; stop that process, or give {service} another port")]
    PortTaken {
        /// The service.
        service: String,
        /// The port, and who holds it.
        taken: crate::ports::Taken,
    },
    /// The service's image, container or objects could not be had.
    #[error("{service} did not start")]
    Start {
        /// The service.
        service: String,
        /// Why.
        #[source]
        cause: Box<StartError>,
    },
    /// The service cannot run on this runtime as it is written: starting it
    /// again will not help until its definition changes.
    #[error("{service}: {reason}")]
    Misconfigured {
        /// The service.
        service: String,
        /// What is missing or wrong, and what to do.
        reason: String,
    },
    /// Not everything the runtime made for the service could be removed.
    #[error("{service}: {reason}")]
    NotRemoved {
        /// The service.
        service: String,
        /// What is left, and why.
        reason: String,
    },
    /// An I/O error preparing the service.
    #[error("{service}: {context}: {cause}{}", open_files_hint(cause))]
    Io {
        /// The service.
        service: String,
        /// What lks was doing.
        context: String,
        /// The error.
        cause: std::io::Error,
    },
}

/// What to do when lks ran out of file descriptors.
fn open_files_hint(cause: &std::io::Error) -> String {
    if cause.raw_os_error() != Some(rustix::io::Errno::MFILE.raw_os_error()) {
        return String::new();
    }
    match crate::nofile::soft() {
        Some(n) => format!(
            " (lks reached its limit of {n} open files: raise the hard limit, e.g. `ulimit -Hn 65536` \
             as root or `LimitNOFILE=` in systemd, and start lks up again)"
        ),
        None => String::new(),
    }
}

impl RuntimeError {
    /// Refuses to start `service` when one of `ports` is taken already.
    pub fn check_ports(
        service: &crate::config::Service,
        ports: &[u16],
    ) -> Result<(), RuntimeError> {
        match crate::ports::first_taken(ports) {
            None => Ok(()),
            Some(taken) => Err(RuntimeError::PortTaken {
                service: service.name.clone(),
                taken,
            }),
        }
    }

    /// Whether starting the service again can help without lks.yaml or the
    /// machine changing first. A start that failed on the service's own files
    /// (its Dockerfile, its manifests, its image) or on the engine or the
    /// cluster is worth retrying: every start reads them afresh, so an edit,
    /// a namespace created or a permission granted meanwhile is picked up.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            RuntimeError::Misconfigured { .. }
                | RuntimeError::AgentNotFound { .. }
                | RuntimeError::StaticAgentNotFound { .. }
        )
    }

    /// The whole message, with its causes (what the console shows).
    pub fn explain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            // Some messages already end with their cause.
            let said = c.to_string();
            if !out.ends_with(&said) {
                out.push_str(": ");
                out.push_str(&said);
            }
            cause = c.source();
        }
        out
    }
}

/// Why the image, the container or the objects of a service could not be
/// had: the docker and kube runtimes' own failures, typed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its image could not be built, pushed or pulled.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Its manifests could not be read or rendered.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// An object could not be applied, deleted or rolled out.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The API server refused or cannot be reached.
    #[error("{doing}: {cause}")]
    Cluster {
        /// What lks was doing.
        doing: String,
        /// Why.
        cause: ClusterError,
    },
    /// The engine did not start the container.
    #[error("starting the container {name}: {cause}{}", ports_hint(ports))]
    ContainerNotStarted {
        /// The container.
        name: String,
        /// The engine's answer.
        cause: bollard::errors::Error,
        /// The ports it publishes (one may be taken).
        ports: Vec<u16>,
    },
    /// The container stopped before its agent's port could be read.
    #[error(
        "the container {name} exited at once or publishes no agent port; see `docker logs {name}`"
    )]
    Exited {
        /// The container.
        name: String,
    },
    /// Neither the image nor the service says what to run.
    #[error(
        "{image} has neither ENTRYPOINT nor CMD, and the service has neither `entrypoint` nor \
         `command`: nothing to run"
    )]
    NothingToRun {
        /// The image.
        image: String,
    },
    /// `--debug`, and no debugger is known for what the container runs.
    #[error("{0}")]
    CannotDebug(String),
    /// No manifest has a workload with pods for the agent or the ports.
    #[error("{service}: no workload with pods among its manifests")]
    NoWorkload {
        /// The service.
        service: String,
    },
    /// The workload selects no pods.
    #[error("{0} has no pod selector")]
    NoSelector(String),
}

fn ports_hint(ports: &[u16]) -> String {
    if ports.is_empty() {
        String::new()
    } else {
        format!(" (are ports {ports:?} free on 127.0.0.1?)")
    }
}

impl StartError {
    /// The error of `service`'s start.
    pub fn of(self, service: &crate::config::Service) -> RuntimeError {
        RuntimeError::Start {
            service: service.name.clone(),
            cause: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "no space left on device".into(),
        }
    }

    #[test]
    fn a_failed_start_says_the_service_and_each_cause_once() {
        let e = RuntimeError::Start {
            service: "web".into(),
            cause: Box::new(StartError::Image(ImageError::Engine(EngineError::Api {
                doing: "inspecting image r/web:latest".into(),
                cause: refused(),
            }))),
        };
        let said = e.explain();
        assert!(
            said.starts_with("web did not start: inspecting image r/web:latest: "),
            "{said}"
        );
        assert_eq!(said.matches("no space left on device").count(), 1, "{said}");
        assert!(e.is_retryable(), "an engine failure may pass");
    }

    #[test]
    fn a_port_taken_is_hinted_with_the_ports() {
        let e = StartError::ContainerNotStarted {
            name: "lks-1-web".into(),
            cause: refused(),
            ports: vec![8080],
        }
        .to_string();
        assert!(e.ends_with("(are ports [8080] free on 127.0.0.1?)"), "{e}");
    }

    #[test]
    fn only_what_lks_yaml_or_the_machine_must_change_is_not_retried() {
        let misconfigured = RuntimeError::Misconfigured {
            service: "web".into(),
            reason: "no command".into(),
        };
        assert!(!misconfigured.is_retryable());
        assert!(
            !RuntimeError::AgentNotFound {
                looked: "target/debug".into()
            }
            .is_retryable()
        );
        let no_workload = RuntimeError::Start {
            service: "web".into(),
            cause: Box::new(StartError::NoWorkload {
                service: "web".into(),
            }),
        };
        assert!(
            no_workload.is_retryable(),
            "its manifests are read again at the next start"
        );
    }
}
