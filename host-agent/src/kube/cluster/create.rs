//! `lks cluster create`: kind's cluster, the registry wired in, ingress and
//! (with `--webhook`) the agent's webhook, each applied server-side so a
//! second run repairs and changes nothing else.

use super::*;

/// `lks cluster create`.
pub(super) async fn create(
    settings: &Settings,
    webhook: bool,
    ingress_manifest: &str,
) -> anyhow::Result<()> {
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
            if crate::docker::reference::Reference::parse(&node.image).without_digest() != wanted {
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
            let objects = crate::kube::render::parse_manifest(&text)
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
        let registry = crate::kube::target::ClusterRegistry {
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

/// Whether the kubeconfig (`$KUBECONFIG`, else `~/.kube/config`) has `context`.
pub(super) fn context_exists(context: &str) -> bool {
    ::kube::config::Kubeconfig::read()
        .map(|k| k.contexts.iter().any(|c| c.name == context))
        .unwrap_or(false)
}

/// A client for the kube context `context`.
pub(super) async fn kube_client(context: &str) -> anyhow::Result<::kube::Client> {
    let options = ::kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = ::kube::Config::from_kubeconfig(&options)
        .await
        .with_context(|| {
            format!("reading the kube context {context} ($KUBECONFIG, else ~/.kube/config)")
        })?;
    crate::kube::target::client(config)
        .with_context(|| format!("making a client for the kube context {context}"))
}

/// Waits until the API server answers.
pub(super) async fn wait_for_api(client: &::kube::Client, name: &str) -> anyhow::Result<()> {
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
pub(super) async fn read_manifest(source: &str) -> anyhow::Result<String> {
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
pub(super) async fn fetch(url: &str) -> anyhow::Result<String> {
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
        crate::kube::apply::apply(client, "default", object).await?;
    }
    Ok(())
}

/// Whether a Deployment has rolled out ([`lks_k8s::rollout::rollout`]). `Err`
/// says why not.
pub(super) fn rolled_out(d: &Deployment) -> Result<(), String> {
    use lks_k8s::rollout::{Rollout, rollout};
    let mut o = serde_json::to_value(d).map_err(|e| e.to_string())?;
    o["kind"] = "Deployment".into();
    match rollout(&o) {
        Some(Rollout::Done) | None => Ok(()),
        Some(Rollout::Waiting(why)) | Some(Rollout::Stalled(why)) => Err(why),
    }
}

/// Waits until the Deployment `ns/name` has rolled out, as `lks up` waits
/// for a rollout ([`crate::kube::apply::wait_rollout`]), for
/// [`ROLLOUT_TIMEOUT`] at most.
pub(crate) async fn wait_for_deployment(
    client: &::kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<()> {
    let deployment = crate::kube::apply::Applied {
        resource: ::kube::discovery::ApiResource::erase::<Deployment>(&()),
        namespaced: true,
        namespace: ns.into(),
        name: name.into(),
        object: json!({ "kind": "Deployment" }),
    };
    let say = |l: &str| detail(l);
    let wait = crate::kube::apply::wait_rollout(client, &deployment, None, &say);
    match tokio::time::timeout(ROLLOUT_TIMEOUT, wait).await {
        Ok(done) => done?,
        Err(_) => bail!(
            "{ns}/{name} is not ready after {} s (`kubectl -n {ns} describe deployment {name}` says why)",
            ROLLOUT_TIMEOUT.as_secs()
        ),
    }
    detail(&format!("{ns}/{name} is ready"));
    Ok(())
}
