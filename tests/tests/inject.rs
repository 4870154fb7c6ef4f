//! Injecting the agent into realistic workloads through `lks_k8s::inject`: the
//! injected objects are compared with reviewed snapshots
//! (`tests/snapshots/inject/*.yaml`; `LKS_UPDATE_SNAPSHOTS=1` writes them),
//! validated against the Kubernetes API schemas with `kubernetes-validate
//! --strict`, injecting twice equals injecting once, and what does not ask for
//! the agent is left byte for byte as it was.

use lks_e2e::{K8S_VERSION, check_snapshot, kubernetes_validate, snapshot_file};
use lks_k8s::inject::{self, ImageConfig, InjectError, InjectOptions, Outcome};
use serde_json::Value;
use std::cell::RefCell;

const AGENT_IMAGE: &str = "localhost:5001/lks-agent:0.1.0";

/// A Go service with `command` + `args` and a sidecar; the agent wraps the
/// container named by `lks.dev/container`, with its root at `/srv/bank`.
const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bank
  namespace: shop
  labels: {app.kubernetes.io/name: bank}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: bank}
  template:
    metadata:
      labels: {app.kubernetes.io/name: bank}
      annotations:
        lks.dev/agent: "true"
        lks.dev/container: bank
        lks.dev/root: /srv/bank
        prometheus.io/scrape: "true"
    spec:
      serviceAccountName: bank
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        seccompProfile: {type: RuntimeDefault}
      initContainers:
        - name: migrate
          image: localhost:5001/bank:latest
          command: [/srv/bank/bin/migrate, up]
          envFrom:
            - secretRef: {name: bank-db}
      containers:
        - name: envoy
          image: localhost:5001/envoy:v1.31
          args: [-c, /etc/envoy/envoy.yaml]
          ports:
            - {name: http, containerPort: 8000}
        - name: bank
          image: localhost:5001/bank:latest
          workingDir: /srv/bank
          command: [/srv/bank/bin/bank]
          args: [--port, "8080", --db, $(DATABASE_URL)]
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef: {name: bank-db, key: url}
          ports:
            - {name: api, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /healthz, port: api}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
          volumeMounts:
            - {name: config, mountPath: /etc/bank}
      volumes:
        - name: config
          configMap: {name: bank}
"#;

/// A Python service relying on its image's ENTRYPOINT and CMD (no `command`).
const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: prices
  namespace: shop
spec:
  serviceName: prices
  replicas: 1
  selector:
    matchLabels: {app: prices}
  template:
    metadata:
      labels: {app: prices}
      annotations:
        lks.dev/agent: "true"
    spec:
      containers:
        - name: prices
          image: localhost:5001/prices:latest
          env:
            - {name: PORT, value: "8000"}
          ports:
            - {containerPort: 8000}
          volumeMounts:
            - {name: data, mountPath: /var/lib/prices}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests: {storage: 1Gi}
"#;

/// What the resolver answers for the StatefulSet's image.
fn prices_image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["python".into(), "-m".into(), "prices".into()],
        cmd: vec!["serve".into(), "--workers".into(), "$(NPROC)".into()],
    }
}

const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly-report
  namespace: shop
spec:
  schedule: "0 3 * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 2
      template:
        metadata:
          annotations:
            lks.dev/agent: "true"
        spec:
          restartPolicy: OnFailure
          containers:
            - name: report
              image: localhost:5001/report:latest
              command: [node, dist/report.js, --since, 24h]
"#;

/// A bare Pod (Node.js), its root in the image's usual place.
const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: frontend
  namespace: shop
  labels: {app: frontend}
  annotations:
    lks.dev/agent: "true"
    lks.dev/root: /usr/src/app
spec:
  containers:
    - name: frontend
      image: localhost:5001/frontend:latest
      command: [node, server.js]
      ports:
        - {containerPort: 3000}
"#;

/// A Deployment that does not ask for the agent (its annotation says "false").
const PLAIN_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: postgres
  namespace: shop
spec:
  selector:
    matchLabels: {app: postgres}
  template:
    metadata:
      labels: {app: postgres}
      annotations:
        lks.dev/agent: "false"
    spec:
      containers:
        - name: postgres
          image: localhost:5001/postgres:16
          args: [-c, max_connections=50]
"#;

/// Not a workload, though annotated.
const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: bank
  namespace: shop
  annotations:
    lks.dev/agent: "true"
spec:
  selector: {app.kubernetes.io/name: bank}
  ports:
    - {name: api, port: 8080, targetPort: api}
