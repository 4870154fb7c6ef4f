//! What lks applies for a service: its `k8s:` manifests with the service's
//! image put in place of its name, lks's labels, and (for a live service) the
//! agent injected into the pod templates that opt in with
//! `lks.dev/agent: "true"`. Pure: everything it needs is passed in.

use crate::config::Service;
use crate::debug::Debugger;
use anyhow::bail;
use lks_k8s::inject::{self, ImageConfig, InjectOptions, Outcome};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// How long the app of a live pod waits for lks's first sync when no lks
/// connects (`lks.dev/wait-for-sync`).
pub const WAIT_FOR_SYNC_SECS: u32 = 10;

/// What `render` needs besides the service.
pub struct RenderOptions<'a> {
    /// The image the service's containers run (as the cluster pulls it), or
    /// None to leave image fields as written.
    pub image: Option<&'a str>,
    /// Inject the agent (the service is live updated).
    pub live: bool,
    /// The agent image the init container copies the agent from.
    pub agent_image: &'a str,
    /// The workspace label value ([`workspace_label`]).
    pub workspace: &'a str,
    /// ENTRYPOINT and CMD of an image, for containers without `command`.
    pub image_config: &'a dyn Fn(&str) -> Option<ImageConfig>,
}

/// The value of [`lks_k8s::labels::WORKSPACE`] for a workspace directory.
pub fn workspace_label(root: &Path) -> String {
    let h = blake3::hash(root.display().to_string().as_bytes());
    h.to_hex()[..16].to_string()
}

/// Why a manifest is not a list of Kubernetes objects.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It is not YAML (or holds what JSON cannot).
    #[error(transparent)]
    Yaml(#[from] crate::yaml::YamlError),
    /// A document is not an object with `apiVersion` and `kind`.
    #[error("document {0} is not a Kubernetes object")]
    NotAnObject(usize),
}

/// Why a service's objects could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A manifest could not be read.
    #[error("reading {}: {cause}", file.display())]
    Read {
        /// The manifest.
        file: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A manifest is not a list of objects.
    #[error("{}: {cause}", file.display())]
    Manifest {
        /// The manifest.
        file: PathBuf,
        /// Why.
        cause: ManifestError,
    },
    /// An object, a pod template or its metadata is not a mapping.
    #[error("{0}")]
    Shape(&'static str),
    /// The agent could not be injected.
    #[error("injecting the agent into {object}: {cause}")]
    Inject {
        /// The object.
        object: String,
        /// Why.
        cause: inject::InjectError,
    },
    /// `--debug`, and the app's command cannot be run under a debugger.
    #[error("{0}")]
    Debug(String),
    /// A live service without a pod template.
    #[error(
        "{0} is live updated but none of its manifests has a pod template (Deployment, StatefulSet, \
         Pod, ...) for the agent; list one under `k8s:`"
    )]
    NoPodTemplate(String),
}

/// Reads every YAML document of the service's manifests, in order.
pub fn load(service: &Service) -> Result<Vec<Value>, RenderError> {
    let mut out = vec![];
    for file in &service.k8s {
        let text = std::fs::read_to_string(file).map_err(|cause| RenderError::Read {
            file: file.clone(),
            cause,
        })?;
        out.extend(
            parse_manifest(&text).map_err(|cause| RenderError::Manifest {
                file: file.clone(),
                cause,
            })?,
        );
    }
    Ok(out)
}

/// The objects of a multi-document YAML manifest (empty documents skipped).
pub fn parse_manifest(text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut objects = vec![];
    for (i, value) in crate::yaml::documents(text)?.into_iter().enumerate() {
        match &value {
            Value::Null => {}
            Value::Object(o) if o.contains_key("apiVersion") && o.contains_key("kind") => {
                objects.push(value)
            }
            _ => return Err(ManifestError::NotAnObject(i + 1)),
        }
    }
    Ok(objects)
}

