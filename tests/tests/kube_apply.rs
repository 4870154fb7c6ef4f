//! What lks applies to a real cluster and where: a manifest edit applied
//! again as a rolling update (no rebuild, no outage), `lks down` deleting
//! exactly what a killed run applied (in the namespace asked, or all of the
//! workspace's), the guard against clusters that are not local with
//! `--context` and `kube:` in `lks.yaml`, and the registry a cluster
//! announces (KEP-1755). Real cluster (`LKS_TEST_KUBECONFIG`).

use lks_e2e::kube::{Cluster, cluster, examples_on_free_ports, set_greeting};
use lks_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

const START: Duration = Duration::from_secs(300);

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_manifest_edit_is_applied_as_a_rolling_update_without_a_rebuild_or_an_outage() {
    let Some(k) = cluster("a_manifest_edit_is_applied_as_a_rolling_update") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = examples_on_free_ports(ws);
    let ns = k.namespace();
    let n = &ns.name;
    let mut up = k.up(ws, &["--namespace", n, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    let uid = k.jsonpath(n, "deploy/web", "{.metadata.uid}");
    let image = k.jsonpath(n, "deploy/web", "{.spec.template.spec.containers[0].image}");
    let generation: u64 = k
        .jsonpath(n, "deploy/web", "{.metadata.generation}")
        .parse()
        .unwrap();

    // Poll through the forwarded port during the rollout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            let mut longest = Duration::ZERO;
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let answer = http11_get(web, "/");
                if answer
                    .as_ref()
                    .is_some_and(|b| b.starts_with("hello from web"))
                {
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                } else {
                    eprintln!(
                        "{:?} after {:?}: {answer:?}",
                        started.elapsed(),
                        t.elapsed()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            longest.max(last_ok.elapsed())
        })
    };
    let m = up.mark();
    let manifest = ws.join("web/k8s/web.yaml");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        yaml.replace("periodSeconds: 2", "periodSeconds: 1"),
    )
    .unwrap();
    up.wait_since(m, &["web", "applied Deployment"], Duration::from_secs(60));
    k.eventually(
        "the new pod template rolled out",
        Duration::from_secs(120),
        || {
            k.jsonpath(n, "deploy/web", "{.status.observedGeneration}")
                == (generation + 1).to_string()
                && k.jsonpath(
                    n,
                    "deploy/web",
                    "{.status.updatedReplicas}/{.status.readyReplicas}/{.status.replicas}",
                ) == "1/1/1"
                && k.pods(n, "app=web").len() == 1
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let outage = poller.join().unwrap();
    eprintln!("longest time without an answer during the rollout: {outage:?}");

    assert_eq!(
        k.jsonpath(n, "deploy/web", "{.metadata.uid}"),
        uid,
        "not deleted and recreated"
    );
    assert_eq!(
        k.jsonpath(n, "deploy/web", "{.spec.template.spec.containers[0].image}"),
        image,
        "the same image"
    );
    let after: Vec<String> = up.drain()[m..].to_vec();
    assert!(
        !after.iter().any(|l| l.contains("building ")),
        "the image was rebuilt for a manifest edit:\n{}",
        after.join("\n")
    );
    assert!(
        outage < Duration::from_secs(1),
        "web did not answer for {outage:?} during the rolling update"
    );
    // And edits still reach the new pod.
    set_greeting(ws, "hello after the manifest edit");
    k.eventually("the edit arrives", Duration::from_secs(60), || {
        http11_get(web, "/").is_some_and(|b| b.starts_with("hello after the manifest edit"))
    });
    up.terminate();
}

/// Starts `lks up frontend` in `ns`, waits until web is ready, and kills
/// lks with SIGKILL: everything it applied stays.
fn killed_run(k: &Cluster, ws: &Path, ns: &str) {
    let mut up = k.up(ws, &["--namespace", ns, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    up.child.kill().unwrap();
    up.child.wait().unwrap();
}

#[test]
fn lks_down_deletes_exactly_what_a_killed_run_applied_in_the_namespace_asked_or_everywhere() {
    let Some(k) = cluster("lks_down_deletes_exactly_what_lks_applied") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    examples_on_free_ports(ws);
    let (a, b) = (k.namespace(), k.namespace());
    killed_run(&k, ws, &a.name);
    killed_run(&k, ws, &b.name);
    // Something else carries lks's labels (copied from what lks applied) but
    // was not applied by lks: it stays.
    let labels = k.jsonpath(
        &b.name,
        "deploy/web",
        "{.metadata.labels.lks\\.dev/workspace}",
    );
    assert!(!labels.is_empty());
    k.kubectl_ok(&["create", "configmap", "mine", "-n", &b.name]);
    k.kubectl_ok(&[
        "label",
        "configmap/mine",
        "-n",
        &b.name,
        "lks.dev/managed=true",
        &format!("lks.dev/workspace={labels}"),
    ]);
    let file = ws.join("lks.yaml");
    let file = file.to_str().unwrap();

    let out = k.lks(ws, &["down", "-f", file, "--namespace", &b.name]);
    let said = text_of(&out);
    assert!(out.status.success(), "{said}");
    for deleted in [
        format!("deleted Deployment {}/web", b.name),
        format!("deleted Deployment {}/api", b.name),
        format!("deleted Service {}/web", b.name),
        format!("deleted Secret {}/lks-agent-token", b.name),
    ] {
        assert!(said.contains(&deleted), "{deleted:?} in:\n{said}");
    }
    for kept in ["Endpoints", "EndpointSlice", "ReplicaSet", "Pod ", "mine"] {
        assert!(
            !said.contains(kept),
            "deleted {kept}, which lks did not apply:\n{said}"
        );
    }
    k.eventually(
        "b is empty of lks's objects",
        Duration::from_secs(60),
        || k.names(&b.name, "deploy,svc,secret").is_empty(),
    );
    assert_eq!(k.names(&b.name, "configmap/mine"), ["configmap/mine"]);
    assert_eq!(
        k.names(&a.name, "deploy").len(),
        2,
        "--namespace {} deleted in {}",
        b.name,
        a.name
    );

    // A plain `lks down` on this (local) context: all of the workspace's.
    let out = k.lks(ws, &["down", "-f", file]);
    let said = text_of(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("deleted Deployment {}/web", a.name)),
        "{said}"
    );
    k.eventually(
        "a is empty of lks's objects",
        Duration::from_secs(60),
        || k.names(&a.name, "deploy,svc,secret").is_empty(),
    );
    // Nothing left: says so.
    let out = k.lks(ws, &["down", "-f", file]);
    assert!(
        text_of(&out).contains("nothing lks applied is left"),
        "{}",
        text_of(&out)
    );
}

/// A kubeconfig whose current context `prod` names a server that is not on
/// this machine (never contacted), beside the test cluster's `lks-test`.
fn kubeconfig_with_prod(k: &Cluster, path: &Path) {
    std::fs::copy(&k.kubeconfig, path).unwrap();
    let config = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("config")
            .arg("--kubeconfig")
            .arg(path)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text_of(&out));
    };
    config(&["set-cluster", "prod", "--server=https://192.0.2.10:6443"]);
    config(&["set-credentials", "prod-user", "--token=not-a-real-one"]);
    config(&["set-context", "prod", "--cluster=prod", "--user=prod-user"]);
    config(&["use-context", "prod"]);
}

#[test]
fn a_context_that_is_not_local_is_refused_and_context_or_lks_yaml_pick_another() {
    let Some(k) = cluster("the_guard") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = examples_on_free_ports(ws);
    let kubeconfig = ws.join("kubeconfig-with-prod");
    kubeconfig_with_prod(&k, &kubeconfig);
    let file = ws.join("lks.yaml");
    let file = file.to_str().unwrap();
    let run = |args: &[&str]| {
        let t = Instant::now();
        let out = std::process::Command::new(bin("lks"))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (out, t.elapsed())
    };
    for args in [
        &["up", "-f", file, "--runtime", "kube", "frontend"][..],
        &["down", "-f", file, "--kube"][..],
        &["webhook", "install", "-f", file][..],
    ] {
        let (out, took) = run(args);
        let said = text_of(&out);
        assert!(
            !out.status.success(),
            "lks {args:?} went ahead on prod: {said}"
        );
        for needle in [
            "\"prod\"",
            "https://192.0.2.10:6443",
            "does not look like a local",
            "allow_contexts: [prod]",
        ] {
            assert!(
                said.contains(needle),
                "lks {args:?}: no {needle:?} in {said}"
            );
        }
        // Refused before any connection to prod.
        assert!(took < Duration::from_secs(10), "lks {args:?} took {took:?}");
    }
    // A plain `lks down` leaves prod alone (and says nothing went there).
    let (out, _) = run(&["down", "-f", file]);
    assert!(!text_of(&out).contains("deleted"), "{}", text_of(&out));

    // --context picks the test cluster whatever the current context.
    let ns = k.namespace();
    let mut up = k.up_with(
        ws,
        &["--context", "lks-test", "--namespace", &ns.name, "frontend"],
        &kubeconfig,
    );
    up.wait(&["web", "[ready]"], START);
    assert!(http11_get(web, "/").is_some_and(|b| b.starts_with("hello from web")));
    up.terminate();

    // So does `kube:` in lks.yaml, and a namespace there implies the kube runtime.
    let ns2 = k.namespace();
    write(
        ws,
        "lks.yaml",
        &format!(
            "services: [\"web/lks.service.yaml\", \"api/lks.service.yaml\"]\naliases: {{ frontend: [web] }}\n\
             kube: {{ context: lks-test, namespace: {} }}\n",
            ns2.name
        ),
    );
    let mut up = k.up_with(ws, &["frontend"], &kubeconfig);
    up.wait(&["web", "[ready]"], START);
    assert_eq!(k.names(&ns2.name, "deploy/web"), ["deployment.apps/web"]);
    up.terminate();
}

#[test]
fn the_registry_the_cluster_announces_kep_1755_is_where_lks_pushes_and_how_pods_pull() {
    let Some(k) = cluster("kep_1755") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    examples_on_free_ports(ws);
    struct Remove(Cluster);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = self.0.kubectl(&[
                "delete",
                "configmap",
                "-n",
                "kube-public",
                "local-registry-hosting",
                "--ignore-not-found",
            ]);
        }
    }
    let _remove = Remove(k.clone());
    // The ConfigMap `lks cluster create` applies (to kind) applies to any cluster.
    let dry = k.lks(
        ws,
        &[
            "cluster",
            "create",
            "--dry-run",
            "-f",
            ws.join("lks.yaml").to_str().unwrap(),
        ],
    );
    assert!(dry.status.success(), "{}", text_of(&dry));
    let yaml = String::from_utf8_lossy(&dry.stdout);
    let configmap = yaml
        .split("\n---\n")
        .find(|d| d.contains("kind: ConfigMap") && d.contains("local-registry-hosting"))
        .expect("the KEP-1755 ConfigMap in the dry run");
    k.apply("kube-public", configmap);
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    let said = up.stderr_lines();
    assert!(
        said.iter().any(|l| l
            .contains("registry from kube-public/local-registry-hosting: push to localhost:5000")),
        "{said:?}"
    );
    up.terminate();
    drop(up);

    // A cluster that says its runtime pulls under another name: pods use it.
    k.apply(
        "kube-public",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local-registry-hosting, namespace: kube-public}\n\
         data:\n  localRegistryHosting.v1: |\n    host: \"127.0.0.1:5000\"\n    hostFromContainerRuntime: \"127.0.0.1:5000\"\n",
    );
    let ns2 = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns2.name, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    let image = k.jsonpath(
        &ns2.name,
        "deploy/web",
        "{.spec.template.spec.containers[0].image}",
    );
    let agent = k.jsonpath(
        &ns2.name,
        "deploy/web",
        "{.spec.template.spec.initContainers[0].image}",
    );
    assert!(image.starts_with("127.0.0.1:5000/web:dev-"), "{image}");
    assert!(
        agent.starts_with("127.0.0.1:5000/lks-agent:dev-"),
        "{agent}"
    );
    up.terminate();
}

