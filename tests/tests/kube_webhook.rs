//! The agent-injecting admission webhook on a real cluster: installed by
//! `lks webhook install` (the API server calls it through its Service),
//! injecting a Deployment applied with plain kubectl, which then runs without
//! lks (the agent only supervises), is live-updated through the injected
//! agent once a token is there, never touching unannotated pods and never
//! blocking one when it is down; `lks up` with a dependency the webhook
//! injects; `lks webhook uninstall`. One test: the webhook is cluster-wide.

use lks_e2e::kube::{Cluster, cluster, examples_on_free_ports};
use lks_e2e::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(300);

fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Deployment `name` of `image` serving /app with Python on port 8000,
/// annotated for the agent or not.
fn deployment(name: &str, image: &str, annotated: bool) -> String {
    let annotations = if annotated {
        "\n      annotations: {lks.dev/agent: \"true\", lks.dev/root: /app}"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}{annotations}\n    \
         spec:\n      containers:\n        - name: {name}\n          image: \"{image}\"\n          \
         command: [python3, -m, http.server, \"8000\", --directory, /app]\n          \
         readinessProbe: {{tcpSocket: {{port: 8000}}, periodSeconds: 1}}\n"
    )
}

/// `kubectl port-forward POD LOCAL:REMOTE`, stopped when dropped.
struct PortForward(Child, u16);

impl PortForward {
    fn start(k: &Cluster, ns: &str, pod: &str, remote: u16) -> PortForward {
        let local = free_port();
        let child = Command::new("kubectl")
            .args([
                "port-forward",
                "-n",
                ns,
                &format!("pod/{pod}"),
                &format!("{local}:{remote}"),
            ])
            .env("KUBECONFIG", &k.kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pf = PortForward(child, local);
        k.eventually(
            "kubectl port-forward listens",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", local)).is_ok(),
        );
        pf
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Uninstalls the webhook when dropped (also when the test fails).
struct Uninstall(Cluster);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = self
            .0
            .lks(std::path::Path::new("/"), &["webhook", "uninstall"]);
    }
}

#[test]
fn the_webhook_injects_kubectl_applied_pods_lks_updates_them_and_it_never_blocks_a_pod() {
    let Some(k) = cluster("the_webhook") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();

    // 1. Installed into the cluster by lks, on any cluster it may change.
    let _uninstall = Uninstall(k.clone());
    let out = k.lks(ws, &["webhook", "install"]);
    assert!(out.status.success(), "{}", said(&out));
    let status = k.lks(ws, &["webhook", "status"]);
    assert!(
        said(&status).contains("installed and ready"),
        "{}",
        said(&status)
    );

    // 2. An annotated Deployment applied with plain kubectl gets the agent;
    // without a token Secret in its namespace the pod still starts.
    let image = format!("127.0.0.1:5000/lks-e2e-serve:{}", unique());
    docker(&["tag", "lks/debian:bookworm", &image]);
    let _image = DockerCleanup(DockerObjects {
        images: vec![image.clone()],
        ..Default::default()
    });
    docker(&["push", &image]);
    let ns = k.namespace();
    let n = &ns.name;
    k.kubectl_ok(&["create", "namespace", n]);
    k.apply(n, &deployment("hello", &image, true));
    k.apply(n, &deployment("plain", &image, false));
    k.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        n,
        "deploy/hello",
        "--timeout=180s",
    ]);
    k.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        n,
        "deploy/plain",
        "--timeout=180s",
    ]);
    let hello = k.pods(n, "app=hello");
    let pod = |name: &str, path: &str| k.jsonpath(n, &format!("pod/{name}"), path);
    assert_eq!(
        pod(&hello[0], "{.spec.initContainers[0].name}"),
        "lks-agent-install"
    );
    let command = pod(&hello[0], "{.spec.containers[0].command}");
    assert!(
        command.contains("/.lks/lks-agent") && command.contains("http.server"),
        "{command}"
    );
    let logs = k.kubectl_ok(&["logs", "-n", n, &format!("pod/{}", hello[0]), "-c", "hello"]);
    assert!(logs.contains("not serving lks, only supervising"), "{logs}");
    // Unannotated pods are untouched.
    let plain = k.pods(n, "app=plain");
    assert_eq!(pod(&plain[0], "{.spec.initContainers}"), "");
    assert!(!pod(&plain[0], "{.spec.containers[0].command}").contains("lks-agent"));

    // 3. With a token in its namespace, the injected agent serves: a live
    // update through it (`lks sync` over a port-forward).
    let token = "e2e-webhook-token-0123456789";
    k.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "lks-agent-token",
        "-n",
        n,
        &format!("--from-literal=token={token}"),
    ]);
    k.kubectl_ok(&["rollout", "restart", "-n", n, "deploy/hello"]);
    k.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        n,
        "deploy/hello",
        "--timeout=180s",
    ]);
    let current = k.pods(n, "app=hello");
    assert_eq!(current.len(), 1);
    let agent = PortForward::start(&k, n, &current[0], 7690);
    let app = PortForward::start(&k, n, &current[0], 8000);
    write(ws, "site/index.html", "live through the webhook's agent\n");
    let out = lks_sync()
        .arg(ws.join("site"))
        .args(["--to", &format!("http://127.0.0.1:{}", agent.1), "--once"])
        .env("LKS_TOKEN", token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(
        http11_get(app.1, "/index.html").as_deref(),
        Some("live through the webhook's agent\n")
    );
    drop((agent, app));

    // 4. `lks up` with a dependency the webhook injects (its manifest asks
    // for the agent, it is not live): it starts, no deadlock.
    let (web, api) = examples_on_free_ports(ws);
    let ns2 = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns2.name, "frontend"]);
    up.wait(&["api", "[ready]"], START);
    up.wait(&["web", "[ready]"], START);
    assert_eq!(http11_get(api, "/").as_deref(), Some("hello from api\n"));
    assert!(http11_get(web, "/").is_some_and(|b| b.starts_with("hello from web")));
    let api_pod = k.pods(&ns2.name, "app=api");
    assert_eq!(
        k.jsonpath(
            &ns2.name,
            &format!("pod/{}", api_pod[0]),
            "{.spec.initContainers[0].name}"
        ),
        "lks-agent-install",
        "the webhook injected the dependency"
    );
    up.terminate();

    // 5. The webhook down never blocks a pod: created without the agent.
    k.kubectl_ok(&[
        "scale",
        "-n",
        "lks-system",
        "deploy/lks-webhook",
        "--replicas=0",
    ]);
    k.eventually("the webhook's pod is gone", Duration::from_secs(60), || {
        k.pods("lks-system", "app.kubernetes.io/name=lks-webhook")
            .is_empty()
    });
    let t = Instant::now();
    k.apply(n, &deployment("later", &image, true));
    k.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        n,
        "deploy/later",
        "--timeout=120s",
    ]);
    eprintln!(
        "a pod created while the webhook is down ran after {:?}",
        t.elapsed()
    );
    let later = k.pods(n, "app=later");
    assert_eq!(
        pod(&later[0], "{.spec.initContainers}"),
        "",
        "not injected, not blocked"
    );

    // 6. Uninstalled: gone.
    let out = k.lks(ws, &["webhook", "uninstall"]);
    assert!(
        said(&out).contains("deleted MutatingWebhookConfiguration"),
        "{}",
        said(&out)
    );
    let status = k.lks(ws, &["webhook", "status"]);
    assert!(said(&status).contains("not installed"), "{}", said(&status));
}
