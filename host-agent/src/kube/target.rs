//! Which cluster and namespace lks works in, and whether it may: the
//! kubeconfig context (`--context`, else `kube.context` in `lks.yaml`, else
//! the current one), the namespace (`--namespace`, `kube.namespace`, else the
//! context's own), and the guard that keeps lks from applying to a cluster
//! that is not a developer's own (Tilt's `allow_k8s_contexts`): only contexts
//! that look local, or that `lks.yaml` lists, are accepted.
//!
//! Also where the cluster pulls images from, as the cluster itself says it
//! (KEP-1755: the ConfigMap `kube-public/local-registry-hosting`).

use crate::config;
use crate::registry::Registry;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// What the command line says (overrides `lks.yaml`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// The kubeconfig context to use [default: `kube.context` in lks.yaml, else the current one].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace for objects that name none [default: `kube.namespace`, else the context's].
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
}

impl Selection {
    /// Whether anything was chosen (which implies the kube runtime).
    pub fn is_set(&self) -> bool {
        self.context.is_some() || self.namespace.is_some()
    }
}

/// The cluster and namespace lks works in.
#[derive(Clone)]
pub struct Target {
    /// The client, for the chosen context.
    pub client: Client,
    /// The context's name.
    pub context: String,
    /// The API server's URL.
    pub server: String,
    /// The namespace for objects that name none.
    pub namespace: String,
}

/// Why lks will not talk to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No kubeconfig, or no context in it.
    #[error(
        "no Kubernetes cluster to talk to: {0} (create the local one with `lks cluster create`, or point KUBECONFIG at one)"
    )]
    NoKubeconfig(String),
    /// The context asked for is not in the kubeconfig.
    #[error("the kubeconfig has no context {name:?} (it has: {known})")]
    UnknownContext {
        /// The context asked for.
        name: String,
        /// The contexts it has.
        known: String,
    },
    /// The context does not look like a developer's own cluster.
    #[error(
        "lks will not change the cluster of context {context:?} ({server}): it does not look like a local \
         development cluster (kind-*, k3d-*, minikube, docker-desktop, or a server on this machine). If it is \
         meant for development, allow it in lks.yaml:\n  kube:\n    allow_contexts: [{context}]"
    )]
    NotLocal {
        /// The context.
        context: String,
        /// Its API server.
        server: String,
    },
    /// The API server refused or failed.
    #[error("{doing}: {cause}")]
    Cluster {
        /// What lks was doing.
        doing: String,
        /// Why.
        cause: super::ClusterError,
    },
    /// The cluster's KEP-1755 ConfigMap holds no usable registry.
    #[error("{HOSTING_NAMESPACE}/{HOSTING_CONFIGMAP}: {HOSTING_KEY} is not valid: {0}")]
    BadHosting(HostingError),
    /// The registry it names is not one.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Why a `localRegistryHosting.v1` value is not usable.