#[test]
fn lks_render_shows_what_the_kube_runtime_applies() {
    let Some(k) = cluster("lks_render_shows_what_the_kube_runtime_applies") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    examples_on_free_ports(ws);
    let ns = k.namespace();
    let mut up = k.up(ws, &["--namespace", &ns.name, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    let file = ws.join("lks.yaml");
    let out = k.lks(
        ws,
        &[
            "render",
            "-f",
            file.to_str().unwrap(),
            "web",
            "api",
            "--local",
            "web",
            "--namespace",
            &ns.name,
        ],
    );
    assert!(out.status.success(), "{}", text_of(&out));
    let rendered: Vec<serde_json::Value> =
        serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    for name in ["web", "api"] {
        let r = rendered
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name} rendered"));
        let applied: serde_json::Value = serde_json::from_str(
            &k.kubectl_ok(&["get", "deploy", name, "-n", &ns.name, "-o", "json"]),
        )
        .unwrap();
        let (r, a) = (&r["spec"]["template"], &applied["spec"]["template"]);
        for path in [
            "/metadata/annotations",
            "/metadata/labels",
            "/spec/containers/0/image",
            "/spec/containers/0/command",
            "/spec/containers/0/env",
            "/spec/initContainers/0/image",
            "/spec/initContainers/0/command",
            "/spec/volumes/0/name",
        ] {
            assert_eq!(
                r.pointer(path),
                a.pointer(path),
                "{name}{path}: lks render and what lks up applied differ"
            );
        }
        assert_eq!(r["metadata"]["namespace"], serde_json::Value::Null);
        assert_eq!(
            rendered
                .iter()
                .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
                .unwrap()["metadata"]["namespace"],
            ns.name.as_str()
        );
    }
    up.terminate();
}

#[test]
fn an_entrypoint_override_runs_in_the_pod_under_the_agent_instead_of_the_images_cmd() {
    let Some(k) = cluster("an_entrypoint_override_runs_in_the_pod") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path();
    let (web, _) = examples_on_free_ports(ws);
    // The image's CMD now runs nothing that works; the service's
    // `entrypoint:` (a shell script: the image has /bin/sh) is what runs.
    let dockerfile = ws.join("web/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(
        &dockerfile,
        text.replace(
            "CMD [\"node\", \"server.js\"]",
            "CMD [\"node\", \"/not-here.js\"]",
        ),
    )
    .unwrap();
    let service = ws.join("web/lks.service.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    std::fs::write(
        &service,
        text.replace(
            "command: node server.js\n",
            "command: node server.js\nentrypoint: {sh: 'exec node server.js'}\n",
        ),
    )
    .unwrap();
    // The manifest's own `command` would win over the image's CMD: the
    // override must replace it too.
    let ns = k.namespace();
    let n = &ns.name;
    let mut up = k.up(ws, &["--namespace", n, "frontend"]);
    up.wait(&["web", "[ready]"], START);
    assert!(
        wait_until(Duration::from_secs(30), || http11_get(web, "/")
            .is_some_and(|b| b.starts_with("hello from web"))),
        "web does not answer\n{}",
        up.drain().join("\n")
    );
    let command = k.jsonpath(
        n,
        "deploy/web",
        "{.spec.template.spec.containers[0].command}",
    );
    assert!(
        command.contains("supervise") && command.contains("exec node server.js"),
        "{command}"
    );
    up.terminate();
}
