//! The `kube` runtime: each service's `k8s:` manifests applied to the chosen
//! cluster and namespace ([`Target`]: server-side apply, field manager
//! `lks`), its image built and pushed to the registry the cluster pulls from
//! (the cluster's KEP-1755 ConfigMap, else `lks.yaml`'s), and for a live
//! service the agent injected into the pod template that opts in.
//!
//! A service's pods are followed ([`Pods`]): the tunnel to the agent is a pod
//! port-forward opened afresh on every connection to the pod that runs now,
//! so a deleted pod, a restarted container, a rollout or a scale to 0 and
//! back are followed and resynced, and the service's declared ports are
//! forwarded from 127.0.0.1 the same way. A new start of a service (a
//! rebuild, a manifest edit, a retry) applies again, a rolling update;
//! objects are deleted only when the run ends, and then everything the run
//! applied is, also what was applied while its rollout was still going.

use super::{Instance, Live, Mode, Runtime, RuntimeError, StartError, Tunnel};
use crate::config::Service;
use crate::docker::{self, image};
use crate::events::{Event, Progress, Reporter};
use crate::kube::apply::{self, Applied};
use crate::kube::pods::Pods;
use crate::kube::portforward;
use crate::kube::render::{self, RenderOptions};
use crate::kube::target::{ClusterRegistry, Target};
use crate::registry::Registry;
use bollard::Docker;
use lks_k8s::inject::{self, ImageConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The kube runtime of one `lks up`.
pub struct KubeRuntime {
    target: Target,
    docker: Docker,
    registry: ClusterRegistry,
    /// The token for namespaces whose Secret lks makes now.
    token: String,
    local: BTreeSet<String>,
    workspace: String,
    /// The agent image as the cluster pulls it (when any service is live).
    agent_image: String,
    /// What this run applied, per service, as it was applied.
    applied: Mutex<BTreeMap<String, Vec<Applied>>>,
    /// The agents' token per namespace (its Secret applied, or found).
    secrets: tokio::sync::Mutex<BTreeMap<String, String>>,
    /// Each service's forwarded ports, kept across its new starts.
    forwards: Mutex<BTreeMap<String, crate::forward::Forwards>>,
}

impl KubeRuntime {
    /// Connects to the cluster and the Docker engine, creates the namespace
    /// if missing, makes sure the registry answers, and pushes the agent
    /// image when a service is live.
    pub async fn new(
        workspace: &Path,
        target: Target,
        registry: Registry,
        token: &str,
        local: BTreeSet<String>,
        progress: &dyn Progress,
    ) -> anyhow::Result<KubeRuntime> {
        progress.say(&format!("cluster: {}", target.describe()));
        let registry = target.registry(registry).await?;
        if registry.from != "lks.yaml" {
            progress.say(&format!(
                "registry from {}: push to {}, pods pull from {}",
                registry.from, registry.push.address, registry.pull
            ));
        }
        if target.ensure_namespace().await? {
            progress.say(&format!("created namespace {}", target.namespace));
        }
        let docker = docker::connect().await?;
        crate::registry::ensure_running(&docker, &registry.push, None, progress).await?;
        let agent_image = if local.is_empty() {
            String::new()
        } else {
            crate::agent_image::publish(&docker, &registry, progress).await?
        };
        Ok(KubeRuntime {
            target,
            docker,
            registry,
            token: token.to_string(),
            local,
            workspace: render::workspace_label(workspace),
            agent_image,
            applied: Mutex::new(BTreeMap::new()),
            secrets: tokio::sync::Mutex::new(BTreeMap::new()),
            forwards: Mutex::new(BTreeMap::new()),
        })
    }

    fn client(&self) -> &kube::Client {
        &self.target.client
    }

    /// The agents' token in `namespace`: the one its Secret holds when an
    /// earlier run of this workspace left it (pods that still run have it),
    /// else this run's, applied.
    async fn ensure_secret(&self, namespace: &str) -> Result<String, StartError> {
        let mut known = self.secrets.lock().await;
        if let Some(t) = known.get(namespace) {
            return Ok(t.clone());
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(self.client().clone(), namespace);
        let existing = api
            .get_opt(inject::TOKEN_SECRET)
            .await
            .map_err(|e| StartError::Cluster {
                doing: format!("reading Secret {namespace}/{}", inject::TOKEN_SECRET),
                cause: crate::kube::explain(e),
            })?
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(lks_k8s::labels::WORKSPACE))
                    == Some(&self.workspace)
            })
            .and_then(|s| s.data?.get(inject::TOKEN_KEY).cloned())
            .and_then(|b| String::from_utf8(b.0).ok())
            .filter(|t| !t.trim().is_empty());
        let token = existing.unwrap_or_else(|| self.token.clone());
        let secret = token_secret(namespace, &token, &self.workspace);
        let a = apply::apply(self.client(), namespace, &secret).await?;
        self.record("", a);
        known.insert(namespace.to_string(), token.clone());
        Ok(token)
    }

    /// Remembers what was applied for `service` ("" for the run's own), at
    /// once: a run stopped half-way deletes it too.
    fn record(&self, service: &str, a: Applied) {
        let mut applied = self.applied.lock().unwrap();
        let list = applied.entry(service.to_string()).or_default();
        list.retain(|b| !same_object(b, &a));
        list.push(a);
    }

    async fn start_service(
        &self,
        service: &Service,
        fresh: bool,
        progress: &Reporter,
    ) -> Result<Instance<()>, StartError> {
        let live = self.local.contains(&service.name);
        let host_ref = image::for_service(
            &self.docker,
            &self.registry.push,
            service,
            live,
            fresh,
            progress,
        )
        .await?;
        let cluster_ref = self.registry.pulled_as(&host_ref);
        let own = render::engine_image_config(Some(&self.docker), &host_ref).await;
        let image_config = |image: &str| -> Option<ImageConfig> {
            (image == cluster_ref).then(|| own.clone()).flatten()
        };
        let render::Rendered { objects, debugger } = render::render(
            service,
            &RenderOptions {
                image: Some(&cluster_ref),
                live,
                agent_image: &self.agent_image,
                workspace: &self.workspace,
                image_config: &image_config,
            },
        )?;
        // Said now that the container's command is known.
        if let Some(how) = crate::debug::how_to_attach_when_chosen(service, debugger) {
            progress.say(&how);
        }
        let agent_workload = objects.iter().find(|o| injected(o)).cloned();
        let namespace_of = |o: &Value| {
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&self.target.namespace)
                .to_string()
        };
        let token = match (&agent_workload, live) {
            (Some(w), true) => self.ensure_secret(&namespace_of(w)).await?,
            _ => self.token.clone(),
        };
        let before: Vec<Applied> = self
            .applied
            .lock()
            .unwrap()
            .get(&service.name)
            .cloned()
            .unwrap_or_default();
        let mut now = Vec::with_capacity(objects.len());
        for o in &objects {
            let a = apply::apply(self.client(), &self.target.namespace, o).await?;
            progress.say(&format!("applied {}", a.describe()));
            self.record(&service.name, a.clone());
            now.push(a);
        }
        // What an edited manifest no longer has goes.
        for gone in before
            .iter()
            .filter(|b| !now.iter().any(|a| same_object(a, b)))
        {
            apply::delete(self.client(), gone).await?;
            progress.say(&format!(
                "deleted {} (no longer in the manifests)",
                gone.describe()
            ));
            self.applied
                .lock()
                .unwrap()
                .entry(service.name.clone())
                .or_default()
                .retain(|a| !same_object(a, gone));
        }
        // The workload whose pods carry the agent (or, for a service that is
        // not live, the first with pods: its ports are forwarded).
        let workload = agent_workload.or_else(|| {
            objects
                .iter()
                .find(|o| {
                    lks_k8s::labels::pod_selector(o).is_some()
                        && lks_k8s::workload::pod_template(o).is_some()
                })
                .cloned()
        });
        let Some(workload) = workload else {
            return Err(StartError::NoWorkload {
                service: service.name.clone(),
            });
        };
        let selector = lks_k8s::labels::pod_selector(&workload)
            .ok_or_else(|| StartError::NoSelector(render::describe(&workload)))?;
        let pods = Pods::watch(
            self.client().clone(),
            &namespace_of(&workload),
            &selector,
            wrapped_container(&workload),
        );
        if !live {
            // A dependency: ready when its rollout is (and its readiness check).
            for a in now.iter() {
                apply::wait_rollout(self.client(), a, Some(&pods), progress).await?;
            }
        }
        {
            let mut forwards = self.forwards.lock().unwrap();
            let opener = portforward::opener(pods.clone());
            let to = progress.clone();
            let report: crate::forward::Report = Arc::new(move |l| to.send(Event::Warning(l)));
            let ports = crate::debug::forwarded_ports(service);
            crate::forward::to_service(&mut forwards, &service.name, opener, &ports, report);
        }
        let root = injected_root(&workload).unwrap_or_else(|| service.live_update.root.clone());
        let mode = if live {
            // The image's files; the app is held until the first sync.
            Mode::Live(Live {
                seeded: true,
                first_batch: None,
                // The image, and what is applied: a changed manifest is
                // applied anew.
                rebuild_on: std::iter::once(service.build.dockerfile.clone())
                    .chain(service.k8s.iter().cloned())
                    .collect(),
            })
        } else {
            Mode::Unmanaged
        };
        Ok(Instance {
            tunnel: Tunnel {
                dialer: pods.dialer(inject_port()),
                token,
            },
            mode,
            pid: None,
            location: format!(
                "{}, image {cluster_ref}{}",
                render::describe(&workload),
                if live {
                    format!(", root {root}")
                } else {
                    String::new()
                }
            ),
            app_pid: Default::default(),
            pods: Some(pods),
            handle: (),
        })
    }

    /// Deletes what was applied for `key` (a service, or "" for the run's
    /// own); what could not be deleted, and why.
    async fn delete_applied(&self, key: &str) -> Vec<String> {
        let applied = self.applied.lock().unwrap().remove(key);
        let mut left = Vec::new();
        for a in applied.unwrap_or_default().iter().rev() {
            if let Err(e) = apply::delete(self.client(), a).await {
                left.push(format!("{e:#}"));
            }
        }
        left
    }
}

