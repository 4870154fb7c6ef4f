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
const INGRESS_NAMESPACE: &str = "ingress-nginx";
const INGRESS_DEPLOYMENT: &str = "ingress-nginx-controller";
/// The label kind puts on its node containers (value: the cluster's name).
const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// The Docker network kind puts its nodes on.
const KIND_NETWORK: &str = "kind";
/// Where containerd looks for registry hosts (`config_path`) in kind nodes.
const CERTS_D: &str = "/etc/containerd/certs.d";
/// kind's documentation of the local registry (KEP-1755's `help`).
const LOCAL_REGISTRY_HELP: &str = "https://kind.sigs.k8s.io/docs/user/local-registry/";
/// The port a registry container listens on inside its container.
const REGISTRY_CONTAINER_PORT: u16 = 5000;
/// How long `create` waits for a Deployment it applied to become available.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `create` waits for the API server of an existing cluster.
const API_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one `status` check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The kind `Cluster` configuration: one control-plane node running
/// `kindest/node:vVERSION`, labelled `ingress-ready=true` (where the
/// ingress-nginx manifest for kind puts its controller) with the host's
/// ports 80 and 443 mapped to it, and containerd reading registry hosts from
/// `/etc/containerd/certs.d` (kind's local-registry recipe; node images of
/// kind v0.27.0 and later do that already). With a local registry on
/// `registry_port`, a comment says how `localhost:PORT` reaches it.
pub fn kind_config(
    cluster_name: &str,
    kubernetes_version: &str,
    registry_port: Option<u16>,
) -> String {
    let version = kubernetes_version
        .strip_prefix('v')
        .unwrap_or(kubernetes_version);
    let registry = match registry_port {
        Some(port) => format!(
            "# Images named localhost:{port}/... are pulled from the lks registry: lks writes\n\
             # {CERTS_D}/localhost:{port}/hosts.toml into each node after creating it.\n"
        ),
        None => String::new(),
    };
    format!(
        r#"# kind cluster for lks (`lks cluster create` runs `kind create cluster --config -` with this).
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: {cluster_name}
nodes:
  - role: control-plane
    image: kindest/node:v{version}
    # ingress-nginx's kind manifest runs its controller on the node labelled
    # ingress-ready=true, with hostPorts 80 and 443 mapped to the host's. (A
    # node label, not a kubeadm patch: it does not depend on kubeadm's config
    # version, which changed in Kubernetes 1.31.)
    labels:
      ingress-ready: "true"
    extraPortMappings:
      - containerPort: 80
        hostPort: 80
        protocol: TCP
      - containerPort: 443
        hostPort: 443
        protocol: TCP
{registry}containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{CERTS_D}"
"#
    )
}

/// containerd's `hosts.toml` for the registry host `localhost:PORT`: pull
/// from the registry container, over HTTP on the `kind` network. Written to
/// `/etc/containerd/certs.d/localhost:PORT/hosts.toml` in every node
/// (`localhost` in a node is the node, not the machine running Docker).
pub fn registry_hosts_toml(registry_container: &str, port: u16) -> String {
    format!(
        "# Written by lks: localhost:{port} is the registry container {registry_container} on the network \"{KIND_NETWORK}\".\n\
         [host.\"http://{registry_container}:{REGISTRY_CONTAINER_PORT}\"]\n"
    )
}

/// Where [`registry_hosts_toml`] goes in each node.
fn hosts_toml_dir(port: u16) -> String {
    format!("{CERTS_D}/localhost:{port}")
}

/// The ConfigMap `kube-public/local-registry-hosting` (KEP-1755) that tells
/// tools which registry the cluster pulls from.
pub fn registry_configmap(port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "local-registry-hosting",
            "namespace": "kube-public",
            "labels": { "app.kubernetes.io/managed-by": "lks" },
        },
        "data": {
            "localRegistryHosting.v1": format!(
                "host: \"localhost:{port}\"\nhelp: \"{LOCAL_REGISTRY_HELP}\"\n"
            ),
        },
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

