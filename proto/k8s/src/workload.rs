//! The workload kinds lks knows, and where each keeps its pod template: the
//! one table the injection, the pod selector and the kube runtime use.

use serde_json::Value;

/// The pod template (an object with `metadata` and `spec`) inside a workload:
/// the Pod itself, `spec.template` of a Deployment, StatefulSet, DaemonSet,
/// ReplicaSet, ReplicationController or Job, `spec.jobTemplate.spec.template`
/// of a CronJob. `None` for other kinds (and kinds of the same name in other
/// API groups), and when the template is missing.
pub fn pod_template_mut(object: &mut Value) -> Option<&mut Value> {
    let pointer = template_pointer(object)?;
    object.pointer_mut(pointer).filter(|t| t.is_object())
}

/// The pod template inside a workload, read-only (see [`pod_template_mut`]).
pub fn pod_template(object: &Value) -> Option<&Value> {
    let pointer = template_pointer(object)?;
    object.pointer(pointer).filter(|t| t.is_object())
}

/// The JSON pointer of the pod template for the object's kind (`""` for a
/// Pod), when its kind has one.
pub fn template_pointer(object: &Value) -> Option<&'static str> {
    let kind = object.get("kind")?.as_str()?;
    // The API group ("" for the core group); objects without apiVersion are judged by kind.
    let group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.rsplit_once('/').map_or("", |(group, _)| group));
    let group_is = |groups: &[&str]| group.is_none_or(|g| groups.contains(&g));
    match kind {
        "Pod" if group_is(&[""]) => Some(""),
        "ReplicationController" if group_is(&[""]) => Some("/spec/template"),
        "Deployment" | "DaemonSet" | "ReplicaSet" if group_is(&["apps", "extensions"]) => {
            Some("/spec/template")
        }
        "StatefulSet" if group_is(&["apps"]) => Some("/spec/template"),
        "Job" if group_is(&["batch"]) => Some("/spec/template"),
        "CronJob" if group_is(&["batch"]) => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}
