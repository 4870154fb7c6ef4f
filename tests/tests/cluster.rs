//! `lks cluster`, through the real binary. No cluster can run on these
//! machines, so what `lks cluster create` would apply is checked through
//! `--dry-run`: its output is compared with the snapshots in
//! `tests/snapshots/cluster/` (`LKS_UPDATE_SNAPSHOTS=1` rewrites them), every
//! Kubernetes object in it is validated against the API schemas
//! (`kubernetes-validate`), the kind configuration is read back, and the
//! webhook's certificates are verified. The failures that need no cluster
//! (no kind, no cluster) are run for real. The real-cluster test at the end
//! is `#[ignore]`d: run it where kind and Docker can create clusters with
//! `cargo test -p lks-e2e --test cluster -- --ignored`.

use lks_e2e::{
    DockerCleanup, DockerObjects, K8S_VERSION, assert_snapshot, bin, docker, docker_inspect,
    docker_text, docker_unchecked, kubernetes_validate, lks_in, require_image, text,
};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A workspace whose lks.yaml pins the cluster and the registry.
fn workspace(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lks.yaml"), yaml).unwrap();
    dir
}

/// The pinned workspace of the snapshots.
const PINNED: &str = "\
registry: 127.0.0.1:5001
cluster:
  name: lks-e2e
  kubernetes_version: \"1.33.4\"
services: []
";

fn lks(dir: &Path, args: &[&str]) -> Output {
    lks_in(dir, args)
}

