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

mod error;
pub use error::InjectError;

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
            exit_with_stdin: false,
            watch_root: true,
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
        let argv = container_command(&[], &args, Some(&config));
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

/// What a container runs, as Kubernetes runs it (the rules of the CRI
/// runtimes), written as a `command` that runs the same: `command` set:
/// command + args; else its image's ENTRYPOINT + (args, or the image's CMD),
/// those escaped for Kubernetes' `$(VAR)` expansion (they were never
/// expanded). Empty when neither says anything (or the image is unknown).
pub fn container_command(
    command: &[String],
    args: &[String],
    image: Option<&ImageConfig>,
) -> Vec<String> {
    if !command.is_empty() {
        return [command, args].concat();
    }
    let Some(config) = image else {
        return Vec::new();
    };
    let escape = |v: &[String]| -> Vec<String> { v.iter().map(|s| literal(s)).collect() };
    let entrypoint = if config.entrypoint == [""] {
        config.entrypoint.clone()
    } else {
        escape(&config.entrypoint)
    };
    lks_proto::launch::image_argv(&entrypoint, &escape(&config.cmd), Some(args))
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
mod tests;
