//! `lks down`: removes every container, network and volume lks created for
//! this workspace (found by their labels), and nothing else: not the
//! registry, not anything another tool made.

use crate::config;
use crate::docker::{self, EngineError, LABEL_MANAGED, LABEL_SERVICE, LABEL_WORKSPACE};
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use std::collections::HashMap;
use std::path::Path;

/// Runs `lks down` for the workspace of `file` (or every workspace: `all`):
/// in the Docker engine, and in the cluster when the current kubeconfig
/// context is the workspace's kind cluster (or `kube` asks for it).
pub async fn down(file: Option<&Path>, all: bool, kube: bool) -> anyhow::Result<()> {
    let mut label = vec![format!("{LABEL_MANAGED}=true")];
    let ws = if all { None } else { Some(config::load(file)?) };
    let scope = match &ws {
        None => "every workspace".to_string(),
        Some(ws) => {
            label.push(format!("{LABEL_WORKSPACE}={}", ws.root.display()));
            ws.root.display().to_string()
        }
    };
    let cluster = ws
        .as_ref()
        .and_then(|w| w.cluster.as_ref())
        .map(|c| c.name.clone())
        .unwrap_or_else(|| "lks".into());
    let current = ::kube::config::Kubeconfig::read()
        .ok()
        .and_then(|k| k.current_context);
    if kube || current.as_deref() == Some(&format!("kind-{cluster}")) {
        down_in_cluster(ws.as_ref()).await?;
    }
    let filters = HashMap::from([("label".to_string(), label)]);
    let docker = docker::connect().await?;

    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(EngineError::api("listing containers"))?;
    for c in &containers {
        let Some(id) = &c.id else { continue };
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.clone());
        let service = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE))
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(EngineError::api(format!("removing the container {name}")))?;
        println!("removed container {name}{service}");
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(EngineError::api("listing networks"))?;
    for n in &networks {
        let Some(name) = &n.name else { continue };
        docker
            .remove_network(name)
            .await
            .map_err(EngineError::api(format!("removing the network {name}")))?;
        println!("removed network {name}");
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(EngineError::api("listing volumes"))?;
    let volumes = volumes.volumes.unwrap_or_default();
    for v in &volumes {
        docker
            .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
            .await
            .map_err(EngineError::api(format!("removing the volume {}", v.name)))?;
        println!("removed volume {}", v.name);
    }
    if containers.is_empty() && networks.is_empty() && volumes.is_empty() {
        println!("nothing to remove for {scope}");
    }
    Ok(())
}

/// The cluster half of `lks down`: every object labelled by lks for this
/// workspace (or, without one, by lks at all).
async fn down_in_cluster(ws: Option<&config::Workspace>) -> anyhow::Result<()> {
    use crate::kube::render::{LABEL_MANAGED as MANAGED, LABEL_WORKSPACE as WORKSPACE};
    let client = ::kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the cluster of the current kubeconfig context: {e}")
    })?;
    let mut selector = format!("{MANAGED}=true");
    if let Some(ws) = ws {
        selector.push_str(&format!(
            ",{WORKSPACE}={}",
            crate::kube::render::workspace_label(&ws.root)
        ));
    }
    let deleted = crate::kube::apply::delete_labelled(&client, &selector).await?;
    for d in &deleted {
        println!("deleted {d}");
    }
    if deleted.is_empty() {
        println!("nothing of lks in the cluster ({selector})");
    }
    Ok(())
}
