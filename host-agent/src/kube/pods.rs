//! A workload's pods, followed as they come and go: one watch (kube's
//! `watcher`, with its reconnect backoff) keeps a [`View`] current — which
//! pod runs now, and if none does, why not, in the cluster's own words
//! (waiting reasons, termination codes, scheduling conditions, the latest
//! warning event). The tunnel dials the pod that runs now, so a deleted pod,
//! a restarted container, a rollout or a scale to 0 and back are followed
//! without user action; [`Pods::moved`] tells the service loop when the pod it
//! talks to is no longer the one that runs now.
//!
//! "Runs now" is the newest pod, not being deleted, whose phase is Running
//! and whose agent container is running: during a rollout the new pod takes
//! over as soon as it runs (its app waits for lks's first sync, so it can only
//! become ready once lks moved to it).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often the reasons of a pod that runs but is not ready are looked up
/// (the readiness probe's message is in an event, not in the pod).
const EVENTS_EVERY: Duration = Duration::from_secs(2);

/// What the pods look like now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The pod that runs now ([`current`]).
    pub current: Option<String>,
    /// Whether it is ready.
    pub ready: bool,
    /// Where the service's ports go: the newest ready pod, else the pod that
    /// runs now (during a rollout the old pod serves until the new one is
    /// ready; a replaced pod's successor serves once it runs).
    pub serving: Option<String>,
    /// What stands in the way, in the cluster's words; None when the newest
    /// pod runs and is ready.
    pub problem: Option<Problem>,
    /// The watch failed (the API server went away): its error.
    pub unreachable: Option<String>,
    /// The last port-forward into the pod failed (RBAC, a pod going away):
    /// why; cleared by the next that works.
    pub tunnel: Option<String>,
    /// Whether the watch has listed the pods at least once.
    pub listed: bool,
}

/// Something wrong with the pods, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `pod NAME: REASON: message`.
    pub text: String,
    /// Ordinary while a pod starts (creating, initializing, not ready yet):
    /// worth saying only when it lasts.
    pub transient: bool,
}