"#;

/// The injected workloads: (snapshot name, manifest).
const INJECTED: [(&str, &str); 4] = [
    ("deployment", DEPLOYMENT),
    ("statefulset", STATEFULSET),
    ("cronjob", CRONJOB),
    ("pod", POD),
];

fn parse(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("test manifest is YAML")
}

fn opts() -> InjectOptions {
    InjectOptions {
        agent_image: AGENT_IMAGE.into(),
    }
}

/// The resolver: knows the `prices` image only, and records what it was asked.
struct Resolver {
    asked: RefCell<Vec<String>>,
}

impl Resolver {
    fn new() -> Resolver {
        Resolver {
            asked: RefCell::new(Vec::new()),
        }
    }

    fn resolve(&self, image: &str) -> Option<ImageConfig> {
        self.asked.borrow_mut().push(image.to_string());
        (image == "localhost:5001/prices:latest").then(prices_image)
    }
}

/// Injects into a copy of `manifest`, expecting `Injected`.
fn injected(manifest: &str) -> Value {
    let mut object = parse(manifest);
    let resolver = Resolver::new();
    let outcome = inject::inject(&mut object, &opts(), &|i| resolver.resolve(i))
        .unwrap_or_else(|e| panic!("inject failed: {e}"));
    assert_eq!(outcome, Outcome::Injected);
    object
}

/// `v` with every object's keys in sorted order, whatever serde_json's map is.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The snapshot of the injected workload `name`, under `tests/snapshots/`.
fn snapshot_name(name: &str) -> String {
    format!("inject/{name}.yaml")
}

const SNAPSHOT_HEADER: &str = "# Snapshot of tests/tests/inject.rs: review changes, then LKS_UPDATE_SNAPSHOTS=1 cargo test -p lks-e2e --test inject\n";

fn to_yaml(v: &Value) -> String {
    format!(
        "{SNAPSHOT_HEADER}{}",
        serde_yaml::to_string(&canonical(v)).unwrap()
    )
}

