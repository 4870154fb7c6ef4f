//! `lks-agent webhook`, the real binary over real TLS: a CA and a server
//! certificate made with rcgen, AdmissionReviews sent by a rustls client that
//! trusts only that CA. The patch it answers, applied to the pod, must give what
//! `lks_k8s::inject` gives; and `lks-agent install`, which the injected init
//! container runs.

use lks_e2e::*;
use lks_k8s::inject::{self, InjectOptions, Outcome};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const AGENT_IMAGE: &str = "localhost:5001/lks-agent:0.1.0";

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
struct Certs {
    _dir: tempfile::TempDir,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn certs() -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lks test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "lks-webhook");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Certs {
        ca_pem: ca.pem(),
        _dir: dir,
        cert: cert_file,
        key: key_file,
    }
}

/// A TLS client configuration trusting only `ca_pem`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// An HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A running `lks-agent webhook`.
struct Webhook {
    child: Child,
    port: u16,
    client: Arc<rustls::ClientConfig>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    _certs: Certs,
}

impl Webhook {
    fn start() -> Webhook {
        let certs = certs();
        let port = free_port();
        let mut child = Command::new(bin("lks-agent"))
            .arg("webhook")
            .arg("--tls-cert")
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--agent-image", AGENT_IMAGE])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lks-agent webhook");
        let stderr = lines(child.stderr.take().unwrap());
        let stdout = lines(child.stdout.take().unwrap());
        match stdout.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => assert_eq!(line, format!("listening on 127.0.0.1:{port}")),
            Err(_) => {
                let _ = child.kill();
                let errors: Vec<String> = stderr.try_iter().collect();
                panic!("lks-agent webhook did not start:\n{}", errors.join("\n"));
            }
        }
        Webhook {
            child,
            port,
            client: client_config(&certs.ca_pem),
            stderr,
            seen: Vec::new(),
            _certs: certs,
        }
    }

    /// One request over TLS, verifying the server as `server_name`.
    fn request_as(
        &self,
        client: Arc<rustls::ClientConfig>,
        server_name: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from(server_name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(client, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes())?;
        tls.write_all(body)?;
        tls.flush()?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // The server closed without close_notify after a complete response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e),
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line: {head}"));
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head}"
        );
        Ok(Resp {
            status,
            head,
            body: raw[split + 4..].to_vec(),
        })
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.request_as(self.client.clone(), "localhost", method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends an AdmissionReview for `pod`; checks the envelope and returns its `response`.
    fn review(&self, pod: &Value) -> Value {
        let uid = format!("{:032x}", rand::random::<u128>());
        let body = serde_json::to_vec(&admission_review(&uid, pod)).unwrap();
        let resp = self.request("POST", "/mutate", &body);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            resp.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            resp.head
        );
        let review: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = review["response"].clone();
        assert_eq!(
            response["uid"],
            uid.as_str(),
            "the answer carries the request's uid"
        );
        assert_eq!(response["allowed"], true);
        response
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no log line containing {needle:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn assert_serving(&self) {
        let resp = self.request("GET", "/healthz", b"");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "ok\n");
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An AdmissionReview as the API server sends it when a ReplicaSet creates a pod.
fn admission_review(uid: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "dev",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "2cbd6b1e-5bb5-4d45-8c2a-6f9a4b2f9d8e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

/// A pod as the API server hands it to mutating webhooks: defaults filled in,
/// the service account token volume already added, no name yet.
fn pod(annotations: Value, container: Value) -> Value {
    let mut container = container;
    let defaults = json!({
        "imagePullPolicy": "Always",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [{
            "name": "kube-api-access-x7k2p",
            "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        }],
    });
    for (k, v) in defaults.as_object().unwrap() {
        container[k] = v.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9c6b5f4-",
            "namespace": "dev",
            "labels": {"app": "web", "pod-template-hash": "7d9c6b5f4"},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9c6b5f4",
                "uid": "0d0f6c53-8c1f-4a8e-9d7c-2f4ab3c1e9a0",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "volumes": [{
                "name": "kube-api-access-x7k2p",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }],
        },
        "status": {},
    })
}

fn annotated_pod() -> Value {
    pod(
        json!({"lks.dev/agent": "true", "lks.dev/root": "/usr/src/app"}),
        json!({
            "name": "web",
            "image": "localhost:5001/web:latest",
            "command": ["node", "server.js"],
            "args": ["--port", "3000"],
            "env": [{"name": "NODE_ENV", "value": "development"}],
        }),
    )
}

/// Decodes base64 with coreutils (an implementation independent of the webhook's).
fn base64_decode(text: &str) -> Vec<u8> {
    let mut child = Command::new("base64")
        .arg("--decode")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run base64 (coreutils)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not base64: {text}");
    out.stdout
}

/// The pod with the response's JSONPatch applied.
fn apply_patch(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64_decode(response["patch"].as_str().expect("a base64 patch"));
    let patch: json_patch::Patch = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not a JSONPatch ({e}): {}", String::from_utf8_lossy(&bytes)));
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|e| panic!("patch fails ({e}): {patch:?}"));
    patched
}

#[test]
fn patch_gives_what_inject_gives_and_a_second_review_changes_nothing() {
    let mut webhook = Webhook::start();
    let original = annotated_pod();
    let response = webhook.review(&original);
    assert!(response.get("warnings").is_none(), "{response}");
    let patched = apply_patch(&original, &response);

    let mut expected = original.clone();
    let opts = InjectOptions {
        agent_image: AGENT_IMAGE.into(),
    };
    assert_eq!(
        inject::inject(&mut expected, &opts, &|_| None),
        Ok(Outcome::Injected)
    );
    assert_eq!(patched, expected);
    // And it is an injection: the command is wrapped, the token comes from the Secret.
    assert_eq!(
        patched["spec"]["containers"][0]["command"],
        json!([
            "/.lks/lks-agent",
            "supervise",
            "--root",
            "/usr/src/app",
            "--listen",
            "127.0.0.1:7690",
            "--workdir",
            ".",
            "--",
            "node",
            "server.js",
            "--port",
            "3000"
        ])
    );
    assert_eq!(
        patched["metadata"]["annotations"]["lks.dev/injected"],
        AGENT_IMAGE
    );
    // (kubernetes-validate wants a name; the API server generates it from generateName.)
    let mut named = patched.clone();
    named["metadata"]["name"] = json!("web-7d9c6b5f4-x2vq8");
    if let Err(e) = kubernetes_validate(&serde_yaml::to_string(&named).unwrap(), K8S_VERSION) {
        panic!("the patched pod is not a valid Pod:\n{e}");
    }
    webhook.wait_log("dev/web-7d9c6b5f4-*: injected");

    // The patched pod comes back (e.g. a reinvocation): nothing more to do.
    let again = webhook.review(&patched);
    assert!(again.get("patch").is_none(), "{again}");
    assert!(again.get("patchType").is_none(), "{again}");
    assert!(again.get("warnings").is_none(), "{again}");
    webhook.wait_log("dev/web-7d9c6b5f4-*: already injected");
}

#[test]
fn pods_without_the_annotation_get_no_patch() {
    let mut webhook = Webhook::start();
    for annotations in [json!({}), json!({"lks.dev/agent": "false"})] {
        let p = pod(
            annotations,
            json!({"name": "web", "image": "localhost:5001/web:latest", "command": ["web"]}),
        );
        let response = webhook.review(&p);
        assert_eq!(
            response.as_object().unwrap().len(),
            2,
            "uid and allowed only: {response}"
        );
    }
    webhook.wait_log("dev/web-7d9c6b5f4-*: not annotated");
}

#[test]
fn pod_without_command_is_allowed_with_a_warning_and_no_patch() {
    let mut webhook = Webhook::start();
    let p = pod(
        json!({"lks.dev/agent": "true"}),
        json!({"name": "api", "image": "localhost:5001/api:latest", "args": ["--port", "80"]}),
    );
    let response = webhook.review(&p);
    assert!(response.get("patch").is_none(), "{response}");
    let warnings = response["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1);
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.contains("not injected")
            && warning.contains("\"api\"")
            && warning.contains("localhost:5001/api:latest")
            && warning.contains("set `command`"),
        "{warning}"
    );
    webhook.wait_log("dev/web-7d9c6b5f4-*: not injected");
}

#[test]
fn garbage_gets_400_and_the_server_keeps_serving() {
    let mut webhook = Webhook::start();
    let cases: [(&[u8], &str); 4] = [
        (b"this is not json", "not JSON"),
        (b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}", "AdmissionReview"),
        (
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"object\":{}}}",
            "request.uid",
        ),
        (
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"1\",\"operation\":\"CREATE\"}}",
            "request.object",
        ),
    ];
    for (body, expected) in cases {
        let resp = webhook.request("POST", "/mutate", body);
        assert_eq!(resp.status, 400, "{}", resp.text());
        assert!(
            resp.text().contains(expected),
            "{expected}: {}",
            resp.text()
        );
    }
    webhook.wait_log("bad AdmissionReview");
    assert_eq!(webhook.request("GET", "/nope", b"").status, 404);
    assert_eq!(webhook.request("GET", "/mutate", b"").status, 405);

    // Junk below HTTP: random bytes, and a connection dropped mid-handshake.
    for junk in [
        &b"\x16\x03\x01\x00\x05hello"[..],
        &rand::random::<[u8; 64]>()[..],
        b"",
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", webhook.port)).unwrap();
        let _ = tcp.write_all(junk);
    }
    // Junk HTTP inside TLS.
    let tcp = TcpStream::connect(("127.0.0.1", webhook.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(
        webhook.client.clone(),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"\x00\x01 NOT HTTP\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    webhook.assert_serving();
    let response = webhook.review(&annotated_pod());
    assert_eq!(response["patchType"], "JSONPatch");
}

#[test]
fn only_tls_with_the_right_certificate() {
    let mut webhook = Webhook::start();
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut tcp = TcpStream::connect(("127.0.0.1", webhook.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    webhook.wait_log("TLS handshake failed");

    // The certificate is valid for the IP address too.
    let resp = webhook
        .request_as(webhook.client.clone(), "127.0.0.1", "GET", "/healthz", b"")
        .unwrap();
    assert_eq!(resp.status, 200);
    // A client trusting another CA refuses the server: the verification is real.
    let other = client_config(&certs().ca_pem);
    let e = webhook
        .request_as(other, "localhost", "GET", "/healthz", b"")
        .expect_err("a certificate from an unknown CA must be refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // And a name the certificate does not carry.
    let e = webhook
        .request_as(
            webhook.client.clone(),
            "webhook.example",
            "GET",
            "/healthz",
            b"",
        )
        .expect_err("a certificate for another name must be refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    webhook.assert_serving();
}

#[test]
fn webhook_refuses_to_start_without_a_usable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = Command::new(bin("lks-agent"))
        .arg("webhook")
        .arg("--tls-cert")
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .args(["--listen", "127.0.0.1:0", "--agent-image", AGENT_IMAGE])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("junk.pem"), "{stderr}");
}

#[test]
fn install_copies_an_executable_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("emptydir/.lks/lks-agent");
    for round in 0..2 {
        // The second round replaces the first copy.
        let out = Command::new(bin("lks-agent"))
            .arg("install")
            .arg(&dest)
            .output()
            .unwrap();
        assert_success(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "round {round}: {stdout}");
        assert!(
            stdout.contains("installed") && stdout.contains(&dest.display().to_string()),
            "{stdout}"
        );
    }
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert!(
        std::fs::read(&dest).unwrap() == std::fs::read(bin("lks-agent")).unwrap(),
        "the copy differs from the binary"
    );
    let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["lks-agent"], "no temporary file left beside it");
    let out = Command::new(&dest).arg("--version").output().unwrap();
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lks-agent {}", env!("CARGO_PKG_VERSION"))
    );

    // DEST cannot be a directory.
    let out = Command::new(bin("lks-agent"))
        .arg("install")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
}
