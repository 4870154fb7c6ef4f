//! `lks cluster create|delete|status`: a kind cluster pinned to the
//! Kubernetes version in `lks.yaml`, with ingress and the local registry.
//!
//! `create` follows kind's own recipes: the cluster is made by `kind create
//! cluster` from [`kind_config`] (a control-plane node labelled
//! `ingress-ready=true` with ports 80 and 443 on the host, containerd reading
//! registry hosts from `/etc/containerd/certs.d`); the local registry
//! (`lks registry`) joins the `kind` network and every node learns, by a
//! [`registry_hosts_toml`], that `localhost:PORT` is that registry, so an
//! image pushed to `127.0.0.1:PORT/x` runs in a pod as `localhost:PORT/x`;
//! the registry is announced to other tools by [`registry_configmap`]
//! (KEP-1755); ingress-nginx's kind manifest is applied; and with `--webhook`
//! the agent's admission webhook ([`super::webhook_install`]). Every
//! Kubernetes object goes in by server-side apply (field manager `lks`), so
//! running `create` again repairs what is missing and changes nothing else.
//! `--dry-run` prints all of it and touches nothing.
//!
//! - [`recipe`]: what is made (kind's config, the registry's hosts.toml,
//!   the KEP-1755 ConfigMap, the dry run);
//! - [`kind_cli`]: the kind CLI and its node containers;
//! - [`wiring`]: the registry joined to kind's network and its nodes;
//! - [`create`]: the cluster created or repaired;
//! - [`status`]: what is there and what is missing.

mod create;
mod kind_cli;
mod recipe;
mod status;
#[cfg(test)]
mod tests;
mod wiring;

use create::*;
use kind_cli::*;
use recipe::*;
use status::*;
use wiring::*;
// What the webhook's installation shares.
pub(crate) use create::{apply, wait_for_deployment};
pub(crate) use recipe::{detail, step};
pub(crate) use status::webhook_status;

use super::webhook_install;
use crate::config;
use crate::docker::{self, EngineError};
use crate::registry::{self, Registry};
use ::kube::api::Api;
use anyhow::{Context, bail};
use bollard::Docker;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use lks_k8s::labels::FIELD_MANAGER;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cluster's name when `lks.yaml` names none.
pub const DEFAULT_NAME: &str = "lks";
/// The Kubernetes version when `lks.yaml` pins none (a `kindest/node` tag).
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.34.0";
/// The kind release the install hint names (its node images include the
/// default version above).
pub const KIND_VERSION: &str = "v0.30.0";
/// ingress-nginx's manifest for kind (the controller's hostPorts 80 and 443
/// on the node labelled `ingress-ready=true`), pinned to a controller
/// release and fetched when `create` applies it. To move to another
/// release, change the tag (`controller-vX.Y.Z`) and run `lks cluster create`.
pub const INGRESS_NGINX_MANIFEST: &str = "https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.15.1/deploy/static/provider/kind/deploy.yaml";
/// Namespace and Deployment of the ingress controller that manifest installs.
pub(super) const INGRESS_NAMESPACE: &str = "ingress-nginx";
pub(super) const INGRESS_DEPLOYMENT: &str = "ingress-nginx-controller";
/// The label kind puts on its node containers (value: the cluster's name).
pub(super) const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// The Docker network kind puts its nodes on.
pub(super) const KIND_NETWORK: &str = "kind";
/// Where containerd looks for registry hosts (`config_path`) in kind nodes.
pub(super) const CERTS_D: &str = "/etc/containerd/certs.d";
/// kind's documentation of the local registry (KEP-1755's `help`).
pub(super) const LOCAL_REGISTRY_HELP: &str = "https://kind.sigs.k8s.io/docs/user/local-registry/";
/// The port a registry container listens on inside its container.
pub(super) const REGISTRY_CONTAINER_PORT: u16 = 5000;
/// How long `create` waits for a Deployment it applied to become available.
pub(super) const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `create` waits for the API server of an existing cluster.
pub(super) const API_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `status` check may take.
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The `lks cluster` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create the kind cluster with ingress-nginx and the local registry (or
    /// repair the missing parts of an existing one).
    #[command(
        after_help = "Examples:\n  lks cluster create\n  lks cluster create --webhook\n  \
                            lks cluster create --dry-run -f path/to/lks.yaml"
    )]
    Create {
        /// Also install the admission webhook that injects the agent into
        /// pods annotated `lks.dev/agent: "true"` (its image must be in the
        /// registry: `lks agent-image --push`).
        #[arg(long)]
        webhook: bool,
        /// Print the kind configuration and every Kubernetes object that
        /// would be applied, as YAML documents, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where ingress-nginx's manifest comes from: a URL, or a file (a copy
        /// of it for machines that cannot reach GitHub).
        #[arg(long, value_name = "URL|FILE", default_value = INGRESS_NGINX_MANIFEST)]
        ingress_manifest: String,
    },
    /// Delete the kind cluster (the registry and its images stay).
    Delete,
    /// Whether the cluster exists and each of its parts works, one line each;
    /// fails when there is no cluster.
    Status,
}