#[test]
fn injected_workloads_match_their_snapshots() {
    let failures: Vec<String> = INJECTED
        .iter()
        .filter_map(|(name, manifest)| {
            check_snapshot(&snapshot_name(name), &to_yaml(&injected(manifest))).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn snapshots_read_back_as_the_injected_objects() {
    // The YAML rendering loses nothing: the snapshot is the object.
    for (name, manifest) in INJECTED {
        let Ok(text) = std::fs::read_to_string(snapshot_file(&snapshot_name(name))) else {
            continue; // reported by injected_workloads_match_their_snapshots
        };
        let from_snapshot: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(from_snapshot, injected(manifest), "{name}");
    }
}

#[test]
fn injection_rules_on_realistic_workloads() {
    // Deployment: the named container (not the first) wraps command + args; the
    // sidecar and the existing init container stay as they were.
    let d = injected(DEPLOYMENT);
    let spec = &d["spec"]["template"]["spec"];
    let bank = &spec["containers"][1];
    assert_eq!(
        bank["command"],
        serde_json::json!([
            "/.lks/lks-agent",
            "supervise",
            "--root",
            "/srv/bank",
            "--listen",
            "127.0.0.1:7690",
            "--workdir",
            ".",
            "--",
            "/srv/bank/bin/bank",
            "--port",
            "8080",
            "--db",
            "$(DATABASE_URL)"
        ])
    );
    assert!(bank.get("args").is_none());
    assert_eq!(
        spec["containers"][0],
        parse(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]
    );
    assert_eq!(spec["initContainers"][0]["name"], "migrate");
    assert_eq!(spec["initContainers"][1]["name"], "lks-agent-install");
    assert_eq!(spec["initContainers"][1]["image"], AGENT_IMAGE);
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["lks.dev/injected"],
        AGENT_IMAGE
    );
    // Only the pod template changed.
    let mut outside = d.clone();
    outside["spec"]["template"] = Value::Null;
    let mut original = parse(DEPLOYMENT);
    original["spec"]["template"] = Value::Null;
    assert_eq!(outside, original);

    // StatefulSet: no command, so the resolver was asked for exactly its image;
    // ENTRYPOINT + CMD, the CMD's `$(NPROC)` escaped from Kubernetes' expansion.
    let mut s = parse(STATEFULSET);
    let resolver = Resolver::new();
    inject::inject(&mut s, &opts(), &|i| resolver.resolve(i)).unwrap();
    assert_eq!(*resolver.asked.borrow(), ["localhost:5001/prices:latest"]);
    let command = &s["spec"]["template"]["spec"]["containers"][0]["command"];
    let argv: Vec<&str> = command
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        argv[9..],
        ["python", "-m", "prices", "serve", "--workers", "$$(NPROC)"]
    );
    assert_eq!(argv[3], "/app", "default root");

    // The same StatefulSet when the image cannot be read: a clear error, object untouched.
    let mut s = parse(STATEFULSET);
    let e = inject::inject(&mut s, &opts(), &|_| None).unwrap_err();
    assert!(matches!(e, InjectError::UnknownCommand { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("StatefulSet shop/prices")
            && msg.contains("\"prices\"")
            && msg.contains("localhost:5001/prices:latest")
            && msg.contains("set `command`"),
        "{msg}"
    );
    assert_eq!(s, parse(STATEFULSET));

    // CronJob: the template two levels down.
    let c = injected(CRONJOB);
    let t = &c["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(t["spec"]["volumes"][0]["name"], "lks-agent");
    assert_eq!(t["spec"]["containers"][0]["command"][9], "node");

    // Pod: its own metadata and spec.
    let p = injected(POD);
    assert_eq!(
        p["metadata"]["annotations"]["lks.dev/injected"],
        AGENT_IMAGE
    );
    assert_eq!(p["spec"]["containers"][0]["command"][3], "/usr/src/app");
}

#[test]
fn injecting_twice_is_injecting_once() {
    for (name, manifest) in INJECTED {
        let once = injected(manifest);
        let mut twice = once.clone();
        let resolver = Resolver::new();
        let outcome = inject::inject(&mut twice, &opts(), &|i| resolver.resolve(i)).unwrap();
        assert_eq!(outcome, Outcome::AlreadyInjected, "{name}");
        assert_eq!(
            serde_json::to_string(&twice).unwrap(),
            serde_json::to_string(&once).unwrap(),
            "{name}"
        );
        assert!(
            resolver.asked.borrow().is_empty(),
            "{name}: no image read the second time"
        );
    }
}

#[test]
fn what_does_not_ask_for_the_agent_is_untouched() {
    for (name, manifest) in [
        ("deployment without the agent", PLAIN_DEPLOYMENT),
        ("service", SERVICE),
    ] {
        let mut object = parse(manifest);
        let before = serde_json::to_vec(&object).unwrap();
        let resolver = Resolver::new();
        let outcome = inject::inject(&mut object, &opts(), &|i| resolver.resolve(i)).unwrap();
        assert_eq!(outcome, Outcome::NotAnnotated, "{name}");
        assert_eq!(
            serde_json::to_vec(&object).unwrap(),
            before,
            "{name}: not byte-equal"
        );
        assert!(resolver.asked.borrow().is_empty(), "{name}");
    }
    assert!(lks_k8s::workload::pod_template_mut(&mut parse(SERVICE)).is_none());
}

#[test]
fn injected_workloads_are_valid_kubernetes_objects() {
    // The manifests themselves are valid, so a failure below is the injection's.
    let originals: Vec<&str> = INJECTED.iter().map(|(_, m)| *m).collect();
    let originals = originals.join("\n---\n");
    if let Err(e) = kubernetes_validate(&originals, K8S_VERSION) {
        panic!("the test manifests are invalid:\n{e}");
    }
    let injected: Vec<String> = INJECTED
        .iter()
        .map(|(_, m)| serde_yaml::to_string(&injected(m)).unwrap())
        .collect();
    if let Err(e) = kubernetes_validate(&injected.join("---\n"), K8S_VERSION) {
        panic!("injected objects rejected by the Kubernetes {K8S_VERSION} schemas:\n{e}");
    }
}

#[test]
fn the_validator_rejects_what_kubernetes_would() {
    // So that the test above can fail: a field in the wrong place, and a wrong type.
    let mut d = injected(DEPLOYMENT);
    d["spec"]["template"]["spec"]["initContainers"][1]["readOnly"] = Value::Bool(true);
    let e = kubernetes_validate(&serde_yaml::to_string(&d).unwrap(), K8S_VERSION)
        .expect_err("an unknown field must be refused (--strict)");
    assert!(e.contains("readOnly"), "{e}");
    let mut d = injected(DEPLOYMENT);
    d["spec"]["template"]["spec"]["containers"][1]["command"] = Value::String("bank".into());
    kubernetes_validate(&serde_yaml::to_string(&d).unwrap(), K8S_VERSION)
        .expect_err("a command that is not a list must be refused");
}
