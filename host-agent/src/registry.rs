//! `lks registry start|stop|status`: the local image registry, run as a
//! container named after its port, with its data in a named volume so
//! images survive a stop. A registry named in `lks.yaml` that is not on this
//! machine is used as it is, never started.
//!
//! No image can be pulled on machines without Docker Hub: then an image
//! built offline (`images/registry/build.sh` makes `lks/registry:2` from
//! Debian's docker-registry) is used when present.

use crate::docker::{self, EngineError, LABEL_REGISTRY, is_not_found};
use crate::events::Progress;
use anyhow::bail;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where the registry listens when `lks.yaml` names none.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:5000";
/// Images tried, in order, when none is given: upstream's, then the one
/// `images/registry/build.sh` builds offline.
const IMAGES: &[&str] = &["registry:2", "lks/registry:2"];

/// A registry address and, when it is on this machine, its port.
#[derive(Debug, Clone)]
pub struct Registry {
    /// `HOST:PORT`, as image names use it.
    pub address: String,
    /// The port, when the host is this machine (lks may run it).
    pub local_port: Option<u16>,
}

/// Why the registry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Its address has a port that is not one.
    #[error("registry {address:?}: bad port {port:?}")]
    BadPort {
        /// The address.
        address: String,
        /// The port as written.
        port: String,
    },
    /// It does not answer and is not lks's to start.
    #[error(
        "the registry {0} does not answer, and it is not on this machine, so lks cannot start it"
    )]
    Remote(String),
    /// The engine failed or refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No image to run it from.
    #[error(
        "no registry image: {image} cannot be pulled ({why}) and no lks/registry:2 is built.\n  \
         Without Docker Hub, build one offline from Debian's docker-registry: `images/registry/build.sh` \
         (in the lks repository), or pass --image with one you have."
    )]
    NoImage {
        /// The image tried.
        image: String,
        /// Why it could not be pulled.
        why: String,
    },
    /// Its container runs but it does not answer.
    #[error(
        "the registry container {container} runs but http://{address}/v2/ does not answer after 20 s; see `docker logs {container}`"
    )]
    Silent {
        /// The container.
        container: String,
        /// The registry's address.
        address: String,
    },
}

impl Registry {
    /// The registry of `ws` (`registry:` in `lks.yaml`), else the default
    /// ([`DEFAULT_ADDRESS`]).
    pub fn of(ws: Option<&crate::config::Workspace>) -> Result<Registry, RegistryError> {
        Registry::parse(
            ws.and_then(|w| w.registry.as_deref())
                .unwrap_or(DEFAULT_ADDRESS),
        )
    }

    /// Parses `HOST:PORT` (or `HOST`, port 5000).
    pub fn parse(address: &str) -> Result<Registry, RegistryError> {
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| RegistryError::BadPort {
                    address: address.to_string(),
                    port: p.to_string(),
                })?,
            ),
            None => (address, 5000),
        };
        let local = matches!(host, "127.0.0.1" | "localhost");
        Ok(Registry {
            address: format!("{host}:{port}"),
            local_port: local.then_some(port),
        })
    }

    /// How a kind cluster names this registry: `localhost:PORT` for a local
    /// one (each node's containerd maps it to the registry container), else
    /// its own address.
    pub fn in_cluster(&self) -> String {
        match self.local_port {
            Some(port) => format!("localhost:{port}"),
            None => self.address.clone(),
        }
    }

    /// The container that runs this registry.
    pub fn container(&self) -> Option<String> {
        self.local_port.map(|p| format!("lks-registry-{p}"))
    }

    fn volume(&self) -> Option<String> {
        self.local_port.map(|p| format!("lks-registry-{p}-data"))
    }

    /// Whether the registry answers its API (`GET /v2/`).
    pub async fn answers(&self) -> bool {
        matches!(
            crate::readiness::http_get(&format!("http://{}/v2/", self.address)).await,
            Ok((200, _))
        )
    }
}

/// The `lks registry` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RegistryCommand {
    /// Start the local registry (a container; reused when it exists).
    Start {
        /// The registry image (default: registry:2, else lks/registry:2
        /// built offline by images/registry/build.sh).
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
    },
    /// Stop and remove the registry's container (its images are kept).
    Stop {
        /// Also delete the volume holding its images.
        #[arg(long)]
        purge: bool,
    },
    /// Whether the registry runs, where, and what it holds.
    Status,
}

/// Runs one `lks registry` subcommand for `registry`.
pub async fn command(registry: &Registry, cmd: RegistryCommand) -> anyhow::Result<()> {
    match cmd {
        RegistryCommand::Start { image } => {
            let docker = docker::connect().await?;
            ensure_running(&docker, registry, image.as_deref(), &|l: &str| {
                println!("{l}")
            })
            .await?;
            println!("registry ready at {}", registry.address);
            Ok(())
        }
        RegistryCommand::Stop { purge } => {
            let docker = docker::connect().await?;
            stop(&docker, registry, purge).await
        }
        RegistryCommand::Status => status(registry).await,
    }
}