/// What `lks.yaml` says about the cluster, defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// kind cluster name (the kube context is `kind-NAME`).
    pub name: String,
    /// Kubernetes version, without a leading `v` (`1.34.0`).
    pub kubernetes_version: String,
    /// The image registry.
    pub registry: Registry,
}

impl Settings {
    /// Fails unless the version names a node image (`1.34.0`, not `1.34`).
    fn check_version(&self) -> anyhow::Result<()> {
        if self.kubernetes_version.split('.').count() != 3 {
            bail!(
                "cluster.kubernetes_version {:?}: kind's node images are tagged with full versions \
                 (like \"{DEFAULT_KUBERNETES_VERSION}\"); pin one in lks.yaml",
                self.kubernetes_version
            );
        }
        Ok(())
    }

    /// The kube context kind writes for the cluster.
    pub fn context(&self) -> String {
        format!("kind-{}", self.name)
    }

    /// How pods name the agent image: through `localhost:PORT` (mapped to
    /// the registry container on every node) for the local registry, else
    /// the registry's own address.
    pub fn agent_image(&self) -> String {
        // Named by its content (as `create` pushes it) when the static agent
        // is at hand, else by lks's version.
        let tag = crate::agent_image::content_tag()
            .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
        crate::agent_image::in_cluster(&self.registry, &tag)
    }
}

/// Reads the settings from `file`, else from the `lks.yaml` found here or
/// above (defaults when there is none; a broken one is an error).
pub fn settings(file: Option<&Path>) -> anyhow::Result<Settings> {
    let ws = match config::load(file) {
        Ok(ws) => Some(ws),
        Err(errors)
            if file.is_none()
                && errors
                    .0
                    .iter()
                    .all(|e| matches!(e, config::ConfigError::NoWorkspace { .. })) =>
        {
            None
        }
        Err(errors) => return Err(errors.into()),
    };
    let cluster = ws.as_ref().and_then(|w| w.cluster.clone());
    let name = cluster
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| DEFAULT_NAME.to_string());
    let version = cluster
        .and_then(|c| c.kubernetes_version)
        .unwrap_or_else(|| DEFAULT_KUBERNETES_VERSION.to_string());
    let version = version.strip_prefix('v').unwrap_or(&version).to_string();
    Ok(Settings {
        name,
        kubernetes_version: version,
        registry: Registry::of(ws.as_ref())?,
    })
}

/// Runs one `lks cluster` subcommand.
pub async fn command(file: Option<&Path>, cmd: ClusterCommand) -> anyhow::Result<()> {
    let settings = settings(file)?;
    match cmd {
        ClusterCommand::Create {
            webhook,
            dry_run: true,
            ingress_manifest,
        } => {
            settings.check_version()?;
            print!("{}", dry_run(&settings, webhook, &ingress_manifest)?);
            Ok(())
        }
        ClusterCommand::Create {
            webhook,
            dry_run: false,
            ingress_manifest,
        } => {
            settings.check_version()?;
            create(&settings, webhook, &ingress_manifest).await
        }
        ClusterCommand::Delete => delete(&settings).await,
        ClusterCommand::Status => status(&settings).await,
    }
}

/// `lks cluster delete`.
pub(super) async fn delete(settings: &Settings) -> anyhow::Result<()> {
    let kind = kind()?;
    let name = settings.name.as_str();
    if !kind_clusters(&kind).await?.iter().any(|c| c == name) {
        println!("kind has no cluster {name}: nothing to delete");
        return Ok(());
    }
    step(&format!("kind delete cluster --name {name}"));
    run_kind(&kind, &["delete", "cluster", "--name", name], None).await?;
    println!("deleted the cluster {name}");
    if let Some(container) = settings.registry.container() {
        println!(
            "the registry {container} keeps running, with its images (`lks registry stop` stops it)"
        );
    }
    Ok(())
}
