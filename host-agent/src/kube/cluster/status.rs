//! `lks cluster status`: each part of the cluster checked and what is
//! missing named, with the command that makes it.

use super::*;

/// `lks cluster status`: one line per part.
pub(super) async fn status(settings: &Settings) -> anyhow::Result<()> {
    let name = settings.name.as_str();
    let context = settings.context();
    let line = |what: &str, state: &str| println!("{what:<18} {state}");

    // Does the cluster exist? kind says so; without kind, Docker's labels.
    let docker = docker::connect().await;
    let nodes = match &docker {
        Ok(d) => Some(node_containers(d, name).await?),
        Err(_) => None,
    };
    let exists = match ::which::which("kind").ok() {
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
                    .and_then(|v| crate::yaml::from_str::<Value>(v).ok())
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
pub(crate) async fn webhook_status(client: &::kube::Client) -> String {
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
