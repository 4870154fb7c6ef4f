//! The `kube` runtime: each service's `k8s:` manifests applied to the
//! cluster of the current kubeconfig context (server-side apply, field
//! manager `lks`), its image built and pushed to the registry the cluster
//! pulls from, and for a live service the agent injected into the pod
//! template that opts in. The tunnel to the agent is the pod port-forward,
//! opened afresh on every connection to whichever pod runs now, so a
//! restarted or replaced pod is followed and resynced; the service's declared
//! ports are forwarded from 127.0.0.1 the same way.

use super::{Instance, Runtime, RuntimeError};
use crate::config::Service;
use crate::docker::{self, image};
use crate::kube::apply::{self, Applied};
use crate::kube::portforward::{self, Target};
use crate::kube::render::{self, RenderOptions};
use crate::registry::Registry;
use anyhow::{Context, bail};
use bollard::Docker;
use lks_proto::inject::{self, ImageConfig};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The kube runtime of one `lks up`.
pub struct KubeRuntime {
    client: kube::Client,
    docker: Docker,
    registry: Registry,
    /// How the cluster names the registry (`localhost:PORT` on kind).
    cluster_registry: String,
    namespace: String,
    token: String,
    local: BTreeSet<String>,
    workspace: String,
    /// The agent image as the cluster pulls it (when any service is live).
    agent_image: String,
    /// What was applied, per service.
    applied: Mutex<HashMap<String, Vec<Applied>>>,
    /// Namespaces that have the token Secret.
    secrets: tokio::sync::Mutex<BTreeSet<String>>,
}

