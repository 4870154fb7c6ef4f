//! The `docker` runtime: each service is a container on one network per
//! `lks up`, reachable by the other services under its own name.
//!
//! - Image: a `--local` service (or a rebuild) is built from the working tree
//!   (skipped when its content digest is built already) and pushed as
//!   `REGISTRY/NAME:dev-DIGEST` and `:latest`. Any other service runs
//!   `REGISTRY/NAME:latest`, pulled; built only when the registry lacks it.
//! - Agent: the static `lks-agent` is bind-mounted read-only at
//!   `/.lks/lks-agent` and wraps the image's own ENTRYPOINT + CMD
//!   (`lks-agent supervise -- ...`), so images without a shell or `tar` are
//!   live updated too. Its port is published on 127.0.0.1 only; the token
//!   travels in the environment.
//! - Ports: a service's `ports` are not published by Docker but forwarded
//!   by lks from 127.0.0.1 through the agent (`forward.rs`), which reaches
//!   the app's own loopback: an app listening on 127.0.0.1 in its container
//!   is reachable, as under `kubectl port-forward`. They stay open while the
//!   service is rebuilt.
//! - Live services start their app after the first sync (which compares
//!   with the files already in the image); the others start it at once.

use super::{Instance, Live, Mode, Runtime, RuntimeError, StartError, Tunnel, expand_env};
use crate::config::Service;
use crate::docker::{
    self, EngineError, LABEL_MANAGED, LABEL_RUN, LABEL_SERVICE, LABEL_WORKSPACE, image,
};
use crate::events::{Progress, Reporter};
use crate::forward::Forwards;
use crate::registry::Registry;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The agent's port inside every container.
pub const AGENT_PORT: u16 = 7690;
/// Where the agent binary is mounted in every container.
pub const AGENT_PATH: &str = "/.lks/lks-agent";

/// The docker runtime of one `lks up`.
pub struct DockerRuntime {
    docker: Docker,
    registry: Registry,
    token: String,
    agent: PathBuf,
    /// Services built from the working tree and live updated.
    local: BTreeSet<String>,
    labels: HashMap<String, String>,
    run: String,
    network: String,
    /// Each service's forwarded ports, kept across its new containers.
    forwards: Mutex<BTreeMap<String, Forwards>>,
}

impl DockerRuntime {
    /// Connects to the engine, makes sure the registry answers (starting the
    /// local one if needed) and creates this run's network.
    pub async fn new(
        workspace: &Path,
        registry: Registry,
        token: &str,
        local: BTreeSet<String>,
        progress: &dyn Progress,
    ) -> anyhow::Result<DockerRuntime> {
        let agent = super::agent_binary::find(super::agent_binary::Linkage::Static)?;
        let docker = docker::connect().await?;
        crate::registry::ensure_running(&docker, &registry, None, progress).await?;
        warn_leftovers(&docker, workspace, progress).await;
        let run = hex::encode(rand::random::<[u8; 4]>());
        let labels = docker::labels(&workspace.display().to_string(), &run);
        let network = format!("lks-{run}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(EngineError::api(format!("creating the network {network}")))?;
        Ok(DockerRuntime {
            docker,
            registry,
            token: token.to_string(),
            agent,
            local,
            labels,
            run,
            network,
            forwards: Mutex::default(),
        })
    }

    fn container_name(&self, service: &str) -> String {
        format!("lks-{}-{service}", self.run)
    }

    async fn remove(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if docker::is_not_found(&e) => Ok(()),
            Err(e) => Err(EngineError::Api {
                doing: format!("removing the container {name}"),
                cause: e,
            }),
        }
    }

