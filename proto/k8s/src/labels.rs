//! The labels on what lks applies, its server-side-apply field manager, and
//! the pod selector of a workload.

use serde_json::Value;

/// Label on everything lks applies.
pub const MANAGED: &str = "lks.dev/managed";
/// Label: the workspace (a digest of its directory; label values cannot
/// hold a path).
pub const WORKSPACE: &str = "lks.dev/workspace";
/// Label: the service an object belongs to.
pub const SERVICE: &str = "lks.dev/service";
/// The field manager of lks's server-side applies.
pub const FIELD_MANAGER: &str = "lks";

/// The label selector of a workload's pods (`spec.selector.matchLabels`,
/// or for a bare Pod, its own labels), as `k=v,k=v`.
pub fn pod_selector(o: &Value) -> Option<String> {
    // The kinds with pods are the ones with a pod template (one table, in
    // `workload`); a Pod is its own template.
    let template = crate::workload::pod_template(o)?;
    let labels = o["spec"]["selector"]["matchLabels"]
        .as_object()
        .filter(|_| o["kind"] != "Pod")
        .or_else(|| template["metadata"]["labels"].as_object())?;
    let mut pairs: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
        .collect();
    pairs.sort();
    (!pairs.is_empty()).then(|| pairs.join(","))
}
