//! What `lks cluster` makes, checked without a cluster.

use super::*;

#[test]
fn kind_config_pins_the_version_and_wires_ingress_and_the_registry() {
    let text = kind_config("dev", "v1.33.2", Some(5001));
    let v: Value = crate::yaml::from_str(&text).unwrap();
    assert_eq!(v["kind"], "Cluster");
    assert_eq!(v["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(v["name"], "dev");
    let node = &v["nodes"][0];
    assert_eq!(node["role"], "control-plane");
    assert_eq!(node["image"], "kindest/node:v1.33.2");
    assert_eq!(node["labels"]["ingress-ready"], "true");
    let ports: Vec<(i64, i64, &str)> = node["extraPortMappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_i64().unwrap(),
                p["hostPort"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(80, 80, "TCP"), (443, 443, "TCP")]);
    let containerd = v["containerdConfigPatches"][0].as_str().unwrap();
    assert!(
        containerd.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]")
            && containerd.contains("config_path = \"/etc/containerd/certs.d\""),
        "{containerd}"
    );
    assert!(text.contains("localhost:5001"), "{text}");
    assert!(!kind_config("dev", "1.33.2", None).contains("localhost:"));
}

#[test]
fn hosts_toml_maps_localhost_port_to_the_registry_container() {
    let text = registry_hosts_toml("lks-registry-5001", 5001);
    let hosts: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(hosts, ["[host.\"http://lks-registry-5001:5000\"]"]);
    assert_eq!(
        hosts_toml_dir(5001),
        "/etc/containerd/certs.d/localhost:5001"
    );
}

#[test]
fn configmap_follows_kep_1755() {
    let cm = registry_configmap(5001);
    assert_eq!(cm["metadata"]["namespace"], "kube-public");
    assert_eq!(cm["metadata"]["name"], "local-registry-hosting");
    let hosting: Value =
        crate::yaml::from_str(cm["data"]["localRegistryHosting.v1"].as_str().unwrap()).unwrap();
    assert_eq!(hosting["host"], "localhost:5001");
    assert_eq!(hosting["help"], LOCAL_REGISTRY_HELP);
}

#[test]
fn manifests_split_into_objects() {
    let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b, namespace: a}\n";
    let objects = crate::kube::render::parse_manifest(text).unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[1]["kind"], "ServiceAccount");
    assert!(crate::kube::render::parse_manifest("just: a map\n").is_err());
}

#[test]
fn rollout_needs_every_replica_available_and_up_to_date() {
    let d = |generation: i64, observed: i64, available: i32, updated: i32| -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "x", "generation": generation },
            "spec": { "replicas": 1, "selector": {}, "template": {} },
            "status": {
                "observedGeneration": observed,
                "availableReplicas": available,
                "updatedReplicas": updated,
            },
        }))
        .unwrap()
    };
    assert!(rolled_out(&d(2, 2, 1, 1)).is_ok());
    assert!(rolled_out(&d(2, 1, 1, 1)).is_err());
    assert!(rolled_out(&d(2, 2, 0, 1)).is_err());
    assert!(rolled_out(&d(2, 2, 1, 0)).is_err());
}

/// A mock API server: answers discovery for the kinds asked, and records
/// every server-side apply.
mod mock {
    use http_body_util::BodyExt;
    use hyper::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    pub fn client() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), handle)
    }

    fn resources(path: &str) -> Value {
        let r = |name: &str, kind: &str, namespaced: bool| {
            json!({ "name": name, "singularName": "", "kind": kind, "namespaced": namespaced,
                    "verbs": ["create", "get", "list", "patch"] })
        };
        let (gv, list) = match path {
            "/api/v1" => (
                "v1",
                vec![
                    r("namespaces", "Namespace", false),
                    r("configmaps", "ConfigMap", true),
                    r("secrets", "Secret", true),
                    r("services", "Service", true),
                ],
            ),
            "/apis/apps/v1" => ("apps/v1", vec![r("deployments", "Deployment", true)]),
            "/apis/admissionregistration.k8s.io/v1" => (
                "admissionregistration.k8s.io/v1",
                vec![r(
                    "mutatingwebhookconfigurations",
                    "MutatingWebhookConfiguration",
                    false,
                )],
            ),
            other => panic!("unexpected discovery of {other}"),
        };
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list })
    }

    /// One request seen by the mock.
    #[derive(Debug)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub query: String,
        pub content_type: String,
        pub body: Value,
    }

    /// Serves until the client is dropped; returns the PATCH requests.
    pub async fn serve(mut handle: Handle) -> Vec<Seen> {
        let mut seen = vec![];
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let path = parts.uri.path().to_string();
            if parts.method == hyper::Method::GET {
                let answer = serde_json::to_vec(&resources(&path)).unwrap();
                send.send_response(Response::new(Body::from(answer)));
                continue;
            }
            let body: Value = serde_json::from_slice(&body).unwrap();
            send.send_response(Response::new(Body::from(
                serde_json::to_vec(&body).unwrap(),
            )));
            seen.push(Seen {
                method: parts.method.to_string(),
                path,
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                body,
            });
        }
        seen
    }
}

#[tokio::test]
async fn apply_uses_server_side_apply_on_the_right_paths() {
    let (client, handle) = mock::client();
    let server = tokio::spawn(mock::serve(handle));
    let mut objects = vec![registry_configmap(5000)];
    objects.extend(webhook_install::webhook_objects("img", "CA", "CERT", "KEY"));
    apply(&client, &objects).await.unwrap();
    drop(client);
    let seen = server.await.unwrap();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/kube-public/configmaps/local-registry-hosting",
            "/api/v1/namespaces/lks-system",
            "/api/v1/namespaces/lks-system/secrets/lks-webhook-tls",
            "/apis/apps/v1/namespaces/lks-system/deployments/lks-webhook",
            "/api/v1/namespaces/lks-system/services/lks-webhook",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lks-agent-injector",
        ]
    );
    for (s, object) in seen.iter().zip(&objects) {
        assert_eq!(s.method, "PATCH");
        assert_eq!(s.content_type, "application/apply-patch+yaml");
        assert!(s.query.contains("fieldManager=lks"), "{}", s.query);
        assert!(s.query.contains("force=true"), "{}", s.query);
        assert_eq!(&s.body, object, "the object is sent as it is");
    }
}