    async fn start_container(
        &self,
        service: &Service,
        live: bool,
        fresh: bool,
        progress: &dyn Progress,
    ) -> Result<Instance<String>, StartError> {
        let reference =
            image::for_service(&self.docker, &self.registry, service, live, fresh, progress)
                .await?;
        let inspect = self
            .docker
            .inspect_image(&reference)
            .await
            .map_err(EngineError::api(format!("inspecting {reference}")))?;
        let config = inspect.config.unwrap_or_default();
        // `entrypoint:` replaces the image's ENTRYPOINT and CMD, as
        // `docker run --entrypoint` drops the CMD.
        let mut argv = if service.entrypoint.is_empty() {
            lks_proto::launch::image_argv(
                &config.entrypoint.clone().unwrap_or_default(),
                &config.cmd.clone().unwrap_or_default(),
                None,
            )
        } else {
            service.entrypoint.clone()
        };
        if argv.is_empty() {
            argv = service.command.clone();
        }
        let (argv, debugger) =
            crate::debug::under_debugger(service, argv).map_err(StartError::CannotDebug)?;
        // Said now that the container's command is known.
        if let Some(how) = crate::debug::how_to_attach_when_chosen(service, debugger) {
            progress.say(&how);
        }
        if argv.is_empty() {
            return Err(StartError::NothingToRun { image: reference });
        }
        let root = service.live_update.root.clone();
        let cmd = lks_proto::launch::Supervise {
            root: root.clone(),
            listen: format!("0.0.0.0:{AGENT_PORT}"),
            grace_period: Some(3),
            // The app runs where the image says (WORKDIR), not in the root.
            workdir: Some(".".into()),
            start: if live {
                lks_proto::launch::Start::OnRestart
            } else {
                lks_proto::launch::Start::Now
            },
            exit_with_stdin: false,
            watch_root: true,
            app: argv,
        }
        .args();

        let mut env: Vec<String> = expand_env(&service.env, |dep| dep.to_string())
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("{}={}", lks_proto::launch::TOKEN_ENV, self.token));
        let mut labels = self.labels.clone();
        labels.insert(LABEL_SERVICE.into(), service.name.clone());
        let loopback = |port: Option<u16>| {
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.map(|p| p.to_string()).unwrap_or_default()),
            }])
        };
        // Only the agent's port: the service's are forwarded through it.
        let ports = HashMap::from([(format!("{AGENT_PORT}/tcp"), loopback(None))]);
        let name = self.container_name(&service.name);
        self.remove(&name).await?;
        let body = ContainerCreateBody {
            image: Some(reference.clone()),
            hostname: Some(service.name.clone()),
            entrypoint: Some(vec![AGENT_PATH.into()]),
            cmd: Some(cmd),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(ports.keys().map(|k| (k.clone(), HashMap::new())).collect()),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:{AGENT_PATH}:ro", self.agent.display())]),
                port_bindings: Some(ports),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![service.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(EngineError::api(format!("creating the container {name}")))?;
        if let Err(e) = self
            .docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            let _ = self.remove(&name).await;
            return Err(StartError::ContainerNotStarted {
                name,
                cause: e,
                ports: service.ports.clone(),
            });
        }
        let port = self.agent_port(&name).await?;
        let tunnel = Tunnel {
            dialer: crate::tunnel::Dialer::Tcp(format!("http://127.0.0.1:{port}")),
            token: self.token.clone(),
        };
        let dockerfile = service.build.dockerfile.clone();
        let mode = if live {
            // The image's files: the first batch makes them equal and starts
            // the app.
            Mode::Live(Live {
                seeded: true,
                first_batch: Some(vec![]),
                rebuild_on: vec![dockerfile],
            })
        } else {
            Mode::Watched
        };
        Ok(Instance {
            tunnel,
            mode,
            pid: None,
            location: format!("container {name}, image {reference}, root {root}"),
            app_pid: Default::default(),
            pods: None,
            handle: name,
        })
    }

    /// Forwards the service's ports to its container behind `tunnel` (from
    /// now on, when they are forwarded already).
    fn forward(&self, service: &Service, tunnel: &Tunnel, progress: &Reporter) {
        let ports = crate::debug::forwarded_ports(service);
        let to = progress.clone();
        let report: crate::forward::Report =
            std::sync::Arc::new(move |l| to.send(crate::events::Event::Warning(l)));
        let opener = crate::forward::through_agent(tunnel.clone(), report.clone());
        let mut forwards = self.forwards.lock().unwrap();
        crate::forward::to_service(&mut forwards, &service.name, opener, &ports, report);
    }

    /// Stops and removes a container.
    async fn stop_container(&self, service: &Service, name: &str) -> Result<(), RuntimeError> {
        // The agent (PID 1) passes SIGTERM to the app and waits for it.
        let _ = self
            .docker
            .stop_container(
                name,
                Some(StopContainerOptions {
                    t: Some(5),
                    signal: None,
                }),
            )
            .await;
        self.remove(name)
            .await
            .map_err(|e| RuntimeError::NotRemoved {
                service: service.name.clone(),
                reason: e.to_string(),
            })
    }

    async fn agent_port(&self, name: &str) -> Result<u16, StartError> {
        let c = self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(EngineError::api(format!("inspecting {name}")))?;
        let port = c
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(&format!("{AGENT_PORT}/tcp")))
            .flatten()
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok());
        port.ok_or_else(|| StartError::Exited {
            name: name.to_string(),
        })
    }
}