/// What `create` would do, as YAML documents: the kind configuration, then
/// every Kubernetes object, with comments for the steps that are not objects.
pub fn dry_run(
    settings: &Settings,
    webhook: bool,
    ingress_manifest: &str,
) -> anyhow::Result<String> {
    let mut out = format!(
        "# lks cluster create --dry-run: nothing was changed.\n\
         # 1. kind create cluster --name {name} --config - (unless kind has the cluster {name}), with:\n\
         ---\n{config}",
        name = settings.name,
        config = kind_config(
            &settings.name,
            &settings.kubernetes_version,
            settings.registry.local_port
        ),
    );
    let mut objects = vec![];
    match (settings.registry.local_port, settings.registry.container()) {
        (Some(port), Some(container)) => {
            out.push_str(&format!(
                "# 2. The registry {container} ({address}) runs and joins the network \"{KIND_NETWORK}\";\n\
                 #    each node gets {dir}/hosts.toml:\n",
                address = settings.registry.address,
                dir = hosts_toml_dir(port),
            ));
            for line in registry_hosts_toml(&container, port).lines() {
                out.push_str(&format!("#      {line}\n"));
            }
            objects.push(registry_configmap(port));
        }
        _ => out.push_str(&format!(
            "# 2. The registry {} is not on this machine: lks leaves it alone (the nodes must be able to pull from it).\n",
            settings.registry.address
        )),
    }
    out.push_str(&format!(
        "# 3. Applied with server-side apply (field manager \"{FIELD_MANAGER}\") in the kube context {context}:\n\
         #    ingress-nginx from {ingress_manifest} (read when applied)\n",
        context = settings.context(),
    ));
    if webhook {
        let (ca, cert, key) = webhook_install::webhook_certs()?;
        objects.extend(webhook_install::webhook_objects(
            &settings.agent_image(),
            &ca,
            &cert,
            &key,
        ));
    }
    for o in &objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).context("rendering an object as YAML")?);
    }
    Ok(out)
}

/// A step's line.
pub(super) fn step(text: &str) {
    println!("==> {text}");
}

/// A detail under a step.
pub(super) fn detail(text: &str) {
    println!("    {text}");
}

