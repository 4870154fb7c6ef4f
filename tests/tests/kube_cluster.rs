//! The kube runtime on a real cluster: `lks up --runtime kube` with the
//! examples (image built and pushed, the agent image pulled by the init
//! container, injection, gRPC over pod port-forwards, first sync, readiness,
//! live updates, run steps, rollouts of new images), following pods as they
//! come and go, naming what goes wrong in the cluster's words, `lks down`,
//! `--context`/`--namespace` and the guard.
//!
//! The cluster is `LKS_TEST_KUBECONFIG` (`tests/run.sh` starts
//! `../shared/k8s/up.sh` and sets it); without one these tests say so and
//! pass, except in CI. Each works in a namespace of its own.

use lks_e2e::kube::{Cluster, Frontend, cluster, examples_on_free_ports, set_greeting};
use lks_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Long enough for a cold image build and pull on a loaded 2-core machine.
const START: Duration = Duration::from_secs(300);

fn greeting_is(port: u16, text: &str) -> bool {
    http11_get(port, "/").is_some_and(|b| b.starts_with(text))
}

/// Waits until web answers `text` on `port`; how long it took.
fn wait_for_greeting(k: &Cluster, port: u16, text: &str, timeout: Duration) -> Duration {
    let t = Instant::now();
    k.eventually(&format!("web answers {text:?}"), timeout, || {
        greeting_is(port, text)
    });
    t.elapsed()
}

fn append(ws: &Path, rel: &str, text: &str) {
    let p = ws.join(rel);
    let mut old = std::fs::read_to_string(&p).unwrap();
    old.push_str(text);
    std::fs::write(p, old).unwrap();
}

#[test]
fn the_examples_live_in_pods_edits_steps_and_a_dockerfile_change_roll_out() {
    let Some(k) = cluster("the_examples_live_in_pods") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, api) = examples_on_free_ports(ws);
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "web", "api"]);
    up.wait(&["api", "[ready]"], START);
    up.wait(&["web", "[ready]"], START);
    assert!(greeting_is(web, "hello from web; api says: "));
    assert_eq!(http11_get(api, "/").as_deref(), Some("hello from api\n"));

    // Injected as the design says: the agent image (named by its content)
    // copied in by the init container, the command wrapped, the app held
    // for the first sync.
    let init = k.jsonpath(
        &ns.name,
        "deploy/web",
        "{.spec.template.spec.initContainers[0].image}",
    );
    assert!(init.contains("/lks-agent:dev-"), "{init}");
    let command = k.jsonpath(
        &ns.name,
        "deploy/web",
        "{.spec.template.spec.containers[0].command}",
    );
    for part in [
        "/.lks/lks-agent",
        "supervise",
        "--wait-for-sync",
        "node",
        "server.js",
    ] {
        assert!(command.contains(part), "{part} in {command}");
    }

    // An edit reaches the pod.
    set_greeting(ws, "hello from a pod");
    let took = wait_for_greeting(&k, web, "hello from a pod", Duration::from_secs(30));
    eprintln!("edit -> new response through the port-forward: {took:?}");

    // A requirements change runs the pip step in the pod, then restarts.
    let m = up.mark();
    append(ws, "api/requirements.txt", "# a comment\n");
    up.wait_since(
        m,
        &["api", "synced", "step 1 ok", "restarted"],
        Duration::from_secs(60),
    );
    std::fs::write(
        ws.join("api/app.py"),
        std::fs::read_to_string(ws.join("api/app.py"))
            .unwrap()
            .replace("hello from api", "hello from the api pod"),
    )
    .unwrap();
    k.eventually("api answers anew", Duration::from_secs(30), || {
        http11_get(api, "/").as_deref() == Some("hello from the api pod\n")
    });

    // A Dockerfile change builds a new image and rolls it out; lks follows
    // the new pod, and edits reach it.
    let image_before = k.jsonpath(
        &ns.name,
        "deploy/web",
        "{.spec.template.spec.containers[0].image}",
    );
    let m = up.mark();
    append(ws, "web/Dockerfile", "ENV LKS_E2E_ROLLED=yes\n");
    up.wait_since(m, &["web", "built "], Duration::from_secs(120));
    k.eventually("the new image rolled out", Duration::from_secs(120), || {
        let image = k.jsonpath(
            &ns.name,
            "deploy/web",
            "{.spec.template.spec.containers[0].image}",
        );
        image != image_before
            && k.jsonpath(
                &ns.name,
                "deploy/web",
                "{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}",
            ) == "1/1/1"
    });
    set_greeting(ws, "hello after the rollout");
    wait_for_greeting(&k, web, "hello after the rollout", Duration::from_secs(60));
    let env = k.kubectl_ok(&[
        "exec",
        "-n",
        &ns.name,
        "deploy/web",
        "-c",
        "web",
        "--",
        "printenv",
        "LKS_E2E_ROLLED",
    ]);
    assert_eq!(env.trim(), "yes", "the new image runs");

    // Ctrl-C: what lks applied goes.
    assert!(up.terminate().success());
    assert_eq!(
        k.names(&ns.name, "deploy,svc,secret,replicaset"),
        Vec::<String>::new(),
        "lks up left objects behind"
    );
}