impl Runtime for DockerRuntime {
    /// The container's name.
    type Handle = String;

    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(
        &self,
        service: &Service,
        fresh: bool,
        progress: &Reporter,
    ) -> Result<Instance<Self::Handle>, RuntimeError> {
        // Forwarded from 127.0.0.1: a process holding one is named (those
        // lks forwards already, from an earlier container, are its own).
        if !self.forwards.lock().unwrap().contains_key(&service.name) {
            RuntimeError::check_ports(service, &crate::debug::forwarded_ports(service))?;
        }
        let live = self.local.contains(&service.name);
        let instance = self
            .start_container(service, live, fresh, progress)
            .await
            .map_err(|e| e.of(service))?;
        self.forward(service, &instance.tunnel, progress);
        Ok(instance)
    }

    async fn stop(
        &self,
        service: &Service,
        instance: Instance<Self::Handle>,
    ) -> Result<(), RuntimeError> {
        self.forwards.lock().unwrap().remove(&service.name);
        self.stop_container(service, &instance.handle).await
    }

    /// The container goes; the service's ports stay open for the next one.
    async fn retire(
        &self,
        service: &Service,
        instance: Instance<Self::Handle>,
    ) -> Result<(), RuntimeError> {
        self.stop_container(service, &instance.handle).await
    }

    async fn shutdown(&self) {
        self.forwards.lock().unwrap().clear();
        // Whatever is left of this run: a container created while `lks up`
        // was being stopped is not in any slot, but it carries the run label.
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUN}={}", self.run)],
        )]);
        if let Ok(left) = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        {
            for c in left {
                if let Some(id) = c.id {
                    let _ = self.remove(&id).await;
                }
            }
        }
        // The console has stopped: what is left goes to stderr.
        if let Err(e) = self.docker.remove_network(&self.network).await
            && !docker::is_not_found(&e)
        {
            crate::console::say(&format!("removing the network {}: {e}", self.network));
        }
    }
}

/// Says so when an earlier `lks up` of this workspace left containers (it was
/// killed): they may hold the ports this run needs.
async fn warn_leftovers(docker: &Docker, workspace: &Path, progress: &dyn Progress) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_WORKSPACE}={}", workspace.display()),
        ],
    )]);
    let Ok(left) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .filter_map(|c| c.names.as_ref()?.first().cloned())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        progress.say(&format!(
            "warning: {} container(s) of an earlier lks up of this workspace are still there ({}); \
             if that run is over, `lks down` removes them",
            left.len(),
            names.join(", ")
        ));
    }
}