/// What [`render`] made.
pub struct Rendered {
    /// The service's objects as lks applies them.
    pub objects: Vec<Value>,
    /// The debugger its app runs under (`lks up --debug`), once chosen.
    pub debugger: Option<Debugger>,
}

/// The service's objects as lks applies them.
pub fn render(service: &Service, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let mut objects = load(service)?;
    let mut debugger = None;
    for o in &mut objects {
        let labels = o
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .ok_or(RenderError::Shape("an object without metadata"))?
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(l) = labels.as_object_mut() {
            l.insert(lks_k8s::labels::MANAGED.into(), "true".into());
            l.insert(lks_k8s::labels::WORKSPACE.into(), opts.workspace.into());
            l.insert(lks_k8s::labels::SERVICE.into(), service.name.clone().into());
        }
        if let Some(image) = opts.image {
            replace_images(o, &service.name, image);
        }
        if !service.entrypoint.is_empty() {
            override_entrypoint(o, service);
        }
        if service.debugging.is_some() && debugger.is_none() {
            debugger = run_under_debugger(o, service, opts.image_config)?;
        }
    }
    if opts.live {
        // A live service needs the agent: when none of its pod templates opts
        // in, the first one is opted in (its manifests stay as written).
        let annotated = objects.iter().any(|o| {
            lks_k8s::workload::pod_template(o).is_some_and(|t| {
                t.pointer(&format!(
                    "/metadata/annotations/{}",
                    inject::ANNOTATION_AGENT.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                    == Some("true")
            })
        });
        if !annotated
            && let Some(t) = objects
                .iter_mut()
                .find_map(lks_k8s::workload::pod_template_mut)
        {
            let meta = t
                .as_object_mut()
                .ok_or(RenderError::Shape("a pod template that is not a mapping"))?
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            let ann = meta
                .as_object_mut()
                .ok_or(RenderError::Shape(
                    "pod template metadata that is not a mapping",
                ))?
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(a) = ann.as_object_mut() {
                a.insert(inject::ANNOTATION_AGENT.into(), "true".into());
            }
        }
        // lks syncs these pods as soon as they run: their apps wait for it
        // (bounded), so a new pod never serves the image's stale files.
        for t in objects
            .iter_mut()
            .filter_map(lks_k8s::workload::pod_template_mut)
        {
            let Some(ann) = t
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if ann.get(inject::ANNOTATION_AGENT).and_then(Value::as_str) == Some("true") {
                ann.entry(inject::ANNOTATION_WAIT_FOR_SYNC)
                    .or_insert_with(|| WAIT_FOR_SYNC_SECS.to_string().into());
            }
        }
        let inject_opts = InjectOptions {
            agent_image: opts.agent_image.to_string(),
        };
        let mut injected = 0;
        for o in &mut objects {
            let what = describe(o);
            match inject::inject(o, &inject_opts, opts.image_config).map_err(|cause| {
                RenderError::Inject {
                    object: what.clone(),
                    cause,
                }
            })? {
                Outcome::Injected | Outcome::AlreadyInjected => injected += 1,
                Outcome::NotAnnotated => {}
            }
        }
        if injected == 0 {
            return Err(RenderError::NoPodTemplate(service.name.clone()));
        }
    }
    Ok(Rendered { objects, debugger })
}

/// The ENTRYPOINT and CMD of `image` as the Docker engine has it (the
/// service's own image, built or pulled by lks): what a container without
/// `command` runs. None without an engine or the image.
pub async fn engine_image_config(
    docker: Option<&bollard::Docker>,
    image: &str,
) -> Option<ImageConfig> {
    let config = docker?.inspect_image(image).await.ok()?.config?;
    Some(ImageConfig {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
    })
}

/// `Kind namespace/name`, for messages.
pub fn describe(o: &Value) -> String {
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match o.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Points every container whose image is the service's (`NAME`, or
/// `ANY/REGISTRY/PATH/NAME`, with any tag or digest) at `image`.
fn replace_images(o: &mut Value, service: &str, image: &str) {
    let Some(t) = lks_k8s::workload::pod_template_mut(o) else {
        return;
    };
    for list in ["containers", "initContainers"] {
        let Some(cs) = t
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let Some(current) = c.get("image").and_then(Value::as_str) else {
                continue;
            };
            if repository(current).rsplit('/').next() == Some(service) {
                c["image"] = image.into();
            }
        }
    }
}

/// The containers of `o`'s pod template whose image is the service's.
fn services_containers<'a>(
    o: &'a mut Value,
    service: &'a Service,
) -> impl Iterator<Item = &'a mut serde_json::Map<String, Value>> + 'a {
    lks_k8s::workload::pod_template_mut(o)
        .and_then(|t| t.pointer_mut("/spec/containers"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|c| {
            c.get("image")
                .and_then(Value::as_str)
                .is_some_and(|i| repository(i).rsplit('/').next() == Some(service.name.as_str()))
        })
        .filter_map(Value::as_object_mut)
}

/// Gives every container whose image is the service's its `entrypoint:` as
/// `command` (without `args`: the image's CMD is dropped, as `docker run
/// --entrypoint` does). Kubernetes expands `$(VAR)` in it as in any
/// `command`.
fn override_entrypoint(o: &mut Value, service: &Service) {
    for c in services_containers(o, service) {
        c.insert("command".into(), service.entrypoint.clone().into());
        c.remove("args");
    }
}

/// `lks up --debug`: the first container of `o` whose image is the
/// service's runs its command under the debugger (listening on the pod's
/// 127.0.0.1, reached through the forwarded port), without the liveness and
/// startup probes that would kill an app stopped at a breakpoint. The
/// debugger, when `o` has such a container.
fn run_under_debugger(
    o: &mut Value,
    service: &Service,
    image_config: &dyn Fn(&str) -> Option<ImageConfig>,
) -> Result<Option<Debugger>, RenderError> {
    let Some(c) = services_containers(o, service).next() else {
        return Ok(None);
    };
    let strings = |key: &str| -> Vec<String> {
        c.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .and_then(image_config);
    let mut argv = inject::container_command(&strings("command"), &strings("args"), image.as_ref());
    if argv.is_empty() {
        argv = service.command.clone();
    }
    let (argv, debugger) =
        crate::debug::under_debugger(service, argv).map_err(RenderError::Debug)?;
    if argv.is_empty() {
        return Err(RenderError::Debug(format!(
            "--debug {}: neither its manifest, its image nor its `command` says what runs",
            service.name
        )));
    }
    c.insert("command".into(), argv.into());
    c.remove("args");
    c.remove("livenessProbe");
    c.remove("startupProbe");
    Ok(debugger)
}

/// An image reference without its tag or digest.
fn repository(image: &str) -> &str {
    crate::docker::reference::Reference::parse(image).repository
}

/// `lks render [SERVICE...]`: prints, as YAML documents, what `lks up
/// --runtime kube` would apply for the services (default: every service with
/// `k8s:` manifests). Live ones (`--local`, else the services named) get the
/// agent; images are the registry's as the cluster names it.
pub async fn command(
    file: Option<&Path>,
    services: &[String],
    local: &[String],
    sel: &super::target::Selection,
) -> anyhow::Result<()> {
    let ws = crate::config::load(file)?;
    let registry = crate::registry::Registry::of(Some(&ws))?;
    // With a context named, images are named as that cluster pulls them
    // (its KEP-1755 ConfigMap); otherwise no cluster is asked.
    let (registry, namespace) = if sel.context.is_some() {
        let t = super::target::connect(&ws.kube, sel, false).await?;
        (t.registry(registry).await?, Some(t.namespace))
    } else {
        let pull = registry.in_cluster();
        (
            super::target::ClusterRegistry {
                push: registry,
                pull,
                from: "lks.yaml".into(),
            },
            sel.namespace.clone().or_else(|| ws.kube.namespace.clone()),
        )
    };
    let names: Vec<String> = if services.is_empty() {
        ws.services
            .values()
            .filter(|s| !s.k8s.is_empty())
            .map(|s| s.name.clone())
            .collect()
    } else {
        ws.expand_targets(services)
    };
    for n in services.iter().chain(local) {
        if !ws.services.contains_key(n) && !ws.aliases.contains_key(n) {
            bail!("{n}: not a service or alias of {}", ws.file.display());
        }
    }
    if names.is_empty() {
        bail!("no service of {} has `k8s:` manifests", ws.file.display());
    }
    let live = ws.live(services, local);
    // Image configs come from the engine when it has the images (else a
    // container without `command` cannot be wrapped, and says so).
    let docker = crate::docker::connect().await.ok();
    // Named by its content when the static agent is at hand (as `lks up`
    // names it), else by lks's version.
    let agent_tag =
        crate::agent_image::content_tag().unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_string());
    let agent_image = registry.pulled_as(&format!(
        "{}:{agent_tag}",
        crate::docker::image::repository(&registry.push.address, crate::agent_image::REPOSITORY)
    ));
    let workspace = workspace_label(&ws.root);
    let mut out = String::new();
    for name in &names {
        let service = &ws.services[name];
        if service.k8s.is_empty() {
            bail!("{name} has no `k8s:` manifests");
        }
        let is_live = live.contains(name);
        let tag = if is_live {
            let b = crate::config::Build {
                exclude: service.own_files(),
                ..service.build.clone()
            };
            match tokio::task::spawn_blocking(move || crate::docker::context::pack(&b)).await? {
                Ok(ctx) => crate::docker::image::digest_tag(&ctx.digest),
                Err(_) => "latest".to_string(),
            }
        } else {
            "latest".to_string()
        };
        let host_ref = format!("{}/{name}:{tag}", registry.push.address);
        let cluster_ref = registry.pulled_as(&host_ref);
        let own = engine_image_config(docker.as_ref(), &host_ref).await;
        let image_config = |image: &str| -> Option<ImageConfig> {
            (image == cluster_ref).then(|| own.clone()).flatten()
        };
        let objects = render(
            service,
            &RenderOptions {
                image: Some(&cluster_ref),
                live: is_live,
                agent_image: &agent_image,
                workspace: &workspace,
                image_config: &image_config,
            },
        )?
        .objects;
        for mut o in objects {
            if let Some(ns) = &namespace {
                set_namespace(&mut o, ns);
            }
            out.push_str("---\n");
            out.push_str(&crate::yaml::to_string(&o));
        }
    }
    print!("{out}");
    Ok(())
}

/// Kinds that live outside namespaces (the common ones; for `lks render`,
/// which asks no cluster).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "APIService",
];

/// Puts a namespaced object that names no namespace into `ns`.
fn set_namespace(o: &mut Value, ns: &str) {
    let kind = o["kind"].as_str().unwrap_or_default();
    if CLUSTER_SCOPED.contains(&kind) {
        return;
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace").or_insert_with(|| ns.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_drops_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(repository("web"), "web");
        assert_eq!(repository("web:1.2"), "web");
        assert_eq!(repository("localhost:5000/web"), "localhost:5000/web");
        assert_eq!(repository("localhost:5000/web:dev-1"), "localhost:5000/web");
        assert_eq!(repository("r.io/a/web@sha256:abc"), "r.io/a/web");
    }

    #[test]
    fn only_the_services_own_image_is_replaced() {
        let mut o = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:latest"},
                {"name": "proxy", "image": "envoyproxy/envoy:v1"},
                {"name": "web2", "image": "localhost:5000/web"}
            ]}}}
        });
        replace_images(&mut o, "web", "localhost:5000/web:dev-1");
        let images: Vec<&str> = o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        assert_eq!(
            images,
            [
                "localhost:5000/web:dev-1",
                "envoyproxy/envoy:v1",
                "localhost:5000/web:dev-1"
            ]
        );
    }
}