/// A workload's pods, watched.
#[derive(Clone)]
pub struct Pods {
    client: Client,
    /// Their namespace.
    pub namespace: String,
    /// Their label selector, `k=v,k=v`.
    pub selector: String,
    view: watch::Receiver<View>,
    /// The view's sender, shared with the watch (port-forward failures).
    tx: Arc<watch::Sender<View>>,
    /// The pod the tunnel last reached.
    dialed: Arc<Mutex<Option<String>>>,
    _watch: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Pods {
    /// Starts watching the pods `selector` selects in `namespace`, the agent
    /// in `container` (None: any running container counts); the watch stops
    /// when the last clone is dropped.
    pub fn watch(
        client: Client,
        namespace: &str,
        selector: &str,
        container: Option<String>,
    ) -> Pods {
        let (tx, rx) = watch::channel(View::default());
        let tx = Arc::new(tx);
        let task = tokio::spawn(follow(
            client.clone(),
            namespace.to_string(),
            selector.to_string(),
            container,
            tx.clone(),
        ));
        Pods {
            client,
            namespace: namespace.to_string(),
            selector: selector.to_string(),
            view: rx,
            tx,
            dialed: Arc::new(Mutex::new(None)),
            _watch: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The view now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver of every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// The pod that runs now, waiting (without bound) until one does.
    pub async fn running(&self) -> String {
        self.first(|v| v.current.clone()).await
    }

    /// The pod the service's ports go to ([`View::serving`]), waiting
    /// (without bound) until there is one.
    pub async fn serving(&self) -> String {
        self.first(|v| v.serving.clone()).await
    }

    async fn first(&self, pick: impl Fn(&View) -> Option<String>) -> String {
        let mut rx = self.view.clone();
        loop {
            if let Some(pod) = pick(&rx.borrow_and_update()) {
                return pod;
            }
            if rx.changed().await.is_err() {
                // The watch task ended (the runtime is shutting down).
                std::future::pending::<()>().await;
            }
        }
    }

    /// Records that the tunnel reached `pod`.
    pub fn dialed(&self, pod: &str) {
        *self.dialed.lock().unwrap() = Some(pod.to_string());
        self.forwarded(None);
    }

    /// Records how the last port-forward went: `Some(why)` it failed.
    pub fn forwarded(&self, failure: Option<String>) {
        self.tx.send_if_modified(|v| {
            let changed = v.tunnel != failure;
            v.tunnel = failure;
            changed
        });
    }

    /// Resolves when the pod that runs now is another than the one the
    /// tunnel last reached (a rollout's new pod runs): time to reconnect.
    pub async fn moved(&self) {
        let mut rx = self.view.clone();
        loop {
            let current = rx.borrow_and_update().current.clone();
            let dialed = self.dialed.lock().unwrap().clone();
            if let (Some(c), Some(d)) = (&current, &dialed)
                && c != d
            {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The watch: keeps `tx` current until aborted.
async fn follow(
    client: Client,
    namespace: String,
    selector: String,
    container: Option<String>,
    tx: Arc<watch::Sender<View>>,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default().labels(&selector)),
    )
    .default_backoff();
    tokio::pin!(stream);
    let mut tick = tokio::time::interval(EVENTS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreachable: Option<String> = None;
    let mut listed = false;
    loop {
        let mut refresh_events = false;
        tokio::select! {
            ev = stream.next() => match ev {
                None => return,
                Some(Ok(watcher::Event::InitDone)) => { listed = true; unreachable = None; }
                Some(Ok(_)) => unreachable = None,
                Some(Err(e)) => unreachable = Some(watch_error(e)),
            },
            _ = tick.tick() => refresh_events = true,
        }
        let pods: Vec<Pod> = reader.state().iter().map(|p| (**p).clone()).collect();
        let mut view = judge(&pods, container.as_deref());
        view.listed = listed;
        view.unreachable = unreachable.clone();
        // A pod that runs but is not ready says why only in its events.
        let previous = tx.borrow().clone();
        if let Some(p) = &view.problem
            && p.transient
            && let Some(name) = newest(&pods).and_then(|p| p.metadata.name.clone())
            && running(newest(&pods).unwrap(), container.as_deref())
        {
            if refresh_events {
                if let Some(why) = latest_warning(&events, &name).await {
                    view.problem = Some(Problem {
                        text: format!("pod {name} is not ready: {why}"),
                        transient: true,
                    });
                }
            } else if previous
                .problem
                .as_ref()
                .is_some_and(|p| p.text.starts_with(&format!("pod {name} is not ready: ")))
            {
                view.problem = previous.problem.clone();
            }
        }
        tx.send_if_modified(|v| {
            view.tunnel = v.tunnel.take();
            let changed = *v != view;
            *v = view;
            changed
        });
    }
}

/// A watch error as one line.
fn watch_error(e: watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => format!("{:#}", crate::kube::explain(e)),
        watcher::Error::WatchError(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The message of the latest warning event about pod `name`.
async fn latest_warning(events: &Api<Event>, name: &str) -> Option<String> {
    let list = events
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={name},type=Warning"
        )))
        .await
        .ok()?;
    list.items
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        })
        .and_then(|e| {
            let message = e.message?.trim().to_string();
            Some(match e.reason {
                Some(r) => format!("{r}: {message}"),
                None => message,
            })
        })
}

/// The newest pod not being deleted.
fn newest(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        })
}

/// Whether the pod's phase is Running and the agent's container runs.
fn running(pod: &Pod, container: Option<&str>) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    if status.phase.as_deref() != Some("Running") {
        return false;
    }
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let runs = |c: &ContainerStatus| c.state.as_ref().is_some_and(|s| s.running.is_some());
    match container {
        Some(name) => statuses.iter().any(|c| c.name == name && runs(c)),
        None => statuses.iter().any(runs),
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The view of `pods`: the one that runs now (the newest running one, not
/// being deleted), and what is wrong with the newest if it does not run or
/// is not ready.
pub fn judge(pods: &[Pod], container: Option<&str>) -> View {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let current = live
        .iter()
        .filter(|p| running(p, container))
        .max_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        })
        .copied();
    let problem = match newest(pods) {
        // Right after an apply, or scaled to 0: said only when it lasts.
        None => Some(Problem {
            text: "no pod exists (scaled to 0, or not created: see `kubectl get events`)".into(),
            transient: true,
        }),
        Some(p) => problem(p, container),
    };
    let serving = live
        .iter()
        .filter(|p| running(p, container) && ready(p))
        .max_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        })
        .copied()
        .or(current);
    View {
        current: current.and_then(|p| p.metadata.name.clone()),
        serving: serving.and_then(|p| p.metadata.name.clone()),
        ready: current.is_some_and(ready),
        problem,
        unreachable: None,
        tunnel: None,
        listed: false,
    }
}