/// Whether two applied objects are the same object.
fn same_object(a: &Applied, b: &Applied) -> bool {
    a.resource.group == b.resource.group
        && a.resource.kind == b.resource.kind
        && a.namespace == b.namespace
        && a.name == b.name
}

/// The agent's port in the pod.
fn inject_port() -> u16 {
    lks_proto::DEFAULT_PORT
}

/// Whether `o`'s pod template got the agent.
fn injected(o: &Value) -> bool {
    lks_k8s::workload::pod_template(o)
        .is_some_and(|t| t["metadata"]["annotations"][inject::ANNOTATION_INJECTED].is_string())
}

/// The agent root the pod template asks for.
fn injected_root(o: &Value) -> Option<String> {
    let t = lks_k8s::workload::pod_template(o)?;
    Some(
        t["metadata"]["annotations"][inject::ANNOTATION_ROOT]
            .as_str()
            .unwrap_or(inject::DEFAULT_ROOT)
            .to_string(),
    )
}

/// The container the agent wraps: the one `lks.dev/container` names, else
/// the first.
fn wrapped_container(o: &Value) -> Option<String> {
    let t = lks_k8s::workload::pod_template(o)?;
    if let Some(c) = t["metadata"]["annotations"][inject::ANNOTATION_CONTAINER].as_str() {
        return Some(c.to_string());
    }
    t["spec"]["containers"][0]["name"]
        .as_str()
        .map(str::to_string)
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
                lks_k8s::labels::MANAGED: "true",
                lks_k8s::labels::WORKSPACE: workspace,
            },
        },
        "type": "Opaque",
        "stringData": { inject::TOKEN_KEY: token },
    })
}