#[derive(Debug, thiserror::Error)]
pub enum HostingError {
    /// It is not YAML of that shape.
    #[error(transparent)]
    Yaml(#[from] crate::yaml::YamlError),
    /// Its `host` is empty.
    #[error("`host` is empty")]
    NoHost,
}

/// Whether a context looks like a developer's own cluster: kind, k3d,
/// minikube, Docker Desktop, Rancher Desktop, or an API server on loopback.
pub fn looks_local(context: &str, server: &str) -> bool {
    let by_name = context.starts_with("kind-")
        || context.starts_with("k3d-")
        || matches!(
            context,
            "minikube" | "docker-desktop" | "docker-for-desktop" | "rancher-desktop" | "orbstack"
        );
    by_name || server_on_loopback(server)
}

/// Whether a server URL's host is this machine.
fn server_on_loopback(server: &str) -> bool {
    let Ok(uri) = server.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The context lks would use, without connecting: its name and server.
pub fn choose(
    ws: &config::Kube,
    sel: &Selection,
) -> Result<(Kubeconfig, String, String), TargetError> {
    let kubeconfig = Kubeconfig::read().map_err(|e| TargetError::NoKubeconfig(e.to_string()))?;
    let name = sel
        .context
        .clone()
        .or_else(|| ws.context.clone())
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or_else(|| {
            TargetError::NoKubeconfig("the kubeconfig names no current context".into())
        })?;
    let Some(context) = kubeconfig.contexts.iter().find(|c| c.name == name) else {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(TargetError::UnknownContext {
            name,
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let cluster = context.context.as_ref().map(|c| c.cluster.clone());
    let server = kubeconfig
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster.as_ref())
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_default();
    Ok((kubeconfig, name, server))
}

/// Whether lks may change the cluster of `context`: it looks local, or
/// `lks.yaml` allows it.
pub fn permitted(context: &str, server: &str, allowed: &[String]) -> Result<(), TargetError> {
    if looks_local(context, server) || allowed.iter().any(|a| a == context) {
        return Ok(());
    }
    Err(TargetError::NotLocal {
        context: context.to_string(),
        server: server.to_string(),
    })
}

/// Connects to the chosen context. With `change`, refuses a context that is
/// not [`permitted`] (lks is about to apply or delete there), before any
/// connection.
pub async fn connect(
    ws: &config::Kube,
    sel: &Selection,
    change: bool,
) -> Result<Target, TargetError> {
    let (kubeconfig, context, server) = choose(ws, sel)?;
    if change {
        permitted(&context, &server, &ws.allow_contexts)?;
    }
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| TargetError::NoKubeconfig(format!("context {context:?}: {e}")))?;
    let namespace = sel
        .namespace
        .clone()
        .or_else(|| ws.namespace.clone())
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = client(config)
        .map_err(|e| TargetError::NoKubeconfig(format!("context {context:?}: {e}")))?;
    Ok(Target {
        client,
        context,
        server,
        namespace,
    })
}

/// A client for `config`, as kube's own but with TCP_NODELAY on its
/// connections to the API server: kube's builder leaves Nagle's algorithm
/// on, which with delayed ACKs stalls every small exchange through a pod
/// port-forward by ~40 ms (a one-file sync took 51 ms instead of 10).
pub fn client(config: kube::Config) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(
            |e: hyper_util::client::legacy::Error| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(e)
            },
        )
        .service(hyper);
    Ok(Client::new(service, config.default_namespace))
}

impl Target {
    /// `context "NAME" (SERVER), namespace NS`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "context {:?} ({}), namespace {}",
            self.context, self.server, self.namespace
        )
    }

    /// Creates the namespace when it does not exist (`--namespace` for a
    /// branch environment). Returns whether it was created.
    pub async fn ensure_namespace(&self) -> Result<bool, TargetError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(&self.namespace).await {
            Ok(Some(_)) => return Ok(false),
            Ok(None) => {}
            // No right to read namespaces: assume it is there; applying says if not.
            Err(kube::Error::Api(e)) if e.code == 403 => return Ok(false),
            Err(e) => {
                return Err(TargetError::Cluster {
                    doing: format!("reading namespace {}", self.namespace),
                    cause: crate::kube::explain(e),
                });
            }
        }
        let ns = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                // Not `lks.dev/managed`: `lks down` deletes what lks applied
                // in it, never the namespace and whatever else it holds.
                "labels": { "app.kubernetes.io/created-by": "lks" },
            },
        });
        api.patch(
            &self.namespace,
            &PatchParams::apply(lks_k8s::labels::FIELD_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .map_err(|e| TargetError::Cluster {
            doing: format!("creating namespace {}", self.namespace),
            cause: crate::kube::explain(e),
        })?;
        Ok(true)
    }

    /// Where to push images and how the cluster's nodes name them: the
    /// cluster's KEP-1755 ConfigMap when it has one, else `fallback` (the
    /// registry of `lks.yaml`), which a kind cluster made by `lks cluster
    /// create` pulls as `localhost:PORT`.
    pub async fn registry(&self, fallback: Registry) -> Result<ClusterRegistry, TargetError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), HOSTING_NAMESPACE);
        let hosting = match api.get_opt(HOSTING_CONFIGMAP).await {
            Ok(cm) => cm
                .and_then(|cm| cm.data)
                .and_then(|d| d.get(HOSTING_KEY).cloned()),
            // Not allowed to read it (RBAC): the workspace's registry.
            Err(kube::Error::Api(e)) if e.code == 403 => None,
            Err(e) => {
                return Err(TargetError::Cluster {
                    doing: format!("reading {HOSTING_NAMESPACE}/{HOSTING_CONFIGMAP}"),
                    cause: crate::kube::explain(e),
                });
            }
        };
        let Some(text) = hosting else {
            let pull = fallback.in_cluster();
            return Ok(ClusterRegistry {
                push: fallback,
                pull,
                from: "lks.yaml".into(),
            });
        };
        let hosting = Hosting::parse(&text).map_err(TargetError::BadHosting)?;
        let push = Registry::parse(&hosting.host)?;
        let pull = hosting
            .host_from_container_runtime
            .clone()
            .unwrap_or_else(|| hosting.host.clone());
        Ok(ClusterRegistry {
            push,
            pull,
            from: format!("{HOSTING_NAMESPACE}/{HOSTING_CONFIGMAP}"),
        })
    }
}

