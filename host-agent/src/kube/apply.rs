//! Talking to the API server: server-side apply of rendered objects (field
//! manager `lks`), rollout waits, finding the pod that runs a workload now,
//! and deleting what lks applied.

use crate::events::Progress;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use lks_k8s::labels::FIELD_MANAGER;
use lks_k8s::rollout::{Rollout, rollout};
use serde_json::Value;
use std::time::{Duration, Instant};

/// An object lks applied: enough to find it again.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its resource.
    pub resource: ApiResource,
    /// Namespaced or not.
    pub namespaced: bool,
    /// Its namespace (for namespaced objects).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The object as the server returned it.
    pub object: Value,
}

impl Applied {
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), &self.namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }

    /// `Kind namespace/name`.
    pub fn describe(&self) -> String {
        if self.namespaced {
            format!("{} {}/{}", self.resource.kind, self.namespace, self.name)
        } else {
            format!("{} {}", self.resource.kind, self.name)
        }
    }
}

/// Why an object could not be applied, deleted or waited for.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The object lacks a field every object has.
    #[error("an object without {0}")]
    Missing(&'static str),
    /// The cluster does not serve its kind.
    #[error("the cluster does not serve {kind} in {api_version}: {cause}")]
    NotServed {
        /// Its kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
        /// What discovery said.
        cause: kube::Error,
    },
    /// Its namespace does not exist.
    #[error(
        "applying {what}: namespace {namespace} does not exist (create it: `kubectl create namespace {namespace}`, or leave \
         metadata.namespace out and pass --namespace)"
    )]
    NoNamespace {
        /// `Kind ns/name`.
        what: String,
        /// The namespace.
        namespace: String,
    },
    /// The API server refused or failed.
    #[error("{doing}: {cause}")]
    Cluster {
        /// What lks was doing.
        doing: String,
        /// Why.
        cause: super::ClusterError,
    },
    /// A rollout that will not finish by itself.
    #[error("{what}: {why}")]
    Stalled {
        /// `Kind ns/name`.
        what: String,
        /// The cluster's reason.
        why: String,
    },
    /// The server's answer is not the object expected.
    #[error("reading the API server's answer: {0}")]
    Json(#[from] serde_json::Error),
}

/// The resource of an object's `apiVersion` and `kind`, asked of the server.
async fn resource_of(
    client: &Client,
    o: &Value,
) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
    let api_version = o["apiVersion"]
        .as_str()
        .ok_or(ApplyError::Missing("apiVersion"))?;
    let kind = o["kind"].as_str().ok_or(ApplyError::Missing("kind"))?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .map_err(|cause| ApplyError::NotServed {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            cause,
        })
}