impl KubeRuntime {
    /// Connects to the cluster of the current context and the Docker engine,
    /// makes sure the registry answers, and pushes the agent image when a
    /// service is live.
    pub async fn new(
        workspace: &Path,
        registry: Registry,
        token: &str,
        local: BTreeSet<String>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> anyhow::Result<KubeRuntime> {
        // kube's error repeats its causes in its own message: show it once.
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "no Kubernetes cluster to talk to ({e}); create the local one with `lks cluster create`"
            )
        })?;
        let namespace = client.default_namespace().to_string();
        let docker = docker::connect().await?;
        crate::registry::ensure_running(&docker, &registry, None, progress).await?;
        let cluster_registry = registry.in_cluster();
        let agent_image = if local.is_empty() {
            String::new()
        } else {
            let tags = crate::agent_image::build(&docker, &registry, true, progress).await?;
            crate::agent_image::in_cluster(&registry, &tags[0])
        };
        Ok(KubeRuntime {
            client,
            docker,
            cluster_registry,
            registry,
            namespace,
            token: token.to_string(),
            local,
            workspace: render::workspace_label(workspace),
            agent_image,
            applied: Mutex::new(HashMap::new()),
            secrets: tokio::sync::Mutex::new(BTreeSet::new()),
        })
    }

    /// The token Secret in `namespace`, applied once per run.
    async fn ensure_secret(&self, namespace: &str) -> anyhow::Result<()> {
        let mut done = self.secrets.lock().await;
        if done.contains(namespace) {
            return Ok(());
        }
        let secret = token_secret(namespace, &self.token, &self.workspace);
        apply::apply(&self.client, namespace, &secret).await?;
        done.insert(namespace.to_string());
        Ok(())
    }

    async fn start_service(
        &self,
        service: &Service,
        fresh: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> anyhow::Result<Instance> {
        if service.k8s.is_empty() {
            bail!(
                "{} has no `k8s:` manifests; the kube runtime applies them (list its Deployment and Service files)",
                service.name
            );
        }
        let live = self.local.contains(&service.name);
        let host_ref =
            image::for_service(&self.docker, &self.registry, service, live, fresh, progress)
                .await?;
        let cluster_ref = match host_ref.strip_prefix(&self.registry.address) {
            Some(rest) => format!("{}{rest}", self.cluster_registry),
            None => host_ref.clone(),
        };
        let own = render::engine_image_config(Some(&self.docker), &host_ref).await;
        let image_config = |image: &str| -> Option<ImageConfig> {
            (image == cluster_ref).then(|| own.clone()).flatten()
        };
        let objects = render::render(
            service,
            &RenderOptions {
                image: Some(&cluster_ref),
                live,
                agent_image: &self.agent_image,
                workspace: &self.workspace,
                image_config: &image_config,
            },
        )?;
        let agent_workload = objects.iter().find(|o| injected(o)).cloned();
        if live {
            let ns = agent_workload
                .as_ref()
                .and_then(|o| o["metadata"]["namespace"].as_str())
                .unwrap_or(&self.namespace)
                .to_string();
            self.ensure_secret(&ns).await?;
        }
        let mut applied = Vec::with_capacity(objects.len());
        for o in &objects {
            let a = apply::apply(&self.client, &self.namespace, o).await?;
            progress(&format!("applied {}", a.describe()));
            applied.push(a);
        }
        self.applied
            .lock()
            .unwrap()
            .insert(service.name.clone(), applied.clone());
        let timeout = service
            .readiness
            .as_ref()
            .map(|r| r.timeout)
            .unwrap_or(Duration::from_secs(300));
        for a in &applied {
            apply::wait_rollout(&self.client, a, timeout, progress).await?;
        }
        // The workload whose pods carry the agent (or, for a service that is
        // not live, the first with pods: its ports are forwarded).
        let workload = agent_workload.or_else(|| {
            objects
                .iter()
                .find(|o| apply::pod_selector(o).is_some() && inject::pod_template(o).is_some())
                .cloned()
        });
        let Some(workload) = workload else {
            bail!(
                "{}: no workload with pods among its manifests",
                service.name
            );
        };
        let selector = apply::pod_selector(&workload)
            .with_context(|| format!("{} has no pod selector", render::describe(&workload)))?;
        let target = Target {
            client: self.client.clone(),
            namespace: workload["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&self.namespace)
                .to_string(),
            selector,
        };
        let mut guards = Vec::new();
        for &port in &service.ports {
            let name = service.name.clone();
            let report: Arc<dyn Fn(String) + Send + Sync> =
                Arc::new(move |l| eprintln!("lks: {name}: {l}"));
            guards.push(tokio::spawn(portforward::serve_port(
                target.clone(),
                port,
                report,
            )));
        }
        let root = injected_root(&workload).unwrap_or_else(|| service.live_update.root.clone());
        Ok(Instance {
            dialer: target.dialer(inject_port()),
            token: self.token.clone(),
            pid: None,
            start_with_first_batch: false,
            build_steps: vec![],
            location: format!(
                "{}, image {cluster_ref}{}",
                render::describe(&workload),
                if live {
                    format!(", root {root}")
                } else {
                    String::new()
                }
            ),
            child: None,
            app_pid: Default::default(),
            container: None,
            seeded: true,
            live,
            // The image, and what is applied: a changed manifest is applied anew.
            rebuild_on: std::iter::once(service.build.dockerfile.clone())
                .chain(service.k8s.iter().cloned())
                .collect(),
            has_agent: live,
            reconnectable: true,
            guards,
        })
    }
}

/// The agent's port in the pod.
fn inject_port() -> u16 {
    lks_proto::DEFAULT_PORT
}

/// Whether `o`'s pod template got the agent.
fn injected(o: &Value) -> bool {
    inject::pod_template(o)
        .is_some_and(|t| t["metadata"]["annotations"][inject::ANNOTATION_INJECTED].is_string())
}

/// The agent root the pod template asks for.
fn injected_root(o: &Value) -> Option<String> {
    let t = inject::pod_template(o)?;
    Some(
        t["metadata"]["annotations"][inject::ANNOTATION_ROOT]
            .as_str()
            .unwrap_or(inject::DEFAULT_ROOT)
            .to_string(),
    )
}

/// The Secret that hands the run's token to the agents in `namespace`.
pub fn token_secret(namespace: &str, token: &str, workspace: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": inject::TOKEN_SECRET,
            "namespace": namespace,
            "labels": {
                render::LABEL_MANAGED: "true",
                render::LABEL_WORKSPACE: workspace,
            },
        },
        "type": "Opaque",
        "stringData": { inject::TOKEN_KEY: token },
    })
}

impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        "kube"
    }

    async fn start(
        &self,
        service: &Service,
        fresh: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<Instance, RuntimeError> {
        self.start_service(service, fresh, progress)
            .await
            .map_err(|e| RuntimeError::failed(service, e))
    }

    async fn stop(&self, service: &Service, instance: Instance) -> Result<(), RuntimeError> {
        for g in &instance.guards {
            g.abort();
        }
        let applied = self.applied.lock().unwrap().remove(&service.name);
        for a in applied.unwrap_or_default().iter().rev() {
            if let Err(e) = apply::delete(&self.client, a).await {
                eprintln!("lks: {}: {e:#}", service.name);
            }
        }
        Ok(())
    }

    async fn shutdown(&self) {
        let namespaces: Vec<String> = self.secrets.lock().await.iter().cloned().collect();
        for ns in namespaces {
            let secret = token_secret(&ns, "", &self.workspace);
            if let Ok(a) = apply::apply(&self.client, &ns, &secret).await {
                let _ = apply::delete(&self.client, &a).await;
            }
        }
    }
}
