//! Injecting the agent into a workload's pod template: a pure function on the
//! object as JSON, shared by `lks` (which renders a service's manifests) and
//! `lks-agent webhook` (the mutating admission webhook).
//!
//! A pod template opts in with the annotation `lks.dev/agent: "true"`. The
//! injection adds an `emptyDir` volume, an init container that copies the static
//! agent from the agent image into it, and wraps the chosen container's command
//! with `lks-agent supervise`, which serves the protocol on loopback (only a
//! port-forward reaches it) and runs the original command as the app. The
//! template is then annotated `lks.dev/injected`, which makes injecting again a
//! no-op.

use crate::workload::template_pointer;
use serde_json::{Map, Value, json};

/// Annotation on the pod template opting in: the value `"true"` asks for the agent.
pub const ANNOTATION_AGENT: &str = "lks.dev/agent";
/// Annotation naming the container to wrap (default: the first container).
pub const ANNOTATION_CONTAINER: &str = "lks.dev/container";
/// Annotation giving the agent's root in the container (default [`DEFAULT_ROOT`]).
pub const ANNOTATION_ROOT: &str = "lks.dev/root";
/// Annotation: the app starts with lks's first sync, waiting for it at most
/// this many seconds when no lks connects (`lks up` sets it on the pod
/// templates it live-updates, so a new pod never serves the image's stale
/// files). Absent: the app starts at once.
pub const ANNOTATION_WAIT_FOR_SYNC: &str = "lks.dev/wait-for-sync";
/// Annotation set by [`inject`] (value: the agent image); its presence means "already injected".
pub const ANNOTATION_INJECTED: &str = "lks.dev/injected";
/// Where the agent's `emptyDir` is mounted in the app container (read-only).
pub const AGENT_DIR: &str = "/.lks";
/// The agent binary in the app container.
pub const AGENT_BIN: &str = "/.lks/lks-agent";
/// The agent binary inside the agent image (`images/agent/Dockerfile`).
pub const IMAGE_AGENT_BIN: &str = "/lks-agent";
/// Name of the `emptyDir` volume holding the agent.
pub const VOLUME: &str = "lks-agent";
/// Name of the init container that installs the agent into [`VOLUME`].
pub const INIT_CONTAINER: &str = "lks-agent-install";
/// Secret, in the pod's namespace, holding the agent's bearer token (`lks up` creates it).
pub const TOKEN_SECRET: &str = "lks-agent-token";
/// Key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "token";
/// Environment variable the agent reads its token from.
pub use lks_proto::launch::TOKEN_ENV;
/// The agent's root when [`ANNOTATION_ROOT`] is absent.
pub const DEFAULT_ROOT: &str = "/app";
/// User the init container runs as (it only writes to the world-writable `emptyDir`).
pub const INSTALL_UID: i64 = 65532;

/// What an image runs by default: its `ENTRYPOINT` and `CMD`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// The image's `ENTRYPOINT` (empty when unset).
    pub entrypoint: Vec<String>,
    /// The image's `CMD` (empty when unset).
    pub cmd: Vec<String>,
}

/// How to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// The agent image the init container copies the agent from.
    pub agent_image: String,
}

/// What [`inject`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a workload, or its pod template does not ask for the agent: untouched.
    NotAnnotated,
    /// The pod template already carries [`ANNOTATION_INJECTED`]: untouched.
    AlreadyInjected,
    /// The agent was injected.
    Injected,
}

