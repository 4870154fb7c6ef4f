//! `lks down`: removes every container, network and volume lks created for
//! this workspace (found by their labels), and nothing else: not the
//! registry, not anything another tool made.

use crate::config;
use crate::docker::{self, EngineError, LABEL_MANAGED, LABEL_SERVICE, LABEL_WORKSPACE};
use crate::kube::target::{self, Selection};
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};
use std::collections::HashMap;
use std::path::Path;

/// Runs `lks down` for the workspace of `file` (or every workspace: `all`):
/// in the cluster, then in the Docker engine. The cluster is the one
/// `--context` names (else `kube.context`, else the current context's); it
/// is cleaned when asked (`kube`, a context or namespace named) or when it
/// is a local one lks may change (then an unreachable cluster is only
/// mentioned). With a namespace, only there.
pub async fn down(
    file: Option<&Path>,
    all: bool,
    kube: bool,
    sel: &Selection,
) -> anyhow::Result<()> {
    let mut label = vec![format!("{LABEL_MANAGED}=true")];
    let ws = if all { None } else { Some(config::load(file)?) };
    let scope = match &ws {
        None => "every workspace".to_string(),
        Some(ws) => {
            label.push(format!("{LABEL_WORKSPACE}={}", ws.root.display()));
            ws.root.display().to_string()
        }
    };
    let settings = ws.as_ref().map(|w| w.kube.clone()).unwrap_or_default();
    let asked = kube || sel.is_set();
    let chosen = target::choose(&settings, sel);
    let local = chosen.as_ref().is_ok_and(|(_, context, server)| {
        target::permitted(context, server, &settings.allow_contexts).is_ok()
    });
    if asked {
        let t = target::connect(&settings, sel, true).await?;
        down_in_cluster(
            ws.as_ref(),
            &t,
            sel.namespace.is_some() || settings.namespace.is_some(),
        )
        .await?;
    } else if local {
        match target::connect(&settings, sel, true).await {
            Ok(t) => {
                if let Err(e) = down_in_cluster(ws.as_ref(), &t, false).await {
                    println!("skipped the cluster of context {:?}: {e:#}", t.context);
                }
            }
            Err(e) => println!("skipped the cluster: {e:#}"),
        }
    }
    let local = match &ws {
        Some(ws) => stop_local_leftovers(&ws.root.join(crate::config::WORK_DIR)),
        None => 0,
    };
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
    if local == 0 && containers.is_empty() && networks.is_empty() && volumes.is_empty() {
        println!("nothing to remove for {scope}");
    }
    Ok(())
}

/// The local runtime's half of `lks down`: the agents (and apps) a killed
/// `lks up` left running; how many were stopped. A running `lks up` keeps
/// its own.
fn stop_local_leftovers(work: &Path) -> usize {
    if !work.is_dir() {
        return 0;
    }
    match crate::claim::Claim::take(work) {
        Ok(_claim) => {
            let stopped = crate::claim::stop_leftovers(work);
            for s in &stopped {
                println!(
                    "stopped the agent of {} (pid {}) and its app, left running by an lks up that was killed",
                    s.service, s.pid
                );
            }
            stopped.len()
        }
        Err(e) => {
            println!("left the local runtime's services alone: {e}");
            0
        }
    }
}

/// The cluster half of `lks down`: every object lks applied for this
/// workspace (or, without one, for any), in the target's namespace only when
/// `in_namespace`.
async fn down_in_cluster(
    ws: Option<&config::Workspace>,
    target: &target::Target,
    in_namespace: bool,
) -> anyhow::Result<()> {
    use lks_k8s::labels::{MANAGED, WORKSPACE};
    let client = &target.client;
    let namespace = in_namespace.then_some(target.namespace.as_str());
    let mut selector = format!("{MANAGED}=true");
    if let Some(ws) = ws {
        selector.push_str(&format!(
            ",{WORKSPACE}={}",
            crate::kube::render::workspace_label(&ws.root)
        ));
    }
    let deleted = crate::kube::apply::delete_labelled(client, &selector, namespace).await?;
    for d in &deleted {
        println!("deleted {d}");
    }
    let place = match namespace {
        Some(ns) => format!("namespace {ns} of context {:?}", target.context),
        None => format!("the cluster of context {:?}", target.context),
    };
    if deleted.is_empty() {
        println!("nothing lks applied is left in {place}");
    } else {
        println!("deleted {} object(s) lks applied in {place}", deleted.len());
    }
    Ok(())
}