/// `command` on PATH, if it is there.
fn which(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// How to get kind.
fn install_kind_hint() -> String {
    format!(
        "kind is not installed (no `kind` on PATH); lks creates the cluster with kind (https://kind.sigs.k8s.io).\n  \
         Install it with Go: `go install sigs.k8s.io/kind@{KIND_VERSION}` (into $(go env GOPATH)/bin, which must be on PATH),\n  \
         or download the release binary: `curl -Lo ./kind https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64 \
         && chmod +x ./kind && sudo mv ./kind /usr/local/bin/kind` (kind-linux-arm64 on ARM)."
    )
}

/// The kind binary, or the install hint as the error.
fn kind() -> anyhow::Result<PathBuf> {
    which("kind").ok_or_else(|| anyhow::anyhow!("{}", install_kind_hint()))
}

/// The clusters kind knows (`kind get clusters`).
async fn kind_clusters(kind: &Path) -> anyhow::Result<Vec<String>> {
    let out = tokio::process::Command::new(kind)
        .args(["get", "clusters"])
        .output()
        .await
        .with_context(|| format!("running {} get clusters", kind.display()))?;
    if !out.status.success() {
        bail!(
            "`kind get clusters` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Runs kind with its output going straight to ours; `stdin` is written to
/// its standard input.
async fn run_kind(kind: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let shown = format!("kind {}", args.join(" "));
    let mut child = tokio::process::Command::new(kind)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .with_context(|| format!("writing the configuration to `{shown}`"))?;
        drop(pipe);
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("waiting for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status}); its output is above");
    }
    Ok(())
}

/// One node container of a kind cluster.
#[derive(Debug, Clone)]
struct NodeContainer {
    name: String,
    running: bool,
    image: String,
}

/// The node containers of cluster `name` (by kind's label), sorted by name.
async fn node_containers(docker: &Docker, name: &str) -> anyhow::Result<Vec<NodeContainer>> {
    use bollard::query_parameters::ListContainersOptions;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{KIND_CLUSTER_LABEL}={name}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(EngineError::api("listing the cluster's node containers"))?;
    let mut nodes: Vec<NodeContainer> = containers
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            Some(NodeContainer {
                name,
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                image: c.image.unwrap_or_default(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// `lks cluster create`.
async fn create(settings: &Settings, webhook: bool, ingress_manifest: &str) -> anyhow::Result<()> {
    let kind = kind()?;
    let docker = docker::connect().await?;
    let name = settings.name.as_str();
    let mut problems: Vec<String> = vec![];

    // 1. The cluster.
    let exists = kind_clusters(&kind).await?.iter().any(|c| c == name);
    if exists {
        step(&format!(
            "the kind cluster {name} exists: checking its parts"
        ));
        let nodes = node_containers(&docker, name).await?;
        let wanted = format!("kindest/node:v{}", settings.kubernetes_version);
        for node in &nodes {
            if node.image.split('@').next() != Some(wanted.as_str()) {
                detail(&format!(
                    "note: {} runs {}, lks.yaml pins {wanted}; `lks cluster delete && lks cluster create` changes it",
                    node.name, node.image
                ));
            }
            if !node.running {
                detail(&format!("starting the stopped node {}", node.name));
                docker
                    .start_container(
                        &node.name,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                    .map_err(EngineError::api(format!("starting {}", node.name)))?;
            }
        }
    } else {
        step(&format!(
            "creating the kind cluster {name} (Kubernetes {}): kind create cluster --name {name} --config -",
            settings.kubernetes_version
        ));
        let config = kind_config(
            name,
            &settings.kubernetes_version,
            settings.registry.local_port,
        );
        run_kind(
            &kind,
            &["create", "cluster", "--name", name, "--config", "-"],
            Some(&config),
        )
        .await?;
    }
    if !context_exists(&settings.context()) {
        step(&format!(
            "the kube context {} is missing: kind export kubeconfig --name {name}",
            settings.context()
        ));
        run_kind(&kind, &["export", "kubeconfig", "--name", name], None).await?;
    }
    let nodes = node_containers(&docker, name).await?;
    if nodes.is_empty() {
        bail!("kind knows the cluster {name} but Docker has none of its node containers");
    }

    // 2. The registry, reachable from the nodes as localhost:PORT.
    match (settings.registry.local_port, settings.registry.container()) {
        (Some(port), Some(container)) => {
            step(&format!(
                "the registry {container} at {}",
                settings.registry.address
            ));
            registry::ensure_running(&docker, &settings.registry, None, &|l: &str| detail(l))
                .await?;
            connect_to_kind_network(&docker, &container).await?;
            let content = registry_hosts_toml(&container, port);
            for node in &nodes {
                write_hosts_toml(&docker, &node.name, port, &content).await?;
            }
            detail(&format!(
                "images pushed to {} run in pods as localhost:{port}/...",
                settings.registry.address
            ));
        }
        _ => step(&format!(
            "the registry {} is not on this machine: not wiring it (the nodes must be able to pull from it)",
            settings.registry.address
        )),
    }

    // 3. Kubernetes objects.
    let client = kube_client(&settings.context()).await?;
    wait_for_api(&client, name).await?;
    if let Some(port) = settings.registry.local_port {
        step("announcing the registry: ConfigMap kube-public/local-registry-hosting");
        apply(&client, &[registry_configmap(port)]).await?;
    }
    step(&format!("ingress-nginx: {ingress_manifest}"));
    let by_hand = format!(
        "apply it by hand once it can be fetched: `kubectl --context {} apply --server-side -f {ingress_manifest}` \
         (or download it elsewhere and run `lks cluster create --ingress-manifest FILE`)",
        settings.context()
    );
    match read_manifest(ingress_manifest).await {
        Err(e) => {
            detail(&format!("cannot read the manifest: {e:#}"));
            problems.push(format!(
                "ingress-nginx is not installed: its manifest could not be read ({e:#}); {by_hand}"
            ));
        }
        Ok(text) => {
            let objects = super::render::parse_manifest(&text)
                .with_context(|| format!("reading {ingress_manifest}"))?;
            detail(&format!("applying {} objects", objects.len()));
            apply(&client, &objects).await?;
            if let Err(e) =
                wait_for_deployment(&client, INGRESS_NAMESPACE, INGRESS_DEPLOYMENT).await
            {
                problems.push(format!(
                    "ingress-nginx is not ready: {e:#}; see `kubectl --context {} -n {INGRESS_NAMESPACE} get pods`",
                    settings.context()
                ));
            }
        }
    }

    // 4. The webhook, running the agent image named by its content.
    if webhook {
        let registry = super::target::ClusterRegistry {
            push: settings.registry.clone(),
            pull: settings.registry.in_cluster(),
            from: "lks.yaml".into(),
        };
        let image = crate::agent_image::publish(&docker, &registry, &|_: &str| {}).await?;
        step(&format!(
            "the agent's admission webhook ({}/{}), running {image}",
            webhook_install::NAMESPACE,
            webhook_install::NAME
        ));
        if let Err(e) = webhook_install::install(&client, &image).await {
            problems.push(format!(
                "the webhook is not ready: {e:#}; see `kubectl --context {} -n {} get pods` \
                 (until it is, pods are created without the agent)",
                settings.context(),
                webhook_install::NAMESPACE
            ));
        }
    }

    if !problems.is_empty() {
        bail!(
            "the cluster {name} exists but is not complete:\n  - {}",
            problems.join("\n  - ")
        );
    }
    println!(
        "cluster {name} ready: kube context {}, Kubernetes {}",
        settings.context(),
        settings.kubernetes_version
    );
    Ok(())
}

/// Connects the registry container to kind's network (unless it is already).
async fn connect_to_kind_network(docker: &Docker, container: &str) -> anyhow::Result<()> {
    let inspected = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(EngineError::api(format!("inspecting {container}")))?;
    let connected = inspected
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|n| n.contains_key(KIND_NETWORK));
    if connected {
        return Ok(());
    }
    detail(&format!(
        "docker network connect {KIND_NETWORK} {container}"
    ));
    match docker
        .connect_network(
            KIND_NETWORK,
            bollard::models::NetworkConnectRequest {
                container: Some(container.to_string()),
                endpoint_config: None,
            },
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(EngineError::api(format!(
            "connecting {container} to the network {KIND_NETWORK}"
        ))(e)
        .into()),
    }
}

/// Writes `content` to the node's `certs.d/localhost:PORT/hosts.toml` (node
/// images have a shell; the content travels as an argument, not through it).
async fn write_hosts_toml(
    docker: &Docker,
    node: &str,
    port: u16,
    content: &str,
) -> anyhow::Result<()> {
    let dir = hosts_toml_dir(port);
    detail(&format!("{node}: {dir}/hosts.toml"));
    let cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        r#"mkdir -p "$1" && printf '%s' "$2" > "$1/hosts.toml""#.to_string(),
        "sh".to_string(),
        dir.clone(),
        content.to_string(),
    ];
    let output = exec(docker, node, cmd).await?;
    if output.0 != 0 {
        bail!(
            "writing {dir}/hosts.toml in the node {node} failed (exit {}): {}",
            output.0,
            output.1.trim()
        );
    }
    Ok(())
}

/// Runs `cmd` in a container: (exit code, output).
async fn exec(docker: &Docker, container: &str, cmd: Vec<String>) -> anyhow::Result<(i64, String)> {
    use futures::StreamExt;
    let doing = format!("running {:?} in {container}", cmd.join(" "));
    let created = docker
        .create_exec(
            container,
            bollard::models::ExecConfig {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(EngineError::api(doing.clone()))?;
    let mut text = String::new();
    if let bollard::exec::StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None::<bollard::exec::StartExecOptions>)
        .await
        .map_err(EngineError::api(doing.clone()))?
    {
        while let Some(chunk) = output.next().await {
            text.push_str(&chunk.map_err(EngineError::api(doing.clone()))?.to_string());
        }
    }
    let inspected = docker
        .inspect_exec(&created.id)
        .await
        .map_err(EngineError::api(doing))?;
    Ok((inspected.exit_code.unwrap_or(-1), text))
}

/// Whether the kubeconfig (`$KUBECONFIG`, else `~/.kube/config`) has `context`.
fn context_exists(context: &str) -> bool {
    ::kube::config::Kubeconfig::read()
        .map(|k| k.contexts.iter().any(|c| c.name == context))
        .unwrap_or(false)
}

/// A client for the kube context `context`.
async fn kube_client(context: &str) -> anyhow::Result<::kube::Client> {
    let options = ::kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = ::kube::Config::from_kubeconfig(&options)
        .await
        .with_context(|| {
            format!("reading the kube context {context} ($KUBECONFIG, else ~/.kube/config)")
        })?;
    super::target::client(config)
        .with_context(|| format!("making a client for the kube context {context}"))
}

/// Waits until the API server answers.
async fn wait_for_api(client: &::kube::Client, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + API_TIMEOUT;
    let mut said = false;
    loop {
        match tokio::time::timeout(CHECK_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if Instant::now() > deadline => {
                bail!(
                    "the API server of the cluster {name} does not answer after {} s: {e}",
                    API_TIMEOUT.as_secs()
                )
            }
            Err(_) if Instant::now() > deadline => bail!(
                "the API server of the cluster {name} does not answer after {} s",
                API_TIMEOUT.as_secs()
            ),
            _ => {
                if !said {
                    detail("waiting for the API server");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A manifest from a URL (`http://`, `https://`) or a file.
async fn read_manifest(source: &str) -> anyhow::Result<String> {
    if source.starts_with("https://") || source.starts_with("http://") {
        fetch(source).await
    } else {
        tokio::fs::read_to_string(source)
            .await
            .with_context(|| format!("reading {source}"))
    }
}

/// Fetches a URL over HTTPS (kube's client, pointed at the URL's host; TLS
/// verified against the system's roots).
async fn fetch(url: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let base: hyper::Uri = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .with_context(|| format!("bad URL {url}"))?;
    let mut config = ::kube::Config::new(base);
    config.connect_timeout = Some(Duration::from_secs(15));
    config.read_timeout = Some(Duration::from_secs(60));
    let client = ::kube::Client::try_from(config).context("making an HTTPS client")?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let request = hyper::Request::get(path)
        .body(Vec::new())
        .context("building the request")?;
    tokio::time::timeout(Duration::from_secs(90), client.request_text(request))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 90 s"))?
        .map_err(anyhow::Error::new)
}

/// Applies `objects` in order with server-side apply (field manager `lks`,
/// taking over fields others set; [`super::apply::apply`]).
pub async fn apply(client: &::kube::Client, objects: &[Value]) -> anyhow::Result<()> {
    for object in objects {
        super::apply::apply(client, "default", object).await?;
    }
    Ok(())
}

/// Whether a Deployment has rolled out ([`lks_k8s::rollout::rollout`]). `Err`
/// says why not.
fn rolled_out(d: &Deployment) -> Result<(), String> {
    use lks_k8s::rollout::{Rollout, rollout};
    let mut o = serde_json::to_value(d).map_err(|e| e.to_string())?;
    o["kind"] = "Deployment".into();
    match rollout(&o) {
        Some(Rollout::Done) | None => Ok(()),
        Some(Rollout::Waiting(why)) | Some(Rollout::Stalled(why)) => Err(why),
    }
}

/// Waits until the Deployment `ns/name` has rolled out.
pub(super) async fn wait_for_deployment(
    client: &::kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    let mut last = String::new();
    loop {
        let why = match api.get_opt(name).await {
            Ok(Some(d)) => match rolled_out(&d) {
                Ok(()) => {
                    detail(&format!("{ns}/{name} is ready"));
                    return Ok(());
                }
                Err(why) => why,
            },
            Ok(None) => "it does not exist".to_string(),
            Err(e) => e.to_string(),
        };
        if why != last {
            detail(&format!("waiting for {ns}/{name}: {why}"));
            last = why.clone();
        }
        if Instant::now() > deadline {
            bail!(
                "{ns}/{name} is not ready after {} s ({why})",
                ROLLOUT_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `lks cluster delete`.
async fn delete(settings: &Settings) -> anyhow::Result<()> {
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

/// `lks cluster status`: one line per part.
async fn status(settings: &Settings) -> anyhow::Result<()> {
    let name = settings.name.as_str();
    let context = settings.context();
    let line = |what: &str, state: &str| println!("{what:<18} {state}");

    // Does the cluster exist? kind says so; without kind, Docker's labels.
    let docker = docker::connect().await;
    let nodes = match &docker {
        Ok(d) => Some(node_containers(d, name).await?),
        Err(_) => None,
    };
    let exists = match which("kind") {
        Some(kind) => {
            let exists = kind_clusters(&kind).await?.iter().any(|c| c == name);
            line(
                "kind cluster",
                &if exists {
                    format!("{name} exists")
                } else {
                    format!("{name} does not exist")
                },
            );
            exists
        }
        None => match &nodes {
            Some(nodes) => {
                let exists = !nodes.is_empty();
                line(
                    "kind cluster",
                    &format!(
                        "{name} {} (kind is not installed: judged by Docker's node containers)",
                        if exists { "exists" } else { "does not exist" }
                    ),
                );
                exists
            }
            None => {
                line(
                    "kind cluster",
                    &format!("{name}: unknown (kind is not installed and Docker does not answer)"),
                );
                false
            }
        },
    };
    if let Some(nodes) = &nodes
        && exists
    {
        let stopped: Vec<&str> = nodes
            .iter()
            .filter(|n| !n.running)
            .map(|n| n.name.as_str())
            .collect();
        let images: Vec<&str> = {
            let mut i: Vec<&str> = nodes.iter().map(|n| n.image.as_str()).collect();
            i.sort_unstable();
            i.dedup();
            i
        };
        line(
            "node containers",
            &if stopped.is_empty() {
                format!("{} running ({})", nodes.len(), images.join(", "))
            } else {
                format!(
                    "stopped: {} (`lks cluster create` starts them)",
                    stopped.join(", ")
                )
            },
        );
    }
    let has_context = context_exists(&context);
    line(
        "kube context",
        &if has_context {
            format!("{context} present")
        } else {
            format!("{context} missing")
        },
    );
    if !exists {
        if let Err(e) = docker {
            return Err(e).context(format!(
                "cannot tell whether the cluster {name} exists without kind or Docker"
            ));
        }
        bail!("the cluster {name} does not exist; create it with `lks cluster create`");
    }
    if !has_context {
        bail!(
            "the cluster {name} exists but the kube context {context} is missing; \
             `lks cluster create` (or `kind export kubeconfig --name {name}`) writes it"
        );
    }
    let client = kube_client(&context).await?;
    let checks = Checks { client: &client };
    let api_ok = checks.nodes(&line).await;
    if !api_ok {
        bail!("the API server of the cluster {name} does not answer");
    }
    checks.registry(settings, &line).await;
    checks.ingress(&line).await;
    checks.webhook(&line).await;
    Ok(())
}

/// The checks `status` runs against the API server.
struct Checks<'a> {
    client: &'a ::kube::Client,
}

impl Checks<'_> {
    /// Nodes Ready; false when the API server does not answer.
    async fn nodes(&self, line: &dyn Fn(&str, &str)) -> bool {
        let api: Api<Node> = Api::all(self.client.clone());
        match tokio::time::timeout(CHECK_TIMEOUT, api.list(&Default::default())).await {
            Ok(Ok(list)) => {
                let ready = |n: &Node| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                };
                let not_ready: Vec<String> = list
                    .items
                    .iter()
                    .filter(|n| !ready(n))
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                let total = list.items.len();
                line(
                    "nodes",
                    &if not_ready.is_empty() {
                        format!("{total}/{total} Ready")
                    } else {
                        format!(
                            "{}/{total} Ready (not ready: {})",
                            total - not_ready.len(),
                            not_ready.join(", ")
                        )
                    },
                );
                true
            }
            Ok(Err(e)) => {
                line("nodes", &format!("cannot list them: {e}"));
                true
            }
            Err(_) => {
                line(
                    "nodes",
                    &format!(
                        "the API server does not answer within {} s",
                        CHECK_TIMEOUT.as_secs()
                    ),
                );
                false
            }
        }
    }

    /// The registry answers and is announced.
    async fn registry(&self, settings: &Settings, line: &dyn Fn(&str, &str)) {
        let answers = if settings.registry.answers().await {
            format!("{} answers", settings.registry.address)
        } else {
            format!(
                "{} does not answer (`lks registry start`)",
                settings.registry.address
            )
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-public");
        let announced = match tokio::time::timeout(
            CHECK_TIMEOUT,
            api.get_opt("local-registry-hosting"),
        )
        .await
        {
            Ok(Ok(Some(cm))) => {
                let host = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get("localRegistryHosting.v1"))
                    .and_then(|v| serde_yaml::from_str::<Value>(v).ok())
                    .and_then(|v| v["host"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                format!("ConfigMap kube-public/local-registry-hosting present (host {host})")
            }
            Ok(Ok(None)) => {
                "ConfigMap kube-public/local-registry-hosting missing (`lks cluster create`)".into()
            }
            Ok(Err(e)) => format!("ConfigMap unreadable: {e}"),
            Err(_) => "ConfigMap: no answer".into(),
        };
        line("registry", &format!("{answers}; {announced}"));
    }

    /// ingress-nginx's controller rolled out.
    async fn ingress(&self, line: &dyn Fn(&str, &str)) {
        let text = match self.deployment(INGRESS_NAMESPACE, INGRESS_DEPLOYMENT).await {
            Ok(Some(d)) => match rolled_out(&d) {
                Ok(()) => format!("ready ({INGRESS_NAMESPACE}/{INGRESS_DEPLOYMENT})"),
                Err(why) => format!("not ready: {why}"),
            },
            Ok(None) => "not installed (`lks cluster create` installs it)".into(),
            Err(e) => e,
        };
        line("ingress-nginx", &text);
    }

    /// The webhook's configuration and Deployment.
    async fn webhook(&self, line: &dyn Fn(&str, &str)) {
        line("webhook", &webhook_status(self.client).await);
    }
}

/// Whether the webhook is installed and serving, one line.
pub(super) async fn webhook_status(client: &::kube::Client) -> String {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let configured =
        tokio::time::timeout(CHECK_TIMEOUT, api.get_opt(webhook_install::CONFIGURATION)).await;
    match configured {
        Ok(Ok(None)) => {
            "not installed (`lks webhook install`, or `lks cluster create --webhook`, installs it)"
                .to_string()
        }
        Ok(Ok(Some(_))) => match (Checks { client })
            .deployment(webhook_install::NAMESPACE, webhook_install::NAME)
            .await
        {
            Ok(Some(d)) => match rolled_out(&d) {
                Ok(()) => format!(
                    "installed and ready ({})",
                    d.spec
                        .template
                        .spec
                        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
                        .unwrap_or_default()
                ),
                Err(why) => format!(
                    "installed, not ready: {why} (pods are created without the agent meanwhile)"
                ),
            },
            Ok(None) => format!(
                "configured but its Deployment {}/{} is missing (`lks webhook install`)",
                webhook_install::NAMESPACE,
                webhook_install::NAME
            ),
            Err(e) => e,
        },
        Ok(Err(e)) => format!("unreadable: {e}"),
        Err(_) => "no answer".into(),
    }
}

impl Checks<'_> {
    async fn deployment(&self, ns: &str, name: &str) -> Result<Option<Deployment>, String> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        match tokio::time::timeout(CHECK_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(format!("unreadable: {e}")),
            Err(_) => Err("no answer".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_config_pins_the_version_and_wires_ingress_and_the_registry() {
        let text = kind_config("dev", "v1.33.2", Some(5001));
        let v: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["kind"], "Cluster");
        assert_eq!(v["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(v["name"], "dev");
        let node = &v["nodes"][0];
        assert_eq!(node["role"], "control-plane");
        assert_eq!(node["image"], "kindest/node:v1.33.2");
        assert_eq!(node["labels"]["ingress-ready"], "true");
        let ports: Vec<(i64, i64, &str)> = node["extraPortMappings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["containerPort"].as_i64().unwrap(),
                    p["hostPort"].as_i64().unwrap(),
                    p["protocol"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(ports, [(80, 80, "TCP"), (443, 443, "TCP")]);
        let containerd = v["containerdConfigPatches"][0].as_str().unwrap();
        assert!(
            containerd.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]")
                && containerd.contains("config_path = \"/etc/containerd/certs.d\""),
            "{containerd}"
        );
        assert!(text.contains("localhost:5001"), "{text}");
        assert!(!kind_config("dev", "1.33.2", None).contains("localhost:"));
    }

    #[test]
    fn hosts_toml_maps_localhost_port_to_the_registry_container() {
        let text = registry_hosts_toml("lks-registry-5001", 5001);
        let hosts: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .collect();
        assert_eq!(hosts, ["[host.\"http://lks-registry-5001:5000\"]"]);
        assert_eq!(
            hosts_toml_dir(5001),
            "/etc/containerd/certs.d/localhost:5001"
        );
    }

    #[test]
    fn configmap_follows_kep_1755() {
        let cm = registry_configmap(5001);
        assert_eq!(cm["metadata"]["namespace"], "kube-public");
        assert_eq!(cm["metadata"]["name"], "local-registry-hosting");
        let hosting: Value =
            serde_yaml::from_str(cm["data"]["localRegistryHosting.v1"].as_str().unwrap()).unwrap();
        assert_eq!(hosting["host"], "localhost:5001");
        assert_eq!(hosting["help"], LOCAL_REGISTRY_HELP);
    }

    #[test]
    fn manifests_split_into_objects() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b, namespace: a}\n";
        let objects = crate::kube::render::parse_manifest(text).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["kind"], "ServiceAccount");
        assert!(crate::kube::render::parse_manifest("just: a map\n").is_err());
    }

    #[test]
    fn rollout_needs_every_replica_available_and_up_to_date() {
        let d = |generation: i64, observed: i64, available: i32, updated: i32| -> Deployment {
            serde_json::from_value(json!({
                "metadata": { "name": "x", "generation": generation },
                "spec": { "replicas": 1, "selector": {}, "template": {} },
                "status": {
                    "observedGeneration": observed,
                    "availableReplicas": available,
                    "updatedReplicas": updated,
                },
            }))
            .unwrap()
        };
        assert!(rolled_out(&d(2, 2, 1, 1)).is_ok());
        assert!(rolled_out(&d(2, 1, 1, 1)).is_err());
        assert!(rolled_out(&d(2, 2, 0, 1)).is_err());
        assert!(rolled_out(&d(2, 2, 1, 0)).is_err());
    }

    /// A mock API server: answers discovery for the kinds asked, and records
    /// every server-side apply.
    mod mock {
        use http_body_util::BodyExt;
        use hyper::{Request, Response};
        use kube::client::Body;
        use serde_json::{Value, json};

        pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

        pub fn client() -> (kube::Client, Handle) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            (kube::Client::new(service, "default"), handle)
        }

        fn resources(path: &str) -> Value {
            let r = |name: &str, kind: &str, namespaced: bool| {
                json!({ "name": name, "singularName": "", "kind": kind, "namespaced": namespaced,
                        "verbs": ["create", "get", "list", "patch"] })
            };
            let (gv, list) = match path {
                "/api/v1" => (
                    "v1",
                    vec![
                        r("namespaces", "Namespace", false),
                        r("configmaps", "ConfigMap", true),
                        r("secrets", "Secret", true),
                        r("services", "Service", true),
                    ],
                ),
                "/apis/apps/v1" => ("apps/v1", vec![r("deployments", "Deployment", true)]),
                "/apis/admissionregistration.k8s.io/v1" => (
                    "admissionregistration.k8s.io/v1",
                    vec![r(
                        "mutatingwebhookconfigurations",
                        "MutatingWebhookConfiguration",
                        false,
                    )],
                ),
                other => panic!("unexpected discovery of {other}"),
            };
            json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list })
        }

        /// One request seen by the mock.
        #[derive(Debug)]
        pub struct Seen {
            pub method: String,
            pub path: String,
            pub query: String,
            pub content_type: String,
            pub body: Value,
        }

        /// Serves until the client is dropped; returns the PATCH requests.
        pub async fn serve(mut handle: Handle) -> Vec<Seen> {
            let mut seen = vec![];
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let path = parts.uri.path().to_string();
                if parts.method == hyper::Method::GET {
                    let answer = serde_json::to_vec(&resources(&path)).unwrap();
                    send.send_response(Response::new(Body::from(answer)));
                    continue;
                }
                let body: Value = serde_json::from_slice(&body).unwrap();
                send.send_response(Response::new(Body::from(
                    serde_json::to_vec(&body).unwrap(),
                )));
                seen.push(Seen {
                    method: parts.method.to_string(),
                    path,
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    body,
                });
            }
            seen
        }
    }

    #[tokio::test]
    async fn apply_uses_server_side_apply_on_the_right_paths() {
        let (client, handle) = mock::client();
        let server = tokio::spawn(mock::serve(handle));
        let mut objects = vec![registry_configmap(5000)];
        objects.extend(webhook_install::webhook_objects("img", "CA", "CERT", "KEY"));
        apply(&client, &objects).await.unwrap();
        drop(client);
        let seen = server.await.unwrap();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/api/v1/namespaces/kube-public/configmaps/local-registry-hosting",
                "/api/v1/namespaces/lks-system",
                "/api/v1/namespaces/lks-system/secrets/lks-webhook-tls",
                "/apis/apps/v1/namespaces/lks-system/deployments/lks-webhook",
                "/api/v1/namespaces/lks-system/services/lks-webhook",
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lks-agent-injector",
            ]
        );
        for (s, object) in seen.iter().zip(&objects) {
            assert_eq!(s.method, "PATCH");
            assert_eq!(s.content_type, "application/apply-patch+yaml");
            assert!(s.query.contains("fieldManager=lks"), "{}", s.query);
            assert!(s.query.contains("force=true"), "{}", s.query);
            assert_eq!(&s.body, object, "the object is sent as it is");
        }
    }
}