/// Why a pod template that asks for the agent cannot get it. The object is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An lks annotation is not a string (YAML `true` instead of `"true"`).
    #[error(
        "{object}: annotation {key} must be a string, not {value} (quote it in YAML: {key}: \"{value}\")"
    )]
    AnnotationNotString {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation.
        key: &'static str,
        /// Its value, as JSON.
        value: String,
    },
    /// A field of the pod template does not have the shape Kubernetes requires.
    #[error("{object}: {path} must be {expected}")]
    Malformed {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The field, e.g. `spec.template.spec.containers[0].env`.
        path: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The pod template has no containers.
    #[error("{object}: the pod template has no containers to run the agent in")]
    NoContainers {
        /// The object, as `Kind namespace/name`.
        object: String,
    },
    /// [`ANNOTATION_CONTAINER`] names a container that does not exist.
    #[error(
        "{object}: annotation {ANNOTATION_CONTAINER} names the container {name:?}, which does not \
         exist; the containers are: {existing}"
    )]
    UnknownContainer {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The name in the annotation.
        name: String,
        /// The containers that exist, comma-separated.
        existing: String,
    },
    /// [`ANNOTATION_ROOT`] is not an absolute path.
    #[error("{object}: annotation {ANNOTATION_ROOT} must be an absolute path, not {root:?}")]
    BadRoot {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation's value.
        root: String,
    },
    /// [`ANNOTATION_WAIT_FOR_SYNC`] is not a whole number of seconds.
    #[error(
        "{object}: annotation {ANNOTATION_WAIT_FOR_SYNC} must be a whole number of seconds (at most 3600), not {value:?}"
    )]
    BadWaitForSync {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The annotation's value.
        value: String,
    },
    /// The container has no `command` and no image to learn its entrypoint from.
    #[error("{object}: container {container:?} has neither `command` nor `image`")]
    NoImage {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
    },
    /// The container has no `command` and its image's ENTRYPOINT and CMD are unknown.
    #[error(
        "{object}: container {container:?} has no `command`, and the ENTRYPOINT and CMD of its \
         image {image} could not be read: set `command` on the container (the full argv, \
         entrypoint included) or make the image readable"
    )]
    UnknownCommand {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Neither the container nor its image says what to run.
    #[error(
        "{object}: container {container:?} runs nothing: it has no `command` nor `args`, and its \
         image {image} has neither ENTRYPOINT nor CMD"
    )]
    NothingToRun {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Something the injection adds is already there, without [`ANNOTATION_INJECTED`].
    #[error(
        "{object}: {what} already exists but the pod template is not annotated \
         {ANNOTATION_INJECTED}; lks reserves it: rename or remove it"
    )]
    Conflict {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// What is in the way, e.g. `volume "lks-agent"`.
        what: String,
    },
}

/// Injects the agent into `object` if its pod template asks for it
/// ([`ANNOTATION_AGENT`] is `"true"`). `image_config` answers, for an image
/// reference, its ENTRYPOINT and CMD; it is called only when the chosen
/// container has no `command`. On error the object is untouched.
pub fn inject(
    object: &mut Value,
    opts: &InjectOptions,
    image_config: &dyn Fn(&str) -> Option<ImageConfig>,
) -> Result<Outcome, InjectError> {
    let Some(pointer) = template_pointer(object) else {
        return Ok(Outcome::NotAnnotated);
    };
    let object_name = describe(object);
    let Some(template) = object.pointer_mut(pointer).filter(|t| t.is_object()) else {
        return Ok(Outcome::NotAnnotated);
    };
    // JSON path of the template's fields in messages ("" for a Pod).
    let at = pointer.trim_start_matches('/').replace('/', ".");
    let at = if at.is_empty() { at } else { at + "." };
    let cx = Cx {
        object: object_name,
        at,
    };

    let annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let agent = cx.annotation(annotations, ANNOTATION_AGENT)?;
    let injected = cx.annotation(annotations, ANNOTATION_INJECTED)?;
    let container = cx.annotation(annotations, ANNOTATION_CONTAINER)?;
    let root = cx.annotation(annotations, ANNOTATION_ROOT)?;
    let wait = cx.annotation(annotations, ANNOTATION_WAIT_FOR_SYNC)?;
    if agent.as_deref() != Some("true") {
        return Ok(Outcome::NotAnnotated);
    }
    if injected.is_some() {
        return Ok(Outcome::AlreadyInjected);
    }
    let root = root.unwrap_or_else(|| DEFAULT_ROOT.to_string());
    if !root.starts_with('/') {
        return Err(InjectError::BadRoot {
            object: cx.object,
            root,
        });
    }

    let wait = match wait {
        None => None,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(secs) if secs <= 3600 => Some(secs),
            _ => {
                return Err(InjectError::BadWaitForSync {
                    object: cx.object,
                    value: v,
                });
            }
        },
    };

    // Work on a copy: an error half-way leaves the object untouched.
    let mut t = template.clone();
    let how = How {
        container: container.as_deref(),
        root: &root,
        wait_for_sync: wait,
    };
    cx.mutate(&mut t, opts, &how, image_config)?;
    *template = t;
    Ok(Outcome::Injected)
}

/// What the annotations ask of the injection.
struct How<'a> {
    /// The container to wrap (default: the first).
    container: Option<&'a str>,
    /// The agent's root.
    root: &'a str,
    /// `--wait-for-sync`, seconds.
    wait_for_sync: Option<u32>,
}

/// Where we are, for error messages.
struct Cx {
    /// The object, as `Kind namespace/name`.
    object: String,
    /// Path prefix of the pod template's fields (`spec.template.`, or empty for a Pod).
    at: String,
}