impl Runtime for KubeRuntime {
    /// Nothing: what was applied is recorded per service.
    type Handle = ();

    fn name(&self) -> &'static str {
        "kube"
    }

    async fn start(
        &self,
        service: &Service,
        fresh: bool,
        progress: &Reporter,
    ) -> Result<Instance<()>, RuntimeError> {
        if service.k8s.is_empty() {
            return Err(RuntimeError::Misconfigured {
                service: service.name.clone(),
                reason: "it has no `k8s:` manifests; the kube runtime applies them (list its Deployment and Service files)".into(),
            });
        }
        self.start_service(service, fresh, progress)
            .await
            .map_err(|e| e.of(service))
    }

    async fn retire(
        &self,
        _service: &Service,
        _instance: Instance<()>,
    ) -> Result<(), RuntimeError> {
        // What runs stays, its ports stay open: the next start applies over it.
        Ok(())
    }

    async fn stop(&self, service: &Service, _instance: Instance<()>) -> Result<(), RuntimeError> {
        self.forwards.lock().unwrap().remove(&service.name);
        let left = self.delete_applied(&service.name).await;
        if left.is_empty() {
            return Ok(());
        }
        Err(RuntimeError::NotRemoved {
            service: service.name.clone(),
            reason: left.join("; "),
        })
    }

    async fn shutdown(&self) {
        self.forwards.lock().unwrap().clear();
        // Services stopped half-way (a rollout still going), then the Secrets.
        let keys: Vec<String> = self.applied.lock().unwrap().keys().cloned().collect();
        // The console has stopped: what is left goes to stderr.
        for key in keys.iter().filter(|k| !k.is_empty()) {
            for e in self.delete_applied(key).await {
                crate::console::say(&format!("{key}: {e}"));
            }
        }
        for e in self.delete_applied("").await {
            crate::console::say(&e);
        }
    }
}
