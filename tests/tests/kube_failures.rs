//! What goes wrong in a cluster, named in the cluster's own words within
//! seconds, and lks recovering by itself once the cause is gone: an image
//! that cannot be pulled, an app that exits, a pod that never becomes ready,
//! a namespace that does not exist, a port-forward RBAC denies, the API
//! server going away mid-session. Real cluster (`LKS_TEST_KUBECONFIG`), one
//! namespace per test.

use lks_e2e::kube::{
    Proxy, cluster, examples_on_free_ports, kubeconfig_via, set_greeting, token_kubeconfig,
};
use lks_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(300);
/// "Within seconds": what a developer waits before looking elsewhere.
const NAMED_WITHIN: Duration = Duration::from_secs(30);

/// A workspace with the service `name` under test, whose image is a Debian
/// that sleeps and whose manifest is `manifest`, and a service `front` that
/// depends on it: `lks up front` runs `name` as a dependency (not live, as
/// applied; its rollout waited for) and `front` only once it is ready.
fn one_service(ws: &Path, name: &str, manifest: &str) {
    write(
        ws,
        "lks.yaml",
        &format!("services: [\"{name}/lks.service.yaml\", \"front/lks.service.yaml\"]\n"),
    );
    for s in [name, "front"] {
        write(
            ws,
            &format!("{s}/Dockerfile"),
            "ARG BASE=lks/debian:bookworm\nFROM ${BASE}\nCMD [\"sleep\", \"infinity\"]\n",
        );
    }
    write(
        ws,
        &format!("{name}/lks.service.yaml"),
        &format!("name: {name}\nk8s: [k8s.yaml]\n"),
    );
    write(ws, &format!("{name}/k8s.yaml"), manifest);
    write(
        ws,
        "front/lks.service.yaml",
        &format!("name: front\ndeps: [{name}]\nk8s: [k8s.yaml]\n"),
    );
    write(
        ws,
        "front/k8s.yaml",
        &deployment(
            "front",
            "        - {name: front, image: front, command: [sleep, infinity]}\n",
        ),
    );
}

/// A Deployment `name` with one container.
fn deployment(name: &str, container: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n\
         \x20 template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n{container}"
    )
}

#[test]
fn an_image_that_cannot_be_pulled_is_named_and_the_service_starts_once_it_exists() {
    let Some(k) = cluster("an_image_that_cannot_be_pulled") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let image = format!("127.0.0.1:5000/lks-e2e-late-{}:1", unique());
    one_service(
        ws,
        "late",
        &deployment(
            "late",
            &format!("        - {{name: late, image: \"{image}\", command: [sleep, infinity]}}\n"),
        ),
    );
    let ns = k.namespace();
    // lks builds `late`'s own image, but the container names another.
    let mut up = k.up(ws, &["--namespace", &ns.name, "front"]);
    let t = Instant::now();
    let line = up.wait(&["late", "container late", "Pull"], START);
    assert!(
        line.contains("ErrImagePull") || line.contains("ImagePullBackOff"),
        "{line}"
    );
    assert!(line.contains(&image), "names the image: {line}");
    eprintln!("named after {:?}: {line}", t.elapsed());
    // The image appears: the kubelet's next try pulls it, lks goes on.
    docker(&["tag", "lks/debian:bookworm", &image]);
    let _cleanup = DockerCleanup(DockerObjects {
        images: vec![image.clone()],
        ..Default::default()
    });
    docker(&["push", &image]);
    up.wait(&["late", "[ready]"], Duration::from_secs(240));
    up.wait(&["front", "[ready]"], Duration::from_secs(120));
    up.terminate();
}

#[test]
fn a_ctrl_c_while_a_rollout_waits_deletes_what_was_applied() {
    let Some(k) = cluster("a_ctrl_c_while_a_rollout_waits") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    // A dependency whose image never comes: its rollout waits forever.
    one_service(
        ws,
        "stuck",
        &(deployment(
            "stuck",
            "        - {name: stuck, image: \"127.0.0.1:5000/lks-e2e-never:1\"}\n",
        ) + "---\napiVersion: v1\nkind: Service\nmetadata: {name: stuck}\nspec:\n  selector: {app: stuck}\n  ports: [{port: 80}]\n"),
    );
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "front"]);
    up.wait(&["stuck", "waiting for the rollout"], START);
    assert_eq!(k.names(&ns.name, "deploy,svc").len(), 2);
    assert!(up.terminate().success());
    assert_eq!(
        k.names(&ns.name, "deploy,svc,secret"),
        Vec::<String>::new(),
        "Ctrl-C during the rollout left objects behind"
    );
}

#[test]
fn an_app_that_exits_is_named_with_its_exit_code_and_a_live_one_recovers_with_the_fix() {
    let Some(k) = cluster("an_app_that_exits") else {
        return;
    };
    // Not live: the container itself crash-loops, as Kubernetes says.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    one_service(
        ws,
        "quits",
        &deployment(
            "quits",
            "        - {name: quits, image: quits, command: [sh, -c, \"echo bye; exit 3\"]}\n",
        ),
    );
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "front"]);
    let named = up.wait(&["quits", "code 3"], START);
    let looping = up.wait(
        &["quits", "CrashLoopBackOff", "last exit code 3"],
        Duration::from_secs(90),
    );
    eprintln!("{named}\n{looping}");
    up.terminate();

    // Live: the agent keeps the pod; the app's crashes are reported, and
    // the fix syncs and starts it.
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = examples_on_free_ports(ws);
    let server = ws.join("web/server.js");
    let good = std::fs::read_to_string(&server).unwrap();
    let ns2 = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns2.name, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    let m = up.mark();
    std::fs::write(&server, format!("process.exit(7);\n{good}")).unwrap();
    up.wait_since(m, &["web", "app exited with exit code 7"], NAMED_WITHIN);
    up.wait_since(m, &["web", "crash loop"], NAMED_WITHIN);
    let m = up.mark();
    std::fs::write(&server, &good).unwrap();
    up.wait_since(m, &["web", "[ready]"], Duration::from_secs(60));
    assert!(http11_get(web, "/").is_some_and(|b| b.starts_with("hello from web")));
    up.terminate();
}