impl Cx {
    fn malformed(&self, path: &str, expected: &'static str) -> InjectError {
        InjectError::Malformed {
            object: self.object.clone(),
            path: format!("{}{path}", self.at),
            expected,
        }
    }

    fn conflict(&self, what: String) -> InjectError {
        InjectError::Conflict {
            object: self.object.clone(),
            what,
        }
    }

    /// An lks annotation's value; absent or null is `None`, a non-string is an error.
    fn annotation(
        &self,
        annotations: Option<&Map<String, Value>>,
        key: &'static str,
    ) -> Result<Option<String>, InjectError> {
        match annotations.and_then(|a| a.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(InjectError::AnnotationNotString {
                object: self.object.clone(),
                key,
                value: other.to_string(),
            }),
        }
    }

    /// The object at `map[key]`, created when absent or null.
    fn object_field<'a>(
        &self,
        map: &'a mut Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<&'a mut Map<String, Value>, InjectError> {
        let v = map.entry(key).or_insert(Value::Null);
        if v.is_null() {
            *v = Value::Object(Map::new());
        }
        v.as_object_mut()
            .ok_or_else(|| self.malformed(path, "an object"))
    }

    /// The list at `map[key]`, created when absent or null.
    fn list_field<'a>(
        &self,
        map: &'a mut Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<&'a mut Vec<Value>, InjectError> {
        let v = map.entry(key).or_insert(Value::Null);
        if v.is_null() {
            *v = Value::Array(Vec::new());
        }
        v.as_array_mut()
            .ok_or_else(|| self.malformed(path, "a list"))
    }