/// Server-side applies `o` (its namespace, else `namespace`).
pub async fn apply(client: &Client, namespace: &str, o: &Value) -> Result<Applied, ApplyError> {
    let (resource, caps) = resource_of(client, o).await?;
    let name = o["metadata"]["name"]
        .as_str()
        .ok_or(ApplyError::Missing("metadata.name"))?
        .to_string();
    let namespaced = caps.scope == Scope::Namespaced;
    let ns = o["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_string();
    let mut applied = Applied {
        resource,
        namespaced,
        namespace: ns,
        name,
        object: Value::Null,
    };
    let api = applied.api(client);
    let result = match api
        .patch(
            &applied.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(o),
        )
        .await
    {
        Ok(r) => r,
        Err(kube::Error::Api(e)) if e.code == 404 && namespaced => {
            return Err(ApplyError::NoNamespace {
                what: applied.describe(),
                namespace: applied.namespace.clone(),
            });
        }
        Err(e) => {
            return Err(ApplyError::Cluster {
                doing: format!("applying {}", applied.describe()),
                cause: super::explain(e),
            });
        }
    };
    applied.object = serde_json::to_value(result)?;
    Ok(applied)
}

/// Deletes an applied object (its dependents in the background); gone already
/// is fine.
pub async fn delete(client: &Client, a: &Applied) -> Result<(), ApplyError> {
    match a
        .api(client)
        .delete(&a.name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(ApplyError::Cluster {
            doing: format!("deleting {}", a.describe()),
            cause: super::explain(e),
        }),
    }
}

/// Waits until `a`'s rollout is complete (polling its status), reporting
/// progress and, from `pods`, what keeps its pods from running (each new
/// reason once, in the cluster's words). It does not give up: a pod that
/// cannot pull its image may get it later; a stalled rollout
/// (`ProgressDeadlineExceeded`) is an error.
pub async fn wait_rollout(
    client: &Client,
    a: &Applied,
    pods: Option<&super::pods::Pods>,
    progress: &dyn Progress,
) -> Result<(), ApplyError> {
    /// How long an ordinary wait (a container being created) goes unsaid.
    const PATIENCE: Duration = Duration::from_secs(5);
    if rollout(&a.object).is_none() {
        return Ok(());
    }
    let api = a.api(client);
    let started = Instant::now();
    let mut said_waiting = false;
    let mut said = String::new();
    loop {
        let o = match api.get(&a.name).await {
            Ok(o) => serde_json::to_value(o)?,
            Err(e) => {
                // The API server went away: say so and keep waiting.
                let why = format!("reading {}: {:#}", a.describe(), super::explain(e));
                if why != said {
                    progress.say(&why);
                    said = why;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match rollout(&o) {
            Some(Rollout::Done) | None => return Ok(()),
            Some(Rollout::Stalled(why)) => {
                return Err(ApplyError::Stalled {
                    what: a.describe(),
                    why,
                });
            }
            Some(Rollout::Waiting(_)) => {}
        }
        if !said_waiting {
            progress.say(&format!("waiting for the rollout of {}", a.describe()));
            said_waiting = true;
        }
        if let Some(problem) = pods.and_then(|p| p.view().problem)
            && (!problem.transient || started.elapsed() > PATIENCE)
            && problem.text != said
        {
            progress.say(&problem.text);
            said = problem.text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether lks applied `o`: its labels say lks, and its managed fields say
/// lks applied it (the Endpoints a controller made for lks's Service carry
/// the Service's labels, but were not applied by lks).
pub fn applied_by_lks(o: &DynamicObject) -> bool {
    o.metadata.managed_fields.as_ref().is_some_and(|fields| {
        fields.iter().any(|f| {
            f.manager.as_deref() == Some(FIELD_MANAGER) && f.operation.as_deref() == Some("Apply")
        })
    })
}

/// Deletes every object lks applied that carries the labels of `selector`
/// ([`applied_by_lks`]), of every kind the cluster serves, in `namespace`
/// only when given (`lks down`); returns what it deleted, `Kind ns/name`.
pub async fn delete_labelled(
    client: &Client,
    selector: &str,
    namespace: Option<&str>,
) -> Result<Vec<String>, ApplyError> {
    use kube::discovery::{Discovery, verbs};
    let discovery =
        Discovery::new(client.clone())
            .run()
            .await
            .map_err(|e| ApplyError::Cluster {
                doing: "discovering the cluster's resources".into(),
                cause: super::explain(e),
            })?;
    let mut deleted = vec![];
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::DELETE) {
                continue;
            }
            let namespaced = caps.scope == Scope::Namespaced;
            let api: Api<DynamicObject> = match namespace {
                Some(ns) if namespaced => Api::namespaced_with(client.clone(), ns, &resource),
                Some(_) => continue,
                None => Api::all_with(client.clone(), &resource),
            };
            let Ok(list) = api.list(&ListParams::default().labels(selector)).await else {
                continue;
            };
            for o in list.items.iter().filter(|o| applied_by_lks(o)) {
                let Some(name) = o.metadata.name.clone() else {
                    continue;
                };
                let a = Applied {
                    resource: resource.clone(),
                    namespaced,
                    namespace: o.metadata.namespace.clone().unwrap_or_default(),
                    name,
                    object: Value::Null,
                };
                delete(client, &a).await?;
                deleted.push(a.describe());
            }
        }
    }
    Ok(deleted)
}