/// Makes sure the registry answers: starts (or creates) its container when it
/// is a local one, else fails saying it is unreachable.
pub async fn ensure_running(
    docker: &Docker,
    registry: &Registry,
    image: Option<&str>,
    progress: &dyn Progress,
) -> Result<(), RegistryError> {
    if registry.answers().await {
        return Ok(());
    }
    let (Some(port), Some(name), Some(volume)) =
        (registry.local_port, registry.container(), registry.volume())
    else {
        return Err(RegistryError::Remote(registry.address.clone()));
    };
    match docker
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(c) => {
            if c.state.and_then(|s| s.running) != Some(true) {
                progress.say(&format!("starting the registry container {name}"));
                docker
                    .start_container(
                        &name,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                    .map_err(EngineError::api(format!("starting {name}")))?;
            }
        }
        Err(e) if is_not_found(&e) => {
            let image = choose_image(docker, image, progress).await?;
            progress.say(&format!(
                "creating the registry container {name} from {image} on {}",
                registry.address
            ));
            let labels = HashMap::from([(LABEL_REGISTRY.to_string(), registry.address.clone())]);
            docker
                .create_volume(VolumeCreateOptions {
                    name: Some(volume.clone()),
                    labels: Some(labels.clone()),
                    ..Default::default()
                })
                .await
                .map_err(EngineError::api(format!("creating the volume {volume}")))?;
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                labels: Some(labels),
                exposed_ports: Some(HashMap::from([("5000/tcp".to_string(), HashMap::new())])),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{volume}:/var/lib/registry")]),
                    port_bindings: Some(HashMap::from([(
                        "5000/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some(port.to_string()),
                        }]),
                    )])),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                        maximum_retry_count: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    body,
                )
                .await;
            match created {
                Ok(_) => docker
                    .start_container(
                        &name,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                    .map_err(EngineError::api(format!(
                        "starting {name} (is port {port} taken by something else?)"
                    )))?,
                // Another lks created it meanwhile: wait for it below.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) => {}
                Err(e) => {
                    return Err(
                        EngineError::api(format!("creating the container {name}"))(e).into(),
                    );
                }
            }
        }
        Err(e) => return Err(EngineError::api(format!("inspecting {name}"))(e).into()),
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !registry.answers().await {
        if Instant::now() > deadline {
            return Err(RegistryError::Silent {
                container: name,
                address: registry.address.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn choose_image(
    docker: &Docker,
    wanted: Option<&str>,
    progress: &dyn Progress,
) -> Result<String, RegistryError> {
    let candidates: Vec<&str> = match wanted {
        Some(w) => vec![w],
        None => IMAGES.to_vec(),
    };
    for c in &candidates {
        if docker::image::local_id(docker, c).await?.is_some() {
            return Ok(c.to_string());
        }
    }
    let first = candidates[0];
    let r = docker::reference::Reference::parse(first);
    let (repo, tag) = (r.repository, r.tag_or_latest());
    progress.say(&format!("pulling {first}"));
    match docker::image::pull(docker, repo, tag, progress).await {
        Ok(true) => Ok(first.to_string()),
        Ok(false) => Err(RegistryError::NoImage {
            image: first.to_string(),
            why: "it does not exist".into(),
        }),
        Err(e) => Err(RegistryError::NoImage {
            image: first.to_string(),
            why: e.to_string(),
        }),
    }
}

async fn stop(docker: &Docker, registry: &Registry, purge: bool) -> anyhow::Result<()> {
    let (Some(name), Some(volume)) = (registry.container(), registry.volume()) else {
        bail!(
            "the registry {} is not on this machine; lks did not start it and will not stop it",
            registry.address
        );
    };
    let stopped = match docker
        .stop_container(
            &name,
            Some(StopContainerOptions {
                t: Some(5),
                signal: None,
            }),
        )
        .await
    {
        Ok(()) => true,
        Err(e) if is_not_found(&e) => false,
        Err(e) => return Err(EngineError::api(format!("stopping {name}"))(e).into()),
    };
    if stopped {
        docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(EngineError::api(format!("removing {name}")))?;
        println!("stopped the registry {name}");
    } else {
        println!("no registry container {name}: nothing to stop");
    }
    if purge {
        match docker
            .remove_volume(
                &volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(()) => println!("deleted its images (the volume {volume})"),
            Err(e) if is_not_found(&e) => println!("no volume {volume}: no images to delete"),
            Err(e) => {
                return Err(EngineError::api(format!("removing the volume {volume}"))(e).into());
            }
        }
    } else if stopped {
        println!("its images stay in the volume {volume} (--purge deletes them)");
    }
    Ok(())
}

async fn status(registry: &Registry) -> anyhow::Result<()> {
    if registry.answers().await {
        let catalog =
            crate::readiness::http_get(&format!("http://{}/v2/_catalog", registry.address)).await;
        let repos = match catalog {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["repositories"].as_array().map(|a| a.len()))
                .map(|n| format!(", {n} repositories"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        println!("running: http://{}/v2/ answers{repos}", registry.address);
        return Ok(());
    }
    let Some(name) = registry.container() else {
        bail!(
            "not reachable: nothing answers at http://{}/v2/",
            registry.address
        );
    };
    // Say what is wrong: no engine, a stopped container, or none at all.
    let docker = docker::connect().await?;
    let state = match docker
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(c) => match c.state.and_then(|s| s.status) {
            Some(status) => format!("its container {name} is {status}"),
            None => format!("its container {name} exists"),
        },
        Err(e) if is_not_found(&e) => format!("there is no container {name}"),
        Err(e) => return Err(EngineError::api(format!("inspecting {name}"))(e).into()),
    };
    bail!(
        "not running: nothing answers at http://{}/v2/ and {state}; start it with `lks registry start`",
        registry.address
    )
}