#[test]
fn lks_follows_a_deleted_pod_a_killed_container_a_scale_to_zero_and_back_and_a_rollout() {
    let Some(mut f) = Frontend::start("lks_follows_a_deleted_pod") else {
        return;
    };
    let (k, ws, web, n) = (
        f.cluster.clone(),
        f.ws().to_path_buf(),
        f.web,
        f.ns.name.clone(),
    );
    let (ws, n, up) = (ws.as_path(), n.as_str(), &mut f.up);

    // 1. The pod is deleted; an edit made meanwhile arrives in its successor.
    let before = k.pods(n, "app=web");
    let m = up.mark();
    k.kubectl_ok(&["delete", "pod", "-n", n, "-l", "app=web", "--wait=false"]);
    set_greeting(ws, "hello while the pod was away");
    up.wait_since(m, &["web", "synced"], Duration::from_secs(120));
    wait_for_greeting(
        &k,
        web,
        "hello while the pod was away",
        Duration::from_secs(60),
    );
    assert_ne!(k.pods(n, "app=web"), before, "a new pod serves");

    // 2. The container is killed from inside (its PID 1, the agent): the
    // kubelet restarts it from the image, lks resyncs.
    let m = up.mark();
    k.kubectl_ok(&[
        "exec",
        "-n",
        n,
        "deploy/web",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "kill 1",
    ]);
    set_greeting(ws, "hello after kill 1");
    up.wait_since(m, &["web", "synced"], Duration::from_secs(120));
    wait_for_greeting(&k, web, "hello after kill 1", Duration::from_secs(60));
    let pods = k.pods(n, "app=web");
    assert_eq!(pods.len(), 1, "{pods:?}");
    let restarts = k.jsonpath(
        n,
        &format!("pod/{}", pods[0]),
        "{.status.containerStatuses[0].restartCount}",
    );
    assert_eq!(restarts, "1", "the same pod, its container restarted");

    // 3. Scaled to 0, edited, scaled back: lks waits, says why, and syncs
    // the new pod without being told.
    let m = up.mark();
    k.kubectl_ok(&["scale", "-n", n, "deploy/web", "--replicas=0"]);
    up.wait_since(m, &["web", "no pod exists"], Duration::from_secs(60));
    set_greeting(ws, "hello after scaling back");
    k.kubectl_ok(&["scale", "-n", n, "deploy/web", "--replicas=1"]);
    wait_for_greeting(
        &k,
        web,
        "hello after scaling back",
        Duration::from_secs(120),
    );
    assert_eq!(
        k.jsonpath(n, "deploy/web", "{.spec.replicas}"),
        "1",
        "lks did not re-apply over the user's scale"
    );

    // 4. A rollout someone else makes (kubectl): lks moves to the new pod.
    let before = k.pods(n, "app=web");
    let m = up.mark();
    k.kubectl_ok(&["rollout", "restart", "-n", n, "deploy/web"]);
    up.wait_since(m, &["web", "a new pod runs"], Duration::from_secs(120));
    set_greeting(ws, "hello after kubectl's rollout");
    wait_for_greeting(
        &k,
        web,
        "hello after kubectl's rollout",
        Duration::from_secs(60),
    );
    k.eventually("the old pod is gone", Duration::from_secs(60), || {
        let now = k.pods(n, "app=web");
        now.len() == 1 && now != before
    });
    assert!(greeting_is(web, "hello after kubectl's rollout"));
    assert!(up.terminate().success());
}

/// A replacement pod never answers with the image's files once the local
/// tree moved on: its app waits for lks's first sync.
#[test]
fn a_new_pod_does_not_serve_the_images_stale_files_before_its_first_sync() {
    let Some(mut f) = Frontend::start("a_new_pod_does_not_serve_stale_files") else {
        return;
    };
    let (k, ws, web, n) = (
        f.cluster.clone(),
        f.ws().to_path_buf(),
        f.web,
        f.ns.name.clone(),
    );
    let (ws, n, up) = (ws.as_path(), n.as_str(), &mut f.up);
    // The image says "hello from web"; the tree now says otherwise.
    set_greeting(ws, "hello, synced");
    wait_for_greeting(&k, web, "hello, synced", Duration::from_secs(30));
    // Poll through the forwarded port, every 10 ms, while the pod is replaced.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bodies = vec![];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(b) = http11_get(web, "/") {
                    bodies.push(b);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            bodies
        })
    };
    let before = k.pods(n, "app=web");
    k.kubectl_ok(&["delete", "pod", "-n", n, "-l", "app=web", "--wait=false"]);
    k.eventually(
        "the new pod is ready and alone",
        Duration::from_secs(120),
        || {
            let pods = k.pods(n, "app=web");
            pods.len() == 1
                && pods != before
                && k.jsonpath(n, "deploy/web", "{.status.readyReplicas}") == "1"
        },
    );
    let answered_before = {
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        poller.join().unwrap()
    };
    assert!(
        answered_before
            .iter()
            .all(|b| !b.starts_with("hello from web")),
        "a pod served the image's stale greeting: {:?}",
        answered_before
            .iter()
            .find(|b| b.starts_with("hello from web"))
    );
    assert!(
        answered_before
            .last()
            .is_some_and(|b| b.starts_with("hello, synced")),
        "the new pod answers the synced greeting: {:?}",
        answered_before.last()
    );
    up.terminate();
}