/// The namespace of the KEP-1755 ConfigMap.
pub const HOSTING_NAMESPACE: &str = "kube-public";
/// The KEP-1755 ConfigMap.
pub const HOSTING_CONFIGMAP: &str = "local-registry-hosting";
/// Its key.
pub const HOSTING_KEY: &str = "localRegistryHosting.v1";

/// The registry as a cluster uses it.
#[derive(Debug, Clone)]
pub struct ClusterRegistry {
    /// Where lks pushes (from this machine).
    pub push: Registry,
    /// How the nodes' container runtime names it in image references.
    pub pull: String,
    /// Where this came from, for messages.
    pub from: String,
}

impl ClusterRegistry {
    /// An image reference as pushed, renamed as the cluster pulls it.
    pub fn pulled_as(&self, pushed: &str) -> String {
        match pushed.strip_prefix(&self.push.address) {
            Some(rest) if rest.starts_with('/') => format!("{}{rest}", self.pull),
            _ => pushed.to_string(),
        }
    }
}

/// KEP-1755's `localRegistryHosting.v1`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hosting {
    /// The registry as seen from the developer's machine (where to push).
    pub host: String,
    /// As the cluster's container runtime sees it (what pods name).
    #[serde(default)]
    pub host_from_container_runtime: Option<String>,
    /// As seen from pods in the cluster.
    #[serde(default)]
    pub host_from_cluster_network: Option<String>,
    /// Where to read more.
    #[serde(default)]
    pub help: Option<String>,
}

impl Hosting {
    /// Parses the ConfigMap's value (YAML).
    pub fn parse(text: &str) -> Result<Hosting, HostingError> {
        let h: Hosting = crate::yaml::from_str(text)?;
        if h.host.trim().is_empty() {
            return Err(HostingError::NoHost);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_contexts_are_recognised_by_name_or_by_a_server_on_this_machine() {
        for (ctx, server) in [
            ("kind-lks", "https://10.1.2.3:6443"),
            ("k3d-dev", "https://0.0.0.0:1234"),
            ("minikube", "https://192.168.49.2:8443"),
            ("docker-desktop", "https://kubernetes.docker.internal:6443"),
            ("lks-test", "https://127.0.0.1:6443"),
            ("anything", "https://localhost:6443"),
            ("v6", "https://[::1]:6443"),
        ] {
            assert!(looks_local(ctx, server), "{ctx} {server}");
        }
        for (ctx, server) in [
            ("prod", "https://api.example.com"),
            ("gke_project_zone_cluster", "https://35.1.2.3"),
            ("kindly", "https://10.0.0.1:6443"),
            ("localhost", "https://10.0.0.1:6443"),
            ("broken", "not a url"),
        ] {
            assert!(!looks_local(ctx, server), "{ctx} {server}");
        }
    }

    #[test]
    fn a_context_that_is_not_local_is_refused_unless_lks_yaml_allows_it() {
        let server = "https://api.staging.example.com:6443";
        let e = permitted("staging", server, &[]).unwrap_err().to_string();
        assert!(e.contains("\"staging\"") && e.contains(server), "{e}");
        assert!(e.contains("allow_contexts: [staging]"), "says how: {e}");
        assert!(permitted("staging", server, &["staging".into()]).is_ok());
        assert!(permitted("staging", server, &["stage".into()]).is_err());
        assert!(permitted("kind-lks", server, &[]).is_ok());
    }

    #[test]
    fn kep_1755_hosting_is_read_with_its_optional_fields() {
        let h = Hosting::parse(
            "host: \"localhost:5001\"\nhostFromContainerRuntime: \"registry:5000\"\nhelp: \"https://x\"\n",
        )
        .unwrap();
        assert_eq!(h.host, "localhost:5001");
        assert_eq!(
            h.host_from_container_runtime.as_deref(),
            Some("registry:5000")
        );
        assert_eq!(h.host_from_cluster_network, None);
        assert!(Hosting::parse("help: x\n").is_err());
        assert!(Hosting::parse("host: \"\"\n").is_err());
    }

    #[test]
    fn pushed_images_are_renamed_as_the_cluster_pulls_them() {
        let r = ClusterRegistry {
            push: Registry::parse("127.0.0.1:5000").unwrap(),
            pull: "localhost:5000".into(),
            from: "test".into(),
        };
        assert_eq!(
            r.pulled_as("127.0.0.1:5000/web:dev-1"),
            "localhost:5000/web:dev-1"
        );
        assert_eq!(
            r.pulled_as("127.0.0.1:50001/web:1"),
            "127.0.0.1:50001/web:1"
        );
        assert_eq!(r.pulled_as("docker.io/web:1"), "docker.io/web:1");
    }
}
