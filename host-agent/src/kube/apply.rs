//! Talking to the API server: server-side apply of rendered objects (field
//! manager `lks`), rollout waits, finding the pod that runs a workload now,
//! and deleting what lks applied.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The field manager lks applies as.
pub const FIELD_MANAGER: &str = "lks";

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

/// The resource of an object's `apiVersion` and `kind`, asked of the server.
async fn resource_of(client: &Client, o: &Value) -> anyhow::Result<(ApiResource, ApiCapabilities)> {
    let api_version = o["apiVersion"]
        .as_str()
        .context("an object without apiVersion")?;
    let kind = o["kind"].as_str().context("an object without kind")?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
        .await
        .with_context(|| format!("the cluster does not serve {kind} in {api_version}"))
}

/// Server-side applies `o` (its namespace, else `namespace`).
pub async fn apply(client: &Client, namespace: &str, o: &Value) -> anyhow::Result<Applied> {
    let (resource, caps) = resource_of(client, o).await?;
    let name = o["metadata"]["name"]
        .as_str()
        .context("an object without metadata.name")?
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
    let result = api
        .patch(
            &applied.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(o),
        )
        .await
        .with_context(|| format!("applying {}", applied.describe()))?;
    applied.object = serde_json::to_value(result)?;
    Ok(applied)
}

/// Deletes an applied object (its dependents in the background); gone already
/// is fine.
pub async fn delete(client: &Client, a: &Applied) -> anyhow::Result<()> {
    match a
        .api(client)
        .delete(&a.name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {}", a.describe())),
    }
}

/// Whether a workload's rollout is complete, from its status; None for kinds
/// without a rollout (they are done when applied).
pub fn rollout_done(o: &Value) -> Option<Result<bool, String>> {
    let kind = o["kind"].as_str()?;
    if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
        return None;
    }
    let status = &o["status"];
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Some(Ok(false));
    }
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    Some(Ok(match kind {
        "DaemonSet" => {
            let desired = int(&status["desiredNumberScheduled"]);
            int(&status["updatedNumberScheduled"]) == desired
                && int(&status["numberAvailable"]) == desired
        }
        _ => {
            let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
            if kind == "Deployment"
                && let Some(c) = status["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Some(Err(format!(
                    "the rollout stalled: {}",
                    c["message"]
                        .as_str()
                        .unwrap_or("progress deadline exceeded")
                )));
            }
            int(&status["updatedReplicas"]) == replicas
                && int(&status["readyReplicas"]) == replicas
                && int(&status["replicas"]) == replicas
        }
    }))
}

/// Waits until `a`'s rollout is complete (polling its status), reporting
/// progress; gives up after `timeout`.
pub async fn wait_rollout(
    client: &Client,
    a: &Applied,
    timeout: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    if rollout_done(&a.object).is_none() {
        return Ok(());
    }
    let api = a.api(client);
    let deadline = Instant::now() + timeout;
    let mut said = false;
    loop {
        let o = serde_json::to_value(
            api.get(&a.name)
                .await
                .with_context(|| format!("reading {}", a.describe()))?,
        )?;
        match rollout_done(&o) {
            Some(Ok(true)) | None => return Ok(()),
            Some(Err(why)) => bail!("{}: {why}", a.describe()),
            Some(Ok(false)) => {}
        }
        if !said {
            progress(&format!("waiting for the rollout of {}", a.describe()));
            said = true;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not roll out within {}s (see `kubectl describe {} -n {}`)",
                a.describe(),
                timeout.as_secs(),
                a.resource.kind.to_lowercase(),
                a.namespace
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The label selector of a workload's pods (`spec.selector.matchLabels`,
/// or for a bare Pod, its own labels), as `k=v,k=v`.
pub fn pod_selector(o: &Value) -> Option<String> {
    let labels = match o["kind"].as_str()? {
        "Pod" => o["metadata"]["labels"].as_object()?,
        "CronJob" => {
            o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"].as_object()?
        }
        _ => o["spec"]["selector"]["matchLabels"]
            .as_object()
            .or_else(|| o["spec"]["template"]["metadata"]["labels"].as_object())?,
    };
    let mut pairs: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    pairs.sort();
    (!pairs.is_empty()).then(|| pairs.join(","))
}

/// The pod that serves now among `pods`: running, ready, not being deleted;
/// the newest if several.
pub fn current_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .max_by_key(|p| p.metadata.creation_timestamp.clone())
}

/// Finds the pod a workload runs now (see [`current_pod`]), waiting up to
/// `timeout` for one.
pub async fn find_pod(
    client: &Client,
    namespace: &str,
    selector: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let pods = api
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing pods {selector} in {namespace}"))?;
        if let Some(name) = current_pod(&pods.items).and_then(|p| p.metadata.name.clone()) {
            return Ok(name);
        }
        if Instant::now() > deadline {
            bail!(
                "no running, ready pod matches {selector} in {namespace} after {}s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Deletes every object carrying the labels of `selector`, of every kind the
/// cluster serves (`lks down`); returns what it deleted, `Kind ns/name`.
pub async fn delete_labelled(client: &Client, selector: &str) -> anyhow::Result<Vec<String>> {
    use kube::discovery::{Discovery, verbs};
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("discovering the cluster's resources")?;
    let mut deleted = vec![];
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || !caps.supports_operation(verbs::DELETE) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let Ok(list) = api.list(&ListParams::default().labels(selector)).await else {
                continue;
            };
            for o in list.items {
                let Some(name) = o.metadata.name.clone() else {
                    continue;
                };
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let a = Applied {
                    resource: resource.clone(),
                    namespaced: caps.scope == Scope::Namespaced,
                    namespace: ns,
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