#[test]
fn a_pod_that_never_becomes_ready_says_why() {
    let Some(k) = cluster("a_pod_that_never_becomes_ready") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    one_service(
        ws,
        "unready",
        &deployment(
            "unready",
            "        - name: unready\n          image: unready\n          readinessProbe:\n            \
             tcpSocket: {port: 4999}\n            periodSeconds: 1\n",
        ),
    );
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "front"]);
    up.wait(&["unready", "waiting for the rollout"], START);
    let t = Instant::now();
    let line = up.wait(
        &["unready", "is not ready", "Readiness probe failed"],
        NAMED_WITHIN,
    );
    eprintln!("named after {:?}: {line}", t.elapsed());
    assert!(line.contains("4999"), "{line}");
    up.terminate();
}

#[test]
fn a_missing_namespace_is_named_and_lks_applies_once_it_exists() {
    let Some(k) = cluster("a_missing_namespace") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let missing = k.namespace();
    one_service(
        ws,
        "elsewhere",
        &deployment(
            "elsewhere",
            "        - {name: elsewhere, image: elsewhere}\n",
        )
        .replace(
            "metadata: {name: elsewhere}",
            &format!("metadata: {{name: elsewhere, namespace: {}}}", missing.name),
        ),
    );
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "front"]);
    let line = up.wait(&["elsewhere", "does not exist"], START);
    assert!(line.contains(&missing.name), "{line}");
    k.kubectl_ok(&["create", "namespace", &missing.name]);
    up.wait(&["elsewhere", "[ready]"], Duration::from_secs(120));
    assert_eq!(
        k.names(&missing.name, "deploy"),
        ["deployment.apps/elsewhere"]
    );
    up.terminate();
}

#[test]
fn a_port_forward_that_rbac_denies_is_named_and_lks_connects_once_it_is_granted() {
    let Some(k) = cluster("a_port_forward_that_rbac_denies") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (_, api) = examples_on_free_ports(ws);
    let ns = k.namespace();
    let n = &ns.name;
    k.kubectl_ok(&["create", "namespace", n]);
    // A developer who may do everything lks does in the namespace, except
    // pods/portforward.
    k.apply(
        n,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dev}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: dev}\nrules:\n\
         - apiGroups: [\"\", apps]\n  resources: [pods, pods/log, services, secrets, configmaps, events, deployments, replicasets]\n  verbs: [\"*\"]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: dev}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: dev}\n\
         subjects: [{kind: ServiceAccount, name: dev}]\n",
    );
    let token = k.kubectl_ok(&["create", "token", "dev", "-n", n, "--duration=1h"]);
    let kubeconfig = ws.join("dev-kubeconfig");
    token_kubeconfig(&k.kubeconfig, token.trim(), &kubeconfig);
    let mut up = k.up_with(ws, &["--namespace", n, "api"], &kubeconfig);
    let line = up.wait(&["api", "forbidden", "portforward"], START);
    eprintln!("{line}");
    assert!(line.contains("Role"), "says what to ask for: {line}");
    k.apply(
        n,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: dev-forward}\nrules:\n\
         - apiGroups: [\"\"]\n  resources: [pods/portforward]\n  verbs: [create, get]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: dev-forward}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: dev-forward}\n\
         subjects: [{kind: ServiceAccount, name: dev}]\n",
    );
    up.wait(&["api", "[ready]"], Duration::from_secs(60));
    std::fs::write(
        ws.join("api/app.py"),
        std::fs::read_to_string(ws.join("api/app.py"))
            .unwrap()
            .replace("hello from api", "hello, now allowed"),
    )
    .unwrap();
    k.eventually("the edit arrives", Duration::from_secs(30), || {
        http11_get(api, "/").as_deref() == Some("hello, now allowed\n")
    });
    up.terminate();
}

#[test]
fn the_api_server_going_away_mid_session_is_named_and_lks_resyncs_when_it_is_back() {
    let Some(k) = cluster("the_api_server_going_away") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = examples_on_free_ports(ws);
    let ns = k.namespace();
    let Some(server) = lks_e2e::kube::loopback_server(&k.kubeconfig) else {
        eprintln!(
            "*** NOT RUN: the_api_server_going_away needs a cluster whose API server is on 127.0.0.1 ***"
        );
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "in CI the cluster is on loopback"
        );
        return;
    };
    let proxy = Proxy::start(server);
    let kubeconfig = ws.join("via-proxy");
    kubeconfig_via(&k.kubeconfig, proxy.port, &kubeconfig);
    let mut up = k.up_with(ws, &["--namespace", &ns.name, "frontend"], &kubeconfig);
    up.wait(&["web", "[ready]"], START);
    let m = up.mark();
    proxy.cut();
    let line = up.wait_since(m, &["web", "not reachable"], NAMED_WITHIN);
    eprintln!("{line}");
    set_greeting(ws, "hello after the outage");
    std::thread::sleep(Duration::from_secs(3));
    proxy.resume();
    up.wait_since(m, &["web", "synced"], Duration::from_secs(90));
    k.eventually(
        "the edit made meanwhile arrives",
        Duration::from_secs(60),
        || http11_get(web, "/").is_some_and(|b| b.starts_with("hello after the outage")),
    );
    up.terminate();
}
