//! Where a workload's rollout stands, judged from its status as `kubectl
//! rollout status` judges it: the one judgement `lks up`, `lks cluster` and
//! the dependencies' waits use.

use serde_json::Value;

/// Where a workload's rollout stands, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// The current generation observed, every replica up to date and
    /// available, no old one left.
    Done,
    /// Not yet: why, as `1/2 available, 2/2 up to date`.
    Waiting(String),
    /// It will not finish by itself (`ProgressDeadlineExceeded`).
    Stalled(String),
}

/// The one judgement of a rollout (as `kubectl rollout status` judges it),
/// for Deployments, StatefulSets and DaemonSets; None for kinds without a
/// rollout (they are done when applied).
pub fn rollout(o: &Value) -> Option<Rollout> {
    let kind = o["kind"].as_str()?;
    if !matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet") {
        return None;
    }
    let status = &o["status"];
    if !status.is_object() {
        return Some(Rollout::Waiting("no status yet".into()));
    }
    let generation = o["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Some(Rollout::Waiting(
            "its new version is not picked up yet".into(),
        ));
    }
    let int = |v: &Value| v.as_i64();
    let (want, updated, available, total) = match kind {
        "DaemonSet" => {
            let want = int(&status["desiredNumberScheduled"]).unwrap_or(0);
            (
                want,
                int(&status["updatedNumberScheduled"]).unwrap_or(0),
                int(&status["numberAvailable"]).unwrap_or(0),
                want,
            )
        }
        _ => {
            if let Some(c) = status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Some(Rollout::Stalled(format!(
                    "the rollout stalled: {}",
                    c["message"]
                        .as_str()
                        .unwrap_or("progress deadline exceeded")
                )));
            }
            let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
            // A Deployment omits availableReplicas when there are none;
            // older StatefulSets only count ready ones.
            let available = match kind {
                "StatefulSet" => int(&status["availableReplicas"])
                    .or_else(|| int(&status["readyReplicas"]))
                    .unwrap_or(0),
                _ => int(&status["availableReplicas"]).unwrap_or(0),
            };
            (
                want,
                int(&status["updatedReplicas"]).unwrap_or(0),
                available,
                int(&status["replicas"]).unwrap_or(want),
            )
        }
    };
    if updated < want || available < want {
        return Some(Rollout::Waiting(format!(
            "{available}/{want} available, {updated}/{want} up to date"
        )));
    }
    if total > want {
        return Some(Rollout::Waiting(format!(
            "{} old pod(s) still terminating",
            total - want
        )));
    }
    Some(Rollout::Done)
}

#[cfg(test)]
mod rollout_tests {
    use super::{Rollout, rollout};
    use serde_json::json;

    #[test]
    fn one_judgement_for_deployments_statefulsets_and_daemonsets() {
        let d = |status: serde_json::Value| {
            json!({"kind": "Deployment", "metadata": {"generation": 3},
                   "spec": {"replicas": 2}, "status": status})
        };
        assert_eq!(
            rollout(&d(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            Some(Rollout::Done)
        );
        assert_eq!(
            rollout(&d(
                json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2})
            )),
            Some(Rollout::Waiting("1 old pod(s) still terminating".into()))
        );
        assert_eq!(
            rollout(&d(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2})
            )),
            Some(Rollout::Waiting("0/2 available, 2/2 up to date".into())),
            "a Deployment counts available replicas"
        );
        let sts = json!({"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 1},
                         "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}});
        assert_eq!(
            rollout(&sts),
            Some(Rollout::Done),
            "older StatefulSets count ready ones"
        );
        let ds = json!({"kind": "DaemonSet", "metadata": {"generation": 1},
                        "status": {"observedGeneration": 1, "desiredNumberScheduled": 1,
                                   "updatedNumberScheduled": 1, "numberAvailable": 0}});
        assert_eq!(
            rollout(&ds),
            Some(Rollout::Waiting("0/1 available, 1/1 up to date".into()))
        );
        assert_eq!(rollout(&json!({"kind": "Service"})), None);
        assert_eq!(
            rollout(&json!({"kind": "Deployment", "metadata": {}})),
            Some(Rollout::Waiting("no status yet".into()))
        );
    }
}