    /// `v[key]` as a list of strings; absent or null is empty.
    fn strings(
        &self,
        v: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Vec<String>, InjectError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.malformed(path, "a list of strings")),
            Some(_) => Err(self.malformed(path, "a list of strings")),
        }
    }

    /// Whether a list of named objects holds `name` (the list was checked to be a list).
    fn has_named(list: &[Value], field: &str, name: &str) -> bool {
        list.iter()
            .any(|item| item.get(field).and_then(Value::as_str) == Some(name))
    }

    fn mutate(
        &self,
        template: &mut Value,
        opts: &InjectOptions,
        how: &How,
        image_config: &dyn Fn(&str) -> Option<ImageConfig>,
    ) -> Result<(), InjectError> {
        let (container, root) = (how.container, how.root);
        let template = template
            .as_object_mut()
            .ok_or_else(|| self.malformed("", "an object"))?;
        let spec = self.object_field(template, "spec", "spec")?;

        // The container to wrap, and what it runs today.
        let containers = self.list_field(spec, "containers", "spec.containers")?;
        let mut names = Vec::with_capacity(containers.len());
        for (i, c) in containers.iter().enumerate() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| self.malformed(&format!("spec.containers[{i}].name"), "a string"))?;
            names.push(name.to_string());
        }
        let index = match container {
            _ if names.is_empty() => {
                return Err(InjectError::NoContainers {
                    object: self.object.clone(),
                });
            }
            None => 0,
            Some(wanted) => names.iter().position(|n| n == wanted).ok_or_else(|| {
                InjectError::UnknownContainer {
                    object: self.object.clone(),
                    name: wanted.to_string(),
                    existing: names.join(", "),
                }
            })?,
        };
        let name = names[index].clone();
        let at = format!("spec.containers[{index}]");
        let c = containers[index]
            .as_object_mut()
            .ok_or_else(|| self.malformed(&at, "an object"))?;
        let argv = self.original_argv(c, &name, &at, image_config)?;

        // The app container: the agent mounted read-only, the token, the wrapped command.
        let mounts = self.list_field(c, "volumeMounts", &format!("{at}.volumeMounts"))?;
        if Self::has_named(mounts, "name", VOLUME) {
            return Err(self.conflict(format!(
                "a volume mount of {VOLUME:?} in container {name:?}"
            )));
        }
        if Self::has_named(mounts, "mountPath", AGENT_DIR) {
            return Err(self.conflict(format!(
                "a volume mount at {AGENT_DIR} in container {name:?}"
            )));
        }
        mounts.push(json!({"name": VOLUME, "mountPath": AGENT_DIR, "readOnly": true}));
        let env = self.list_field(c, "env", &format!("{at}.env"))?;
        if Self::has_named(env, "name", TOKEN_ENV) {
            return Err(self.conflict(format!("the variable {TOKEN_ENV} in container {name:?}")));
        }
        // Optional: without the Secret (no `lks up` in this namespace) the pod
        // still starts, and the agent only supervises the app.
        env.push(json!({
            "name": TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": TOKEN_KEY, "optional": true}},
        }));
        let supervise = lks_proto::launch::Supervise {
            root: literal(root),
            listen: lks_proto::DEFAULT_LISTEN.into(),
            grace_period: None,
            // The app keeps the container's working directory.
            workdir: Some(".".into()),
            start: match how.wait_for_sync {
                Some(secs) => lks_proto::launch::Start::AfterSync(secs),
                None => lks_proto::launch::Start::Now,
            },
            app: argv,
        };
        let command: Vec<String> = std::iter::once(AGENT_BIN.to_string())
            .chain(supervise.args())
            .collect();
        c.insert("command".into(), json!(command));
        c.remove("args");

        // The volume, and the init container filling it.
        let volumes = self.list_field(spec, "volumes", "spec.volumes")?;
        if Self::has_named(volumes, "name", VOLUME) {
            return Err(self.conflict(format!("volume {VOLUME:?}")));
        }
        volumes.push(json!({"name": VOLUME, "emptyDir": {}}));
        let init = self.list_field(spec, "initContainers", "spec.initContainers")?;
        if Self::has_named(init, "name", INIT_CONTAINER) {
            return Err(self.conflict(format!("init container {INIT_CONTAINER:?}")));
        }
        init.push(json!({
            "name": INIT_CONTAINER,
            "image": opts.agent_image,
            "imagePullPolicy": "IfNotPresent",
            "command": [IMAGE_AGENT_BIN, "install", AGENT_BIN],
            "volumeMounts": [{"name": VOLUME, "mountPath": AGENT_DIR}],
            // What the "restricted" Pod Security Standard asks of every container:
            // without it a hardened namespace would refuse the whole pod.
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": INSTALL_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }));

        let metadata = self.object_field(template, "metadata", "metadata")?;
        let annotations = self.object_field(metadata, "annotations", "metadata.annotations")?;
        annotations.insert(ANNOTATION_INJECTED.into(), json!(opts.agent_image));
        Ok(())
    }

    /// The container's argv as Kubernetes runs it (the rules of the CRI runtimes):
    /// `command` set: command + args; else the image's ENTRYPOINT + (args, or the image's CMD).
    fn original_argv(
        &self,
        c: &Map<String, Value>,
        name: &str,
        at: &str,
        image_config: &dyn Fn(&str) -> Option<ImageConfig>,
    ) -> Result<Vec<String>, InjectError> {
        let command = self.strings(c, "command", &format!("{at}.command"))?;
        let args = self.strings(c, "args", &format!("{at}.args"))?;
        if !command.is_empty() {
            return Ok([command, args].concat());
        }
        let image = c
            .get("image")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| InjectError::NoImage {
                object: self.object.clone(),
                container: name.to_string(),
            })?;
        let config = image_config(image).ok_or_else(|| InjectError::UnknownCommand {
            object: self.object.clone(),
            container: name.to_string(),
            image: image.to_string(),
        })?;
        // The image's own strings were never expanded: escaped for Kubernetes.
        let escape = |v: &[String]| -> Vec<String> { v.iter().map(|s| literal(s)).collect() };
        let entrypoint = if config.entrypoint == [""] {
            config.entrypoint.clone()
        } else {
            escape(&config.entrypoint)
        };
        let argv = lks_proto::launch::image_argv(&entrypoint, &escape(&config.cmd), Some(&args));
        if argv.is_empty() {
            return Err(InjectError::NothingToRun {
                object: self.object.clone(),
                container: name.to_string(),
                image: image.to_string(),
            });
        }
        Ok(argv)
    }
}

/// `s` escaped so that Kubernetes' `$(VAR)` expansion of `command` gives back `s`:
/// the image's ENTRYPOINT and CMD were never expanded, and must not start now.
fn literal(s: &str) -> String {
    // Expansion only changes `$(...)` and `$$`; with neither, `s` is its own escape.
    if s.contains("$(") || s.contains("$$") {
        s.replace('$', "$$")
    } else {
        s.to_string()
    }
}