/// What keeps `pod` from running and being ready, in the cluster's words.
pub fn problem(pod: &Pod, container: Option<&str>) -> Option<Problem> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let say = |what: String, transient: bool| {
        Some(Problem {
            text: format!("pod {name}: {what}"),
            transient,
        })
    };
    let Some(status) = &pod.status else {
        return say("no status yet".into(), true);
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return say(
            format!(
                "not scheduled: {}: {}",
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_deref().unwrap_or("")
            ),
            false,
        );
    }
    let init = status
        .init_container_statuses
        .as_deref()
        .unwrap_or_default();
    let main = status.container_statuses.as_deref().unwrap_or_default();
    for (kind, list) in [("init container", init), ("container", main)] {
        for c in list {
            if let Some(why) = container_problem(c) {
                return say(format!("{kind} {}: {}", c.name, why.0), why.1);
            }
        }
    }
    match status.phase.as_deref() {
        Some("Running") if running(pod, container) && ready(pod) => None,
        Some("Running") if running(pod, container) => say("running, not ready yet".into(), true),
        Some("Running") | Some("Pending") | None => say(
            status.phase.as_deref().unwrap_or("Pending").to_lowercase(),
            true,
        ),
        Some(phase) => say(
            format!(
                "{phase}{}",
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            false,
        ),
    }
}

/// Why a container does not run: `(text, transient)`.
fn container_problem(c: &ContainerStatus) -> Option<(String, bool)> {
    let state = c.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or("waiting");
        let transient = matches!(reason, "ContainerCreating" | "PodInitializing");
        let mut text = reason.to_string();
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            text.push_str(&format!(": {m}"));
        }
        if reason == "CrashLoopBackOff"
            && let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
        {
            text.push_str(&format!(
                " (last exit code {}{})",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            ));
        }
        return Some((text, transient));
    }
    if let Some(t) = &state.terminated
        && t.exit_code != 0
    {
        return Some((
            format!(
                "exited with code {}{}",
                t.exit_code,
                t.message
                    .as_deref()
                    .or(t.reason.as_deref())
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            false,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn running_pod(name: &str, created: &str, ready: bool) -> serde_json::Value {
        json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
                "containerStatuses": [{"name": "web", "image": "i", "imageID": "", "ready": ready,
                    "restartCount": 0, "state": {"running": {}}}]}
        })
    }

    #[test]
    fn the_newest_running_pod_runs_now_even_before_it_is_ready() {
        let mut old = running_pod("web-old", "2026-11-26T09:00:00Z", true);
        let new = running_pod("web-new", "2026-11-26T10:00:00Z", false);
        let v = judge(&[pod(old.clone()), pod(new)], Some("web"));
        assert_eq!(v.current.as_deref(), Some("web-new"));
        assert!(!v.ready);
        assert_eq!(
            v.serving.as_deref(),
            Some("web-old"),
            "the ready one serves meanwhile"
        );
        assert!(v.problem.unwrap().transient);
        // A pod being deleted never runs now.
        old["metadata"]["deletionTimestamp"] = "2026-11-26T10:00:01Z".into();
        let pending = json!({"metadata": {"name": "web-next", "creationTimestamp": "2026-11-26T11:00:00Z"},
            "status": {"phase": "Pending"}});
        let v = judge(&[pod(old), pod(pending)], Some("web"));
        assert_eq!(v.current, None);
        assert_eq!(v.serving, None);
    }

    #[test]
    fn a_pod_that_cannot_pull_its_image_says_so_in_the_clusters_words() {
        let p = pod(json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2026-11-26T09:00:00Z"},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "web", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"localhost:5000/nope:1\""}}}]}
        }));
        let v = judge(&[p], None);
        let problem = v.problem.unwrap();
        assert_eq!(
            problem.text,
            "pod web-1: container web: ImagePullBackOff: Back-off pulling image \"localhost:5000/nope:1\""
        );
        assert!(!problem.transient);
    }

    #[test]
    fn a_crash_loop_names_the_last_exit_code() {
        let p = pod(json!({
            "metadata": {"name": "api-1", "creationTimestamp": "2026-11-26T09:00:00Z"},
            "status": {"phase": "Running", "containerStatuses": [{"name": "api", "image": "x", "imageID": "",
                "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}
        }));
        let text = problem(&p, None).unwrap().text;
        assert!(
            text.contains("CrashLoopBackOff") && text.contains("last exit code 3, Error"),
            "{text}"
        );
    }

    #[test]
    fn no_pod_at_all_is_a_problem_and_unschedulable_pods_say_why() {
        let v = judge(&[], None);
        assert!(v.problem.unwrap().text.contains("scaled to 0"));
        let p = pod(json!({
            "metadata": {"name": "w", "creationTimestamp": "2026-11-26T09:00:00Z"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}
        }));
        assert_eq!(
            problem(&p, None).unwrap().text,
            "pod w: not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."
        );
    }
}