/// `lks cluster create --dry-run [extra]` in `dir`; must succeed.
fn dry_run(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["cluster", "create", "--dry-run"];
    args.extend_from_slice(extra);
    let out = lks(dir, &args);
    assert!(
        out.status.success(),
        "lks {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The YAML documents of a dry run (comment-only documents skipped).
fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.iter()
        .map(|d| {
            serde_yaml::from_str::<Value>(d)
                .unwrap_or_else(|e| panic!("a document is not YAML ({e}):\n{d}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Keys whose values are made fresh by every run (certificates, the key,
/// and the pod annotation derived from the certificate).
const GENERATED: &[&str] = &[
    "tls.crt: ",
    "tls.key: ",
    "ca.crt: ",
    "caBundle: ",
    "lks.dev/tls-cert: ",
];

/// The output with generated values replaced by `<generated>`, and the
/// agent image's content tag (it changes with every build of the agent) by
/// `dev-<content>`.
fn mask(output: &str) -> String {
    let mut out = String::new();
    for line in output.lines() {
        let line = &mask_content_tag(line);
        match GENERATED
            .iter()
            .find_map(|k| line.find(k).map(|i| i + k.len()))
        {
            Some(end) => {
                out.push_str(&line[..end]);
                out.push_str("<generated>");
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `line` with `lks-agent:dev-DIGEST` written `lks-agent:dev-<content>`.
fn mask_content_tag(line: &str) -> String {
    const TAG: &str = "lks-agent:dev-";
    match line.find(TAG) {
        Some(i) => {
            let end = (i + TAG.len() + 16).min(line.len());
            format!(
                "{}{TAG}<content>{}",
                &line[..i],
                mask_content_tag(&line[end..])
            )
        }
        None => line.to_string(),
    }
}

/// The kind configuration (the document of kind `Cluster`).
fn kind_config(docs: &[Value]) -> &Value {
    let configs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["apiVersion"] == "kind.x-k8s.io/v1alpha4")
        .collect();
    assert_eq!(configs.len(), 1, "one kind configuration: {docs:#?}");
    configs[0]
}

/// The Kubernetes objects (every document but the kind configuration).
fn objects(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| d["apiVersion"] != "kind.x-k8s.io/v1alpha4")
        .collect()
}

fn kinds(objects: &[&Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn dry_run_matches_the_snapshots() {
    let ws = workspace(PINNED);
    let plain = dry_run(ws.path(), &[]);
    assert!(
        !plain.contains("<generated>") && GENERATED.iter().all(|k| !plain.contains(k)),
        "without --webhook nothing is generated:\n{plain}"
    );
    assert_snapshot("cluster/create-dry-run.yaml", &plain);

    let with_webhook = mask(&dry_run(ws.path(), &["--webhook"]));
    assert_eq!(
        with_webhook.matches("<generated>").count(),
        GENERATED.len(),
        "each generated value is masked, once:\n{with_webhook}"
    );
    // Everything else is the same from one run to the next.
    assert_eq!(with_webhook, mask(&dry_run(ws.path(), &["--webhook"])));
    assert_snapshot("cluster/create-dry-run-webhook.yaml", &with_webhook);
}

#[test]
fn dry_run_objects_pass_kubernetes_validate() {
    let ws = workspace(PINNED);
    let docs = documents(&dry_run(ws.path(), &["--webhook"]));
    let objects = objects(&docs);
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap/local-registry-hosting",
            "Namespace/lks-system",
            "Secret/lks-webhook-tls",
            "Deployment/lks-webhook",
            "Service/lks-webhook",
            "MutatingWebhookConfiguration/lks-agent-injector",
        ]
    );
    for o in &objects {
        let yaml = serde_yaml::to_string(o).unwrap();
        if let Err(e) = kubernetes_validate(&yaml, K8S_VERSION) {
            panic!("{} fails validation:\n{e}\n{yaml}", kinds(&[o])[0]);
        }
    }
    // The validator does reject a broken object (so the loop above can fail).
    let mut broken = (*objects[3]).clone();
    broken["spec"]["replicas"] = Value::from("one");
    assert!(kubernetes_validate(&serde_yaml::to_string(&broken).unwrap(), K8S_VERSION).is_err());
}

#[test]
fn dry_run_kind_config_pins_the_workspace_version_and_wires_ingress_and_registry() {
    let ws = workspace(PINNED);
    let docs = documents(&dry_run(ws.path(), &[]));
    let config = kind_config(&docs);
    assert_eq!(config["kind"], "Cluster");
    assert_eq!(config["name"], "lks-e2e");
    let nodes = config["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node["role"], "control-plane");
    assert_eq!(
        node["image"], "kindest/node:v1.33.4",
        "the version lks.yaml pins"
    );
    assert_eq!(
        node["labels"]["ingress-ready"], "true",
        "the node ingress-nginx's kind manifest runs on"
    );
    let ports: Vec<(u64, u64, &str)> = node["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().unwrap(),
                p["hostPort"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(80, 80, "TCP"), (443, 443, "TCP")]);
    let containerd = config["containerdConfigPatches"][0].as_str().unwrap();
    assert!(
        containerd.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]")
            && containerd.contains("config_path = \"/etc/containerd/certs.d\""),
        "{containerd}"
    );
    // The registry's port reaches the ConfigMap (KEP-1755).
    let cm = objects(&docs)[0];
    let hosting: Value =
        serde_yaml::from_str(cm["data"]["localRegistryHosting.v1"].as_str().unwrap()).unwrap();
    assert_eq!(hosting["host"], "localhost:5001");
    assert_eq!(
        hosting["help"],
        "https://kind.sigs.k8s.io/docs/user/local-registry/"
    );
}

#[test]
fn dry_run_without_a_workspace_uses_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let output = dry_run(dir.path(), &["--webhook"]);
    let docs = documents(&output);
    let config = kind_config(&docs);
    assert_eq!(config["name"], "lks");
    assert_eq!(
        config["nodes"][0]["image"],
        format!("kindest/node:v{K8S_VERSION}").as_str()
    );
    let objects = objects(&docs);
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.starts_with("localhost:5000/lks-agent:"),
        "the agent image from the default registry, as the nodes see it: {image}"
    );
    assert!(output.contains("kube context kind-lks"), "{output}");
}

#[test]
fn a_broken_workspace_is_an_error_not_the_defaults() {
    let ws = workspace("cluster:\n  name: dev\n  kubernetes_version: latest\nservices: []\n");
    let out = lks(ws.path(), &["cluster", "create", "--dry-run"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("lks.yaml:3:") && err.contains("kubernetes_version"),
        "the error points at the line: {err}"
    );
}

/// The webhook's serving certificate in the dry run verifies against the CA
/// it carries, for the Service's DNS name.
#[test]
fn dry_run_webhook_certificate_verifies_against_its_ca() {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    let ws = workspace(PINNED);
    let docs = documents(&dry_run(ws.path(), &["--webhook"]));
    let objects = objects(&docs);
    let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
    let hook = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let ca_bundle = hook["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap();
    assert_eq!(ca_bundle, secret["data"]["ca.crt"].as_str().unwrap());
    let ca = base64_decode(ca_bundle);
    let cert = base64_decode(secret["data"]["tls.crt"].as_str().unwrap());
    let key = base64_decode(secret["data"]["tls.key"].as_str().unwrap());
    assert!(String::from_utf8_lossy(&key).starts_with("-----BEGIN PRIVATE KEY-----"));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(&cert).unwrap();
    for (name, good) in [
        ("lks-webhook.lks-system.svc", true),
        ("lks-webhook.lks-system.svc.cluster.local", true),
        ("lks-webhook.default.svc", false),
    ] {
        let result = verifier.verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(name).unwrap(),
            &[],
            UnixTime::now(),
        );
        assert_eq!(result.is_ok(), good, "{name}: {result:?}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("not base64: {c:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A directory holding only `docker` (when this machine has it): a PATH
/// without kind.
fn path_without_kind() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let docker = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("docker"))
            .find(|d| d.is_file())
    });
    if let Some(docker) = docker {
        std::os::unix::fs::symlink(docker, dir.path().join("docker")).unwrap();
    }
    dir
}

#[test]
fn create_without_kind_fails_fast_saying_how_to_install_it() {
    // A registry port nothing else uses: create must not even start it.
    let ws =
        workspace("registry: 127.0.0.1:5986\ncluster:\n  name: lks-e2e-nokind\nservices: []\n");
    let bin_dir = path_without_kind();
    let started = Instant::now();
    let out = Command::new(bin("lks"))
        .args(["cluster", "create"])
        .current_dir(ws.path())
        .env("PATH", bin_dir.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("kind is not installed"), "{err}");
    assert!(err.contains("go install sigs.k8s.io/kind@v0."), "{err}");
    assert!(err.contains("https://kind.sigs.k8s.io/dl/v0."), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        !text(&out.stdout).contains("==>"),
        "no step ran: {}",
        text(&out.stdout)
    );
    // Nothing was started.
    if Command::new("docker")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let ps = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                "name=lks-registry-5986",
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        assert_eq!(text(&ps.stdout).trim(), "", "create started the registry");
    }
}

#[test]
fn delete_without_kind_says_how_to_install_it() {
    let ws = workspace("cluster:\n  name: lks-e2e-nokind\nservices: []\n");
    let bin_dir = path_without_kind();
    let out = Command::new(bin("lks"))
        .args(["cluster", "delete"])
        .current_dir(ws.path())
        .env("PATH", bin_dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("go install sigs.k8s.io/kind@"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn status_without_the_cluster_fails_clearly() {
    // A name no real cluster has, and a kubeconfig that does not exist.
    let name = format!("lks-e2e-missing-{}", std::process::id());
    let ws = workspace(&format!("cluster:\n  name: {name}\nservices: []\n"));
    let out = Command::new(bin("lks"))
        .args(["cluster", "status"])
        .current_dir(ws.path())
        .env("KUBECONFIG", ws.path().join("no-kubeconfig"))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("{name} does not exist")),
        "one line says whether the cluster exists: {stdout}"
    );
    assert!(
        stdout.contains(&format!("kind-{name} missing")),
        "one line says whether the context exists: {stdout}"
    );
    assert!(
        stderr.contains(&format!("the cluster {name} does not exist"))
            && stderr.contains("lks cluster create"),
        "{stderr}"
    );
}

/// A stand-in for the API server: plain HTTP, one request per connection.
/// It answers discovery, stores what is server-side applied and serves it
/// back (Deployments as rolled out), lists one Ready node, and records every
/// request.
mod fake_api {
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// A stand-in for ingress-nginx's manifest, served at `/manifests/ingress.yaml`.
    pub const INGRESS_MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: ingress-nginx
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ingress-nginx-controller
  namespace: ingress-nginx
spec:
  replicas: 1
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers: [{name: c, image: x}]
";

    /// One request: method, path, query.
    pub type Seen = (String, String, String);

    pub struct FakeApi {
        pub url: String,
        pub seen: Arc<Mutex<Vec<Seen>>>,
    }

    pub fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let store: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, store) = (recorded.clone(), store.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &seen, &store);
                });
            }
        });
        FakeApi { url, seen }
    }

    fn serve(
        stream: TcpStream,
        seen: &Mutex<Vec<Seen>>,
        store: &Mutex<HashMap<String, Value>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            if header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        seen.lock()
            .unwrap()
            .push((method.clone(), path.to_string(), query.to_string()));
        let (code, text) = if method == "GET" && path == "/manifests/ingress.yaml" {
            (200, INGRESS_MANIFEST.to_string())
        } else {
            let (code, answer) = answer(&method, path, &body, store);
            (code, answer.to_string())
        };
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
        stream.flush()
    }

    fn resources(group_version: &str, list: &[(&str, &str, bool)]) -> Value {
        let resources: Vec<Value> = list
            .iter()
            .map(|(name, kind, namespaced)| {
                json!({ "name": name, "singularName": "", "kind": kind, "namespaced": namespaced,
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"] })
            })
            .collect();
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": resources })
    }

    fn not_found() -> (u16, Value) {
        (
            404,
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found" }),
        )
    }

    fn answer(
        method: &str,
        path: &str,
        body: &[u8],
        store: &Mutex<HashMap<String, Value>>,
    ) -> (u16, Value) {
        match (method, path) {
            ("GET", "/version") => (
                200,
                json!({ "major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "0",
                        "gitTreeState": "clean", "buildDate": "2025-08-27T00:00:00Z",
                        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
            ),
            ("GET", "/api/v1") => (
                200,
                resources(
                    "v1",
                    &[
                        ("namespaces", "Namespace", false),
                        ("configmaps", "ConfigMap", true),
                        ("secrets", "Secret", true),
                        ("services", "Service", true),
                        ("serviceaccounts", "ServiceAccount", true),
                        ("nodes", "Node", false),
                    ],
                ),
            ),
            ("GET", "/apis/apps/v1") => (
                200,
                resources("apps/v1", &[("deployments", "Deployment", true)]),
            ),
            ("GET", "/apis/admissionregistration.k8s.io/v1") => (
                200,
                resources(
                    "admissionregistration.k8s.io/v1",
                    &[(
                        "mutatingwebhookconfigurations",
                        "MutatingWebhookConfiguration",
                        false,
                    )],
                ),
            ),
            ("GET", "/api/v1/nodes") => (
                200,
                json!({ "kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [{
                    "metadata": { "name": "fake-control-plane" },
                    "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
                }] }),
            ),
            ("PATCH", _) => {
                let object: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                store
                    .lock()
                    .unwrap()
                    .insert(path.to_string(), object.clone());
                (200, object)
            }
            ("GET", _) => match store.lock().unwrap().get(path) {
                Some(object) => {
                    let mut object = object.clone();
                    if object["kind"] == "Deployment" {
                        object["metadata"]["generation"] = json!(1);
                        object["status"] = json!({ "observedGeneration": 1, "replicas": 1,
                            "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1 });
                    }
                    (200, object)
                }
                None => not_found(),
            },
            _ => not_found(),
        }
    }
}

/// `lks cluster create` and `status` for real except for kind and the API
/// server: a fake `kind` on PATH (it "creates" the cluster by starting a
/// node container lks made look like kind's, and records the configuration
/// it was given), a fake API server in the kubeconfig, and the real Docker
/// engine and registry. Checks the configuration piped to kind, hosts.toml in
/// the node, the registry on the `kind` network, server-side applies, the
/// repair of a stopped node on a second run, `status`, an ingress manifest
/// that cannot be fetched, and `--webhook` without the agent image.
#[test]
fn create_and_status_with_a_fake_kind_and_api_server() {
    require_image("lks/debian:bookworm", "images/base/build.sh");
    require_image("lks/registry:2", "images/registry/build.sh");
    let name = format!("lks-e2e-fake-{}", std::process::id());
    let node = format!("{name}-control-plane");
    let port = 5987;
    let registry = format!("lks-registry-{port}");
    let created_network = docker_unchecked(&["network", "inspect", "kind"])
        .status
        .success()
        .then_some(())
        .is_none();
    if created_network {
        docker(&["network", "create", "kind"]);
    }
    let _cleanup = DockerCleanup(DockerObjects {
        repos: vec![format!("127.0.0.1:{port}/lks-agent")],
        containers: vec![node.clone(), registry.clone()],
        volumes: vec![format!("{registry}-data")],
        networks: created_network
            .then(|| "kind".to_string())
            .into_iter()
            .collect(),
        ..Default::default()
    });
    docker_unchecked(&["rm", "-f", &registry]);
    docker(&[
        "create",
        "--name",
        &node,
        "--label",
        &format!("io.x-k8s.kind.cluster={name}"),
        "lks/debian:bookworm",
        "sleep",
        "infinity",
    ]);

    let ws = workspace(&format!(
        "registry: 127.0.0.1:{port}\ncluster:\n  name: {name}\n  kubernetes_version: \"1.33.4\"\nservices: []\n"
    ));
    let dir = ws.path();
    let api = fake_api::start();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kind-{name}\n\
             clusters:\n- name: kind-{name}\n  cluster:\n    server: {}\n\
             contexts:\n- name: kind-{name}\n  context:\n    cluster: kind-{name}\n    user: kind-{name}\n\
             users:\n- name: kind-{name}\n  user: {{}}\n",
            api.url
        ),
    )
    .unwrap();
    let bin_dir = dir.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let fake_kind = bin_dir.join("kind");
    std::fs::write(
        &fake_kind,
        format!(
            "#!/bin/sh\n\
             echo \"$*\" >> '{log}'\n\
             case \"$1 $2\" in\n\
             'get clusters') [ -e '{exists}' ] && echo {name}; exit 0 ;;\n\
             'create cluster') cat > '{config}' && docker start {node} >/dev/null && touch '{exists}' ;;\n\
             *) exit 0 ;;\n\
             esac\n",
            log = dir.join("kind.log").display(),
            exists = dir.join("exists").display(),
            config = dir.join("kind-config.yaml").display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake_kind, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = dir.join("ingress.yaml");
    std::fs::write(&manifest, fake_api::INGRESS_MANIFEST).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| -> (bool, String, String) {
        let out = Command::new(bin("lks"))
            .args(args)
            .current_dir(dir)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        eprintln!("lks {args:?}:\n{stdout}{stderr}");
        (out.status.success(), stdout, stderr)
    };
    let manifest_arg = manifest.to_str().unwrap();
    let hosts_toml = || {
        docker_text(&[
            "exec",
            &node,
            "cat",
            &format!("/etc/containerd/certs.d/localhost:{port}/hosts.toml"),
        ])
    };
    let patched = |seen: &[fake_api::Seen]| -> Vec<String> {
        seen.iter()
            .filter(|(m, _, _)| m == "PATCH")
            .map(|(_, p, q)| {
                assert!(
                    q.contains("fieldManager=lks") && q.contains("force=true"),
                    "{q}"
                );
                p.clone()
            })
            .collect()
    };

    // 1. kind does not know the cluster: it is created from the configuration
    // (ingress-nginx's manifest fetched from a URL).
    let manifest_url = format!("{}/manifests/ingress.yaml", api.url);
    let (ok, stdout, _) = run(&["cluster", "create", "--ingress-manifest", &manifest_url]);
    assert!(ok);
    let config = std::fs::read_to_string(dir.join("kind-config.yaml")).unwrap();
    let config: Value = serde_yaml::from_str(&config).unwrap();
    assert_eq!(config["name"], name.as_str());
    assert_eq!(config["nodes"][0]["image"], "kindest/node:v1.33.4");
    let kind_log = std::fs::read_to_string(dir.join("kind.log")).unwrap();
    assert!(
        kind_log.contains(&format!("create cluster --name {name} --config -")),
        "{kind_log}"
    );
    assert!(
        hosts_toml().contains(&format!("[host.\"http://{registry}:5000\"]")),
        "{}",
        hosts_toml()
    );
    let networks = docker_inspect(
        &registry,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert!(
        networks.split_whitespace().any(|n| n == "kind"),
        "{networks}"
    );
    assert_eq!(
        patched(&api.seen.lock().unwrap()),
        [
            "/api/v1/namespaces/kube-public/configmaps/local-registry-hosting",
            "/api/v1/namespaces/ingress-nginx",
            "/apis/apps/v1/namespaces/ingress-nginx/deployments/ingress-nginx-controller",
        ]
    );
    assert!(
        stdout.contains(&format!("cluster {name} ready")),
        "{stdout}"
    );

    // 2. The node stopped and hosts.toml lost: a second run repairs both,
    // without creating anything with kind (the manifest read from a file).
    docker(&["exec", &node, "rm", "-rf", "/etc/containerd/certs.d"]);
    docker(&["stop", "-t", "0", &node]);
    api.seen.lock().unwrap().clear();
    let (ok, stdout, _) = run(&["cluster", "create", "--ingress-manifest", manifest_arg]);
    assert!(ok);
    assert!(
        stdout.contains(&format!("the kind cluster {name} exists")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("starting the stopped node {node}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("docker network connect"),
        "already connected: {stdout}"
    );
    assert!(hosts_toml().contains(&format!("http://{registry}:5000")));
    assert_eq!(
        patched(&api.seen.lock().unwrap()).len(),
        3,
        "the same objects applied again"
    );
    let kind_log = std::fs::read_to_string(dir.join("kind.log")).unwrap();
    assert_eq!(kind_log.matches("create cluster").count(), 1, "{kind_log}");

    // 3. status: one line per part.
    let (ok, stdout, _) = run(&["cluster", "status"]);
    assert!(ok);
    for expected in [
        format!("{name} exists"),
        format!("kind-{name} present"),
        "1/1 Ready".to_string(),
        format!("127.0.0.1:{port} answers"),
        format!("local-registry-hosting present (host localhost:{port})"),
        "ready (ingress-nginx/ingress-nginx-controller)".to_string(),
        "not installed (`lks webhook install`, or `lks cluster create --webhook`".to_string(),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} in:\n{stdout}");
    }

    // 4. An ingress manifest that cannot be fetched: the rest is done, and
    // the error says how to apply it by hand.
    let (ok, _, stderr) = run(&[
        "cluster",
        "create",
        "--ingress-manifest",
        "https://lks-e2e.invalid/deploy.yaml",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("ingress-nginx is not installed")
            && stderr.contains("lks-e2e.invalid")
            && stderr.contains(&format!("kubectl --context kind-{name} apply")),
        "{stderr}"
    );

    // 5. --webhook builds and pushes the agent image, named by its content,
    // and installs the webhook running it; a second run keeps its
    // certificate.
    api.seen.lock().unwrap().clear();
    let webhook = [
        "cluster",
        "create",
        "--webhook",
        "--ingress-manifest",
        manifest_arg,
    ];
    let (ok, stdout, _) = run(&webhook);
    assert!(ok);
    assert!(
        stdout.contains("making its CA and serving certificate"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("running localhost:{port}/lks-agent:dev-")),
        "{stdout}"
    );
    let tags = tags_in_registry(port, "lks-agent");
    assert!(tags.iter().any(|t| t.starts_with("dev-")), "{tags:?}");
    let applied = patched(&api.seen.lock().unwrap());
    for path in [
        "/api/v1/namespaces/lks-system",
        "/api/v1/namespaces/lks-system/secrets/lks-webhook-tls",
        "/apis/apps/v1/namespaces/lks-system/deployments/lks-webhook",
        "/api/v1/namespaces/lks-system/services/lks-webhook",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lks-agent-injector",
    ] {
        assert!(applied.iter().any(|p| p == path), "{path} in {applied:?}");
    }
    let (ok, stdout, _) = run(&webhook);
    assert!(ok);
    assert!(
        stdout.contains("keeping its serving certificate"),
        "{stdout}"
    );
    let (ok, stdout, _) = run(&["cluster", "status"]);
    assert!(ok);
    assert!(
        stdout.contains(&format!("installed and ready (localhost:{port}/lks-agent:")),
        "{stdout}"
    );
}

/// The whole life of a real cluster: create (twice: the second run repairs
/// nothing and succeeds), status, delete. Needs kind, Docker that can run
/// kind nodes, ports 80 and 443 free, and network access for the node image
/// and ingress-nginx.
#[test]
#[ignore = "needs cluster"]
fn real_cluster_create_status_delete() {
    let name = format!("lks-e2e-{}", std::process::id());
    let ws = workspace(&format!(
        "cluster:\n  name: {name}\n  kubernetes_version: \"{K8S_VERSION}\"\nservices: []\n"
    ));
    let run = |args: &[&str]| {
        let out = lks(ws.path(), args);
        eprintln!("lks {args:?}:\n{}{}", text(&out.stdout), text(&out.stderr));
        out
    };
    let created = run(&["cluster", "create"]);
    assert!(created.status.success());
    assert!(
        run(&["cluster", "create"]).status.success(),
        "create again repairs and succeeds"
    );
    let status = run(&["cluster", "status"]);
    assert!(status.status.success());
    let stdout = text(&status.stdout);
    for expected in [
        format!("{name} exists"),
        format!("kind-{name} present"),
        "1/1 Ready".to_string(),
        "local-registry-hosting present (host localhost:5000)".to_string(),
        "ready (ingress-nginx/ingress-nginx-controller)".to_string(),
        "not installed (`lks webhook install`, or `lks cluster create --webhook`".to_string(),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} in {stdout}");
    }
    assert!(run(&["cluster", "delete"]).status.success());
    assert!(!run(&["cluster", "status"]).status.success());
}

/// The tags of `repo` in the registry on 127.0.0.1:`port`.
fn tags_in_registry(port: u16, repo: &str) -> Vec<String> {
    let body = lks_e2e::http_get(port, &format!("/v2/{repo}/tags/list")).unwrap_or_default();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["tags"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect()
}