/// `Kind namespace/name` (or `generateName*`) for messages.
fn describe(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let meta = |key: &str| {
        object
            .get("metadata")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = match (meta("name"), meta("generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "(unnamed)".to_string(),
    };
    match meta("namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::pod_template_mut;

    const AGENT: &str = "registry.local/lks-agent:0.1.0";

    fn opts() -> InjectOptions {
        InjectOptions {
            agent_image: AGENT.into(),
        }
    }

    fn no_image(_: &str) -> Option<ImageConfig> {
        None
    }

    fn deployment(annotations: Value, containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                    "spec": {"containers": containers},
                },
            },
        })
    }

    fn web(annotations: Value) -> Value {
        deployment(
            annotations,
            json!([{"name": "web", "image": "web:1", "command": ["node"], "args": ["server.js"]}]),
        )
    }

    fn template(object: &mut Value) -> &mut Value {
        pod_template_mut(object).expect("a pod template")
    }

    fn container(object: &mut Value, index: usize) -> &Value {
        &template(object)["spec"]["containers"][index]
    }

    fn wrapped(root: &str, argv: &[&str]) -> Value {
        let mut v = vec![
            AGENT_BIN,
            "supervise",
            "--root",
            root,
            "--listen",
            "127.0.0.1:7690",
            "--workdir",
            ".",
            "--",
        ];
        v.extend(argv);
        json!(v)
    }

    #[test]
    fn templates_of_every_workload_kind() {
        let spec = json!({"template": {"metadata": {}, "spec": {"containers": []}}});
        for (api, kind) in [
            ("apps/v1", "Deployment"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "ReplicaSet"),
            ("v1", "ReplicationController"),
            ("batch/v1", "Job"),
        ] {
            let mut o = json!({"apiVersion": api, "kind": kind, "spec": spec});
            let t = pod_template_mut(&mut o).unwrap_or_else(|| panic!("{kind}"));
            assert_eq!(t, &spec["template"], "{kind}");
        }
        let mut cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "spec": {"jobTemplate": {"spec": spec}}});
        assert_eq!(pod_template_mut(&mut cron).unwrap(), &spec["template"]);
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}});
        let copy = pod.clone();
        assert_eq!(pod_template_mut(&mut pod).unwrap(), &copy);
    }

    #[test]
    fn no_template_for_other_kinds() {
        for mut o in [
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"template": {}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap"}),
            // Same kind, another API group: not ours to interpret.
            json!({"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "spec": {"template": {}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
            json!({"kind": 3}),
            json!([]),
        ] {
            assert!(pod_template_mut(&mut o).is_none(), "{o}");
            let before = o.clone();
            assert_eq!(
                inject(&mut o, &opts(), &no_image),
                Ok(Outcome::NotAnnotated)
            );
            assert_eq!(o, before);
        }
    }

    #[test]
    fn injects_volume_init_container_and_wrapped_command() {
        let mut d = web(json!({"lks.dev/agent": "true"}));
        assert_eq!(inject(&mut d, &opts(), &no_image), Ok(Outcome::Injected));
        let t = template(&mut d);
        assert_eq!(t["metadata"]["annotations"][ANNOTATION_INJECTED], AGENT);
        assert_eq!(t["metadata"]["labels"]["app"], "web", "labels kept");
        assert_eq!(
            t["spec"]["volumes"],
            json!([{"name": "lks-agent", "emptyDir": {}}])
        );
        let init = &t["spec"]["initContainers"];
        assert_eq!(init.as_array().unwrap().len(), 1);
        assert_eq!(init[0]["name"], INIT_CONTAINER);
        assert_eq!(init[0]["image"], AGENT);
        assert_eq!(init[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            init[0]["command"],
            json!(["/lks-agent", "install", "/.lks/lks-agent"])
        );
        assert_eq!(
            init[0]["volumeMounts"],
            json!([{"name": "lks-agent", "mountPath": "/.lks"}])
        );
        let c = &t["spec"]["containers"][0];
        assert_eq!(c["command"], wrapped("/app", &["node", "server.js"]));
        assert!(c.get("args").is_none(), "args folded into command");
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "lks-agent", "mountPath": "/.lks", "readOnly": true}])
        );
        assert_eq!(
            c["env"],
            json!([{"name": "LKS_TOKEN", "valueFrom": {"secretKeyRef": {"name": "lks-agent-token", "key": "token", "optional": true}}}]),
            "the pod starts without the Secret (no lks up in its namespace)"
        );
        assert_eq!(c["image"], "web:1");
    }

    #[test]
    fn wait_for_sync_is_passed_to_the_supervisor_and_checked() {
        let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/wait-for-sync": "10"}));
        assert_eq!(inject(&mut d, &opts(), &no_image), Ok(Outcome::Injected));
        let command = template(&mut d)["spec"]["containers"][0]["command"].clone();
        let argv: Vec<&str> = command
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let at = argv.iter().position(|a| *a == "--wait-for-sync").unwrap();
        assert_eq!(argv[at + 1], "10");
        assert!(at < argv.iter().position(|a| *a == "--").unwrap());
        for bad in ["soon", "-1", "3601", "1.5"] {
            let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/wait-for-sync": bad}));
            let before = d.clone();
            let e = inject(&mut d, &opts(), &no_image).unwrap_err();
            assert!(
                matches!(e, InjectError::BadWaitForSync { .. }),
                "{bad}: {e}"
            );
            assert_eq!(d, before, "untouched on error");
        }
    }

    #[test]
    fn existing_volumes_mounts_env_and_init_containers_are_kept() {
        let mut d = web(json!({"lks.dev/agent": "true"}));
        let t = template(&mut d);
        t["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        t["spec"]["initContainers"] = json!([{"name": "migrate", "image": "web:1"}]);
        t["spec"]["containers"][0]["env"] = json!([{"name": "PORT", "value": "80"}]);
        t["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "data", "mountPath": "/data"}]);
        inject(&mut d, &opts(), &no_image).unwrap();
        let t = template(&mut d);
        let names = |v: &Value| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&t["spec"]["volumes"]), ["data", "lks-agent"]);
        assert_eq!(
            names(&t["spec"]["initContainers"]),
            ["migrate", "lks-agent-install"]
        );
        let c = &t["spec"]["containers"][0];
        assert_eq!(names(&c["env"]), ["PORT", "LKS_TOKEN"]);
        assert_eq!(names(&c["volumeMounts"]), ["data", "lks-agent"]);
    }

    #[test]
    fn idempotent() {
        let mut d = web(json!({"lks.dev/agent": "true"}));
        inject(&mut d, &opts(), &no_image).unwrap();
        let once = d.clone();
        let other = InjectOptions {
            agent_image: "other:2".into(),
        };
        assert_eq!(
            inject(&mut d, &other, &no_image),
            Ok(Outcome::AlreadyInjected)
        );
        assert_eq!(d, once);
    }

    #[test]
    fn not_annotated_is_untouched() {
        for annotations in [
            Value::Null,
            json!({}),
            json!({"lks.dev/agent": "false"}),
            json!({"lks.dev/agent": "True"}),
            json!({"lks.dev/agent": ""}),
            json!({"other": "true"}),
        ] {
            let mut d = web(annotations.clone());
            let before = d.clone();
            assert_eq!(
                inject(&mut d, &opts(), &no_image),
                Ok(Outcome::NotAnnotated),
                "{annotations}"
            );
            assert_eq!(d, before);
        }
        // A template without metadata at all.
        let mut d = web(Value::Null);
        d["spec"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("metadata");
        let before = d.clone();
        assert_eq!(
            inject(&mut d, &opts(), &no_image),
            Ok(Outcome::NotAnnotated)
        );
        assert_eq!(d, before);
    }

    #[test]
    fn annotation_that_is_not_a_string_is_an_error() {
        let mut d = web(json!({"lks.dev/agent": true}));
        let before = d.clone();
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        assert!(matches!(
            e,
            InjectError::AnnotationNotString {
                key: ANNOTATION_AGENT,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(
            msg.contains("Deployment shop/web") && msg.contains("\"true\""),
            "{msg}"
        );
        assert_eq!(d, before);
    }

    #[test]
    fn chosen_container_by_annotation() {
        let mut d = deployment(
            json!({"lks.dev/agent": "true", "lks.dev/container": "app"}),
            json!([
                {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
                {"name": "app", "image": "app:1", "command": ["./app"], "args": ["--port", "80"]},
            ]),
        );
        inject(&mut d, &opts(), &no_image).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            json!(["envoy"]),
            "proxy untouched"
        );
        assert!(container(&mut d, 0).get("env").is_none());
        assert_eq!(
            container(&mut d, 1)["command"],
            wrapped("/app", &["./app", "--port", "80"])
        );
    }

    #[test]
    fn first_container_by_default() {
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([
                {"name": "app", "image": "app:1", "command": ["./app"]},
                {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
            ]),
        );
        inject(&mut d, &opts(), &no_image).unwrap();
        assert_eq!(container(&mut d, 0)["command"], wrapped("/app", &["./app"]));
        assert_eq!(container(&mut d, 1)["command"], json!(["envoy"]));
    }

    #[test]
    fn unknown_container_names_the_existing_ones() {
        let mut d = deployment(
            json!({"lks.dev/agent": "true", "lks.dev/container": "api"}),
            json!([
                {"name": "web", "image": "web:1", "command": ["web"]},
                {"name": "proxy", "image": "envoy:1", "command": ["envoy"]},
            ]),
        );
        let before = d.clone();
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, InjectError::UnknownContainer { .. }), "{msg}");
        assert!(
            msg.contains("\"api\"") && msg.contains("web, proxy") && msg.contains("shop/web"),
            "{msg}"
        );
        assert_eq!(d, before);
    }

    #[test]
    fn no_containers_is_an_error() {
        let mut d = deployment(json!({"lks.dev/agent": "true"}), json!([]));
        assert!(matches!(
            inject(&mut d, &opts(), &no_image),
            Err(InjectError::NoContainers { .. })
        ));
    }

    #[test]
    fn root_annotation() {
        let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/root": "/srv/web"}));
        inject(&mut d, &opts(), &no_image).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/srv/web", &["node", "server.js"])
        );
        let mut d = web(json!({"lks.dev/agent": "true", "lks.dev/root": "app"}));
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        assert!(matches!(e, InjectError::BadRoot { .. }), "{e}");
    }

    #[test]
    fn command_without_args() {
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "web:1", "command": ["/bin/web", "-v"]}]),
        );
        let resolver_called = std::cell::Cell::new(false);
        let resolver = |_: &str| {
            resolver_called.set(true);
            None
        };
        inject(&mut d, &opts(), &resolver).unwrap();
        assert!(
            !resolver_called.get(),
            "the image is not read when command is set"
        );
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/app", &["/bin/web", "-v"])
        );
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn no_command_uses_the_image_entrypoint_and_cmd() {
        let resolver = |r: &str| {
            (r == "web:1").then(|| image(&["docker-entrypoint.sh"], &["node", "server.js"]))
        };
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "web:1"}]),
        );
        inject(&mut d, &opts(), &resolver).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/app", &["docker-entrypoint.sh", "node", "server.js"])
        );
    }

    #[test]
    fn args_without_command_replace_the_image_cmd() {
        let resolver = |_: &str| Some(image(&["python", "-m"], &["http.server"]));
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "py:3", "args": ["app", "--reload"]}]),
        );
        inject(&mut d, &opts(), &resolver).unwrap();
        let c = container(&mut d, 0);
        assert_eq!(
            c["command"],
            wrapped("/app", &["python", "-m", "app", "--reload"])
        );
        assert!(c.get("args").is_none());
    }

    #[test]
    fn empty_command_counts_as_unset_and_empty_entrypoint_is_none() {
        let resolver = |_: &str| Some(image(&[""], &["/srv/app"]));
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "app:1", "command": [], "args": []}]),
        );
        inject(&mut d, &opts(), &resolver).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/app", &["/srv/app"])
        );
    }

    #[test]
    fn image_strings_are_escaped_from_variable_expansion() {
        let resolver = |_: &str| Some(image(&["sh", "-c"], &["echo $(date) $$ $HOME"]));
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "app:1"}]),
        );
        inject(&mut d, &opts(), &resolver).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/app", &["sh", "-c", "echo $$(date) $$$$ $$HOME"])
        );
        // The container's own command was already expanded by Kubernetes: kept as is.
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "app:1", "command": ["echo", "$(PORT)"]}]),
        );
        inject(&mut d, &opts(), &resolver).unwrap();
        assert_eq!(
            container(&mut d, 0)["command"],
            wrapped("/app", &["echo", "$(PORT)"])
        );
    }

    #[test]
    fn no_command_and_unreadable_image_is_an_error() {
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "private.example/web:1"}]),
        );
        let before = d.clone();
        let e = inject(&mut d, &opts(), &no_image).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, InjectError::UnknownCommand { .. }), "{msg}");
        assert!(
            msg.contains("private.example/web:1")
                && msg.contains("set `command`")
                && msg.contains("\"web\""),
            "{msg}"
        );
        assert_eq!(d, before);
    }

    #[test]
    fn nothing_to_run_and_no_image_are_errors() {
        let resolver = |_: &str| Some(ImageConfig::default());
        let mut d = deployment(
            json!({"lks.dev/agent": "true"}),
            json!([{"name": "web", "image": "scratch:1"}]),
        );
        assert!(matches!(
            inject(&mut d, &opts(), &resolver),
            Err(InjectError::NothingToRun { .. })
        ));
        let mut d = deployment(json!({"lks.dev/agent": "true"}), json!([{"name": "web"}]));
        assert!(matches!(
            inject(&mut d, &opts(), &resolver),
            Err(InjectError::NoImage { .. })
        ));
    }

    #[test]
    fn conflicts_with_what_lks_adds_are_errors() {
        let cases: [(&str, Value); 5] = [
            (
                "volume",
                json!({"volumes": [{"name": "lks-agent", "emptyDir": {}}]}),
            ),
            (
                "init container",
                json!({"initContainers": [{"name": "lks-agent-install", "image": "x"}]}),
            ),
            (
                "LKS_TOKEN",
                json!({"env": [{"name": "LKS_TOKEN", "value": "x"}]}),
            ),
            (
                "/.lks",
                json!({"volumeMounts": [{"name": "tools", "mountPath": "/.lks"}]}),
            ),
            (
                "volume mount",
                json!({"volumeMounts": [{"name": "lks-agent", "mountPath": "/x"}]}),
            ),
        ];
        for (expect, extra) in cases {
            let mut d = web(json!({"lks.dev/agent": "true"}));
            let t = template(&mut d);
            for (k, v) in extra.as_object().unwrap() {
                if k == "volumes" || k == "initContainers" {
                    t["spec"][k] = v.clone();
                } else {
                    t["spec"]["containers"][0][k] = v.clone();
                }
            }
            let before = d.clone();
            let e = inject(&mut d, &opts(), &no_image).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, InjectError::Conflict { .. }), "{msg}");
            assert!(msg.contains(expect), "{expect}: {msg}");
            assert_eq!(d, before, "{expect}: untouched after an error");
        }
    }

    #[test]
    fn malformed_fields_are_errors_naming_the_path() {
        let mut d = web(json!({"lks.dev/agent": "true"}));
        template(&mut d)["spec"]["containers"][0]["env"] = json!({"PORT": "80"});
        let msg = inject(&mut d, &opts(), &no_image).unwrap_err().to_string();
        assert!(
            msg.contains("spec.template.spec.containers[0].env must be a list"),
            "{msg}"
        );
        let mut d = web(json!({"lks.dev/agent": "true"}));
        template(&mut d)["spec"]["containers"][0]["command"] = json!("node server.js");
        let msg = inject(&mut d, &opts(), &no_image).unwrap_err().to_string();
        assert!(
            msg.contains("containers[0].command must be a list of strings"),
            "{msg}"
        );
    }

    #[test]
    fn bare_pod_and_cron_job() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "dev", "annotations": {"lks.dev/agent": "true"}},
            "spec": {"containers": [{"name": "web", "image": "web:1", "command": ["web"]}]},
        });
        inject(&mut pod, &opts(), &no_image).unwrap();
        assert_eq!(pod["metadata"]["annotations"][ANNOTATION_INJECTED], AGENT);
        assert_eq!(
            pod["spec"]["containers"][0]["command"],
            wrapped("/app", &["web"])
        );
        assert_eq!(pod["spec"]["volumes"][0]["name"], VOLUME);

        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "dev", "annotations": {"lks.dev/agent": "true"}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
        let msg = inject(&mut pod, &opts(), &no_image)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("Pod dev/web-*: "), "{msg}");

        let mut cron = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"annotations": {"lks.dev/agent": "true"}},
                "spec": {"restartPolicy": "OnFailure",
                         "containers": [{"name": "job", "image": "job:1", "command": ["run"]}]}}}}},
        });
        inject(&mut cron, &opts(), &no_image).unwrap();
        let t = &cron["spec"]["jobTemplate"]["spec"]["template"];
        assert_eq!(
            t["spec"]["containers"][0]["command"],
            wrapped("/app", &["run"])
        );
        assert_eq!(t["spec"]["initContainers"][0]["name"], INIT_CONTAINER);
    }

    #[test]
    fn literal_round_trips_through_kubernetes_expansion() {
        // Kubernetes' expansion with no variables defined: `$$` -> `$`, `$(X)` kept.
        fn expand(s: &str) -> String {
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek() == Some(&'$') {
                    chars.next();
                }
                out.push(c);
            }
            out
        }
        for s in [
            "plain", "$HOME", "$(date)", "$$", "a$", "$$(x)", "$", "$(", "x$$$y",
        ] {
            assert_eq!(expand(&literal(s)), s, "{s:?} -> {:?}", literal(s));
        }
        assert_eq!(
            literal("$HOME"),
            "$HOME",
            "left alone when expansion cannot change it"
        );
    }
}
