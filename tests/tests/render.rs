//! `lks render` through the real CLI: a service's manifests with its image in
//! place, lks's labels, and the agent injected into the pod template of a
//! live service; every object valid for the pinned Kubernetes version.

use lks_e2e::*;
use std::path::Path;
use std::process::{Command, Output};

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: web
          command: [node, server.js]
          ports: [{containerPort: 18080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 18080}]
"#;

fn workspace(dir: &Path, manifests: &str) {
    write(
        dir,
        "lks.yaml",
        "services: [\"web/lks.service.yaml\"]\nregistry: 127.0.0.1:5000\n",
    );
    write(
        dir,
        "web/lks.service.yaml",
        "name: web\ncommand: node server.js\nk8s: [\"k8s/*.yaml\"]\n",
    );
    write(dir, "web/k8s/web.yaml", manifests);
    write(
        dir,
        "web/server.js",
        "require('http').createServer((q, r) => r.end('hi')).listen(18080)\n",
    );
    write(
        dir,
        "web/Dockerfile",
        "FROM scratch\nCOPY server.js /app/\n",
    );
}

fn render(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("lks"))
        .arg("render")
        .args(["-f", dir.join("lks.yaml").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn documents(out: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn a_live_service_renders_with_its_image_labels_and_the_agent_injected() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(tmp.path(), DEPLOYMENT);
    let out = render(tmp.path(), &["web"]);
    assert_success(&out);
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    kubernetes_validate(&yaml, K8S_VERSION).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let docs = documents(&out);
    assert_eq!(docs.len(), 2, "{yaml}");
    let (d, s) = (&docs[0], &docs[1]);
    for o in [d, s] {
        assert_eq!(o["metadata"]["labels"]["lks.dev/managed"], "true");
        assert_eq!(o["metadata"]["labels"]["lks.dev/service"], "web");
    }
    let pod = &d["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["lks.dev/agent"], "true",
        "opted in by lks"
    );
    let c = &pod["spec"]["containers"][0];
    let image = c["image"].as_str().unwrap();
    assert!(image.starts_with("localhost:5000/web:dev-"), "{image}");
    let argv: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[..2], ["/.lks/lks-agent", "supervise"]);
    assert_eq!(argv[argv.len() - 2..], ["node", "server.js"]);
    assert_eq!(
        pod["spec"]["initContainers"][0]["name"],
        "lks-agent-install"
    );
    assert!(
        pod["spec"]["initContainers"][0]["image"]
            .as_str()
            .unwrap()
            .starts_with("localhost:5000/lks-agent:")
    );
    // The Service is not a workload: labels only.
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 18080);
}

#[test]
fn a_live_pod_waits_for_the_first_sync_and_gets_its_token_from_an_optional_secret() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(tmp.path(), DEPLOYMENT);
    let out = render(tmp.path(), &["web"]);
    assert_success(&out);
    let docs = documents(&out);
    let pod = &docs[0]["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["lks.dev/wait-for-sync"],
        "10"
    );
    let c = &pod["spec"]["containers"][0];
    let argv: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = argv.iter().position(|a| *a == "--wait-for-sync").unwrap();
    assert_eq!(argv[at + 1], "10");
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"]["optional"], true,
        "the pod starts without lks's Secret"
    );
}

#[test]
fn with_a_namespace_namespaced_objects_that_name_none_go_there_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n\
                 ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: pinned, namespace: other}\n";
    workspace(tmp.path(), &format!("{DEPLOYMENT}{extra}"));
    // No cluster is asked: KUBECONFIG names nothing.
    let out = Command::new(bin("lks"))
        .arg("render")
        .args(["-f", tmp.path().join("lks.yaml").to_str().unwrap()])
        .args(["web", "--namespace", "pr-42"])
        .env("KUBECONFIG", tmp.path().join("none"))
        .output()
        .unwrap();
    assert_success(&out);
    let docs = documents(&out);
    let ns: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["namespace"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(ns, ["pr-42", "pr-42", "-", "other"], "{docs:#?}");
}

#[test]
fn a_service_that_is_not_live_keeps_its_pods_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(tmp.path(), DEPLOYMENT);
    // Another service is the live one: web renders with `latest` and no agent.
    write(
        tmp.path(),
        "lks.yaml",
        "services: [\"web/lks.service.yaml\", \"other/lks.service.yaml\"]\n",
    );
    write(
        tmp.path(),
        "other/lks.service.yaml",
        "name: other\ncommand: sleep 1\n",
    );
    let out = render(tmp.path(), &["web", "--local", "other"]);
    assert_success(&out);
    let docs = documents(&out);
    let pod = &docs[0]["spec"]["template"];
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "localhost:5000/web:latest"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["command"],
        serde_json::json!(["node", "server.js"])
    );
    assert!(pod["spec"]["initContainers"].is_null());
    kubernetes_validate(&String::from_utf8_lossy(&out.stdout), K8S_VERSION).unwrap();
}

#[test]
fn a_container_without_command_whose_image_is_unknown_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(
        tmp.path(),
        &DEPLOYMENT.replace("          command: [node, server.js]\n", ""),
    );
    let out = render(tmp.path(), &["web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Deployment web") && err.contains("command"),
        "{err}"
    );
}

#[test]
fn a_k8s_glob_that_matches_nothing_is_a_config_error_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(tmp.path(), DEPLOYMENT);
    write(
        tmp.path(),
        "web/lks.service.yaml",
        "name: web\ncommand: node server.js\nk8s: [\"deploy/*.yaml\"]\n",
    );
    let out = render(tmp.path(), &["web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web/lks.service.yaml:3:7") && err.contains("matches no file"),
        "{err}"
    );
}

#[test]
fn up_on_the_kube_runtime_without_a_cluster_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(tmp.path(), DEPLOYMENT);
    let started = std::time::Instant::now();
    let out = Command::new(bin("lks"))
        .args(["up", "--runtime", "kube", "-f"])
        .arg(tmp.path().join("lks.yaml"))
        .env("KUBECONFIG", tmp.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Kubernetes cluster to talk to") && err.contains("lks cluster create"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn an_entrypoint_override_replaces_the_containers_command_and_args_and_is_still_supervised() {
    let tmp = tempfile::tempdir().unwrap();
    workspace(
        tmp.path(),
        &DEPLOYMENT.replace(
            "command: [node, server.js]",
            "command: [node, server.js]\n          args: [--port, \"18080\"]",
        ),
    );
    write(
        tmp.path(),
        "web/lks.service.yaml",
        "name: web\ncommand: node server.js\nentrypoint: {sh: 'exec node --inspect server.js'}\n\
         k8s: [\"k8s/*.yaml\"]\n",
    );
    let out = render(tmp.path(), &["web"]);
    assert_success(&out);
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    kubernetes_validate(&yaml, K8S_VERSION).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let docs = documents(&out);
    let c = &docs[0]["spec"]["template"]["spec"]["containers"][0];
    let argv: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(argv[..2], ["/.lks/lks-agent", "supervise"]);
    let app = &argv[argv.iter().position(|a| *a == "--").unwrap() + 1..];
    assert_eq!(app, ["/bin/sh", "-c", "exec node --inspect server.js"]);
    assert!(
        c.get("args").is_none(),
        "the manifest's args stayed: {yaml}"
    );
}
