//! What `create` makes, as text and objects: kind's cluster config, the
//! registry's hosts.toml for containerd, the KEP-1755 ConfigMap, and the
//! `--dry-run` that prints them.

use super::*;

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
pub(super) fn hosts_toml_dir(port: u16) -> String {
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
        out.push_str(&crate::yaml::to_string(o));
    }
    Ok(out)
}

/// A step's line.
pub(crate) fn step(text: &str) {
    println!("==> {text}");
}

/// A detail under a step.
pub(crate) fn detail(text: &str) {
    println!("    {text}");
}
